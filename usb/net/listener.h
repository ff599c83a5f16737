// Listener: accepts connections on a TCP address or a UNIX-domain socket path (Endpoint) and
// hands each one on as a Stream (TcpStream / UnixStream) — after its PeerCheck, which sees who
// connected (address; for UNIX sockets the SO_PEERCRED uid, gid and pid) before the first byte
// is read. This is where peer authentication hangs: a refused peer never reaches a protocol.
//
// A UNIX socket's file is created with Options::unix_mode; a stale file left by a dead process
// is replaced, a live one (another daemon answers on it) is an error; stop() removes the file.
// On a TLS endpoint every connection is a TLS stream once its handshake succeeds.
// A failing accept (EMFILE / ENFILE / ENOBUFS: the process or the system is out of descriptors)
// is retried after a pause that doubles from 10 ms to 1 s, and logged once per 100 failures,
// instead of spinning on the loop every VM shares while the pending connection stays queued.
// Owned by whoever serves the protocol (the USB/IP server, the control API); lives on the loop
// of the io_context it was made on.
#pragma once

#include <sys/types.h>

#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "usb/core/error.h"
#include "usb/core/loop_checker.h"
#include "usb/net/endpoint.h"
#include "usb/net/socket_stream.h"
#include "usb/net/tls.h"

namespace usb::net {

class Listener {
 public:
  // kOk admits the peer; an error refuses it (its message is logged and given to `refuse`).
  using PeerCheck = std::function<Result<void>(const PeerInfo&)>;
  using AcceptHandler = std::function<void(std::unique_ptr<Stream>)>;
  // A refused peer's stream, for a protocol that can say why before hanging up (HTTP 403).
  using RefuseHandler = std::function<void(std::unique_ptr<Stream>, const Error&)>;

  struct Options {
    TcpOptions tcp;
    PeerCheck check;       // empty: every peer is admitted
    RefuseHandler refuse;  // empty: a refused peer is closed
    std::string label = "listener";  // log prefix ("usbip", "control", "vm vm1")
    mode_t unix_mode = 0660;         // the UNIX socket file's permissions
    // Its protocol authenticates peers (a PeerCheck of identities). Without it or `tls`,
    // listening on a TCP address other than loopback is logged as a warning.
    bool authenticated = false;
    // For a TLS endpoint ("tls:…", which needs it): every connection runs a TLS handshake first
    // (tls.h); the PeerCheck then sees the TLS identity. A failed handshake is logged (the first ten, then
    // one in a hundred) and counted, and the peer dropped.
    std::shared_ptr<const TlsContext> tls;
    // Connections open at once, handshakes included: over every peer, and per peer address
    // (UNIX-socket peers share one). Beyond either, a new connection is closed at once — counted
    // in refused(), logged the first ten times and then once per hundred — so one host cannot
    // take every descriptor of a daemon that other VMs share. 0: no cap.
    size_t max_connections = 1024;
    size_t max_per_address = 128;
  };

  Listener(boost::asio::io_context& io, Options options);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Binds and listens. TCP port 0 picks a free port (local_port()).
  Result<void> listen(const Endpoint& where);
  // Starts accepting; every admitted connection goes to `on_accept` on the loop.
  void start(AcceptHandler on_accept);
  // Stops accepting (connections already handed on are their owners'); removes the UNIX file.
  void stop();

  uint16_t local_port() const;  // TCP; 0 for a UNIX socket or before listen()
  // What it listens on, port 0 resolved ("127.0.0.1:41234", "unix:/run/vusbd.sock").
  Endpoint local_endpoint() const;
  bool listening() const { return acceptor_.is_open(); }
  uint64_t accept_errors() const { return accept_errors_; }
  uint64_t handshake_failures() const { return handshake_failures_; }
  uint64_t refused() const { return refused_; }
  size_t open_connections() const { return counts_->total; }

  // A PeerCheck that admits only UNIX-socket peers running as `uid` or as root (the control
  // API's rule); TCP peers are refused by it.
  static PeerCheck same_user_or_root(uid_t uid);

 private:
  void accept();
  // Open connections by peer address; a Slot holds one place until its connection is gone.
  struct Counts {
    size_t total = 0;
    std::map<std::string, size_t> per_address;
  };
  class Slot;
  void handshake(std::unique_ptr<SocketStream> stream, std::unique_ptr<Slot> slot);
  void on_accept(std::unique_ptr<Stream> stream, std::unique_ptr<Slot> slot);
  void note_refusal(const std::string& peer, const std::string& why);
  static std::string address_key(const PeerInfo& peer);
  static bool worth_logging(uint64_t count);

  boost::asio::io_context& io_;
  Options options_;
  boost::asio::basic_socket_acceptor<boost::asio::generic::stream_protocol> acceptor_;
  boost::asio::steady_timer retry_;
  std::chrono::milliseconds backoff_{0};
  uint64_t accept_errors_ = 0;
  uint64_t handshake_failures_ = 0;
  uint64_t refused_ = 0;
  std::shared_ptr<Counts> counts_ = std::make_shared<Counts>();
  Endpoint where_;
  AcceptHandler on_accept_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  usb::LoopChecker loop_;
};

}  // namespace usb::net
