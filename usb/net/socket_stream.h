// The socket streams: a Stream over a connected stream socket. TcpStream sets TCP's options
// (no-delay, keepalive) and names the peer by address; UnixStream reads the peer's credentials
// (SO_PEERCRED) from a UNIX-domain socket or one end of a socketpair. Both hold the socket as
// Asio's generic stream socket, the type a Bluetooth RFCOMM socket will use too.
//
// Owned by the connection that uses it; lives on the loop of the io_context it was made on.
#pragma once

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <utility>

#include "usb/core/error.h"
#include "usb/net/stream.h"

namespace usb::net {

// TCP socket options, set when a TCP stream is made (accepted or connected).
struct TcpOptions {
  bool no_delay = true;
  // Keepalive: a peer that vanished without closing (power loss, cable) is detected after
  // idle + interval * count, and its connection ends. idle 0 disables.
  std::chrono::seconds keepalive_idle{30};
  std::chrono::seconds keepalive_interval{5};
  int keepalive_count = 3;
};

class SocketStream : public Stream {
 public:
  using Socket = boost::asio::generic::stream_protocol::socket;

  SocketStream(Socket socket, PeerInfo peer);
  ~SocketStream() override;

  boost::asio::any_io_executor get_executor() override { return socket_.get_executor(); }
  void async_read_some(boost::asio::mutable_buffer buffer, Handler done) override;
  void async_read(boost::asio::mutable_buffer buffer, Handler done) override;
  void async_write_some(boost::asio::const_buffer buffer, Handler done) override;
  void async_write(std::span<const boost::asio::const_buffer> buffers, Handler done) override;
  using Stream::async_write;
  void close() override;
  bool is_open() const override { return socket_.is_open(); }
  const PeerInfo& peer() const override { return peer_; }

  Socket& socket() { return socket_; }

 protected:
  void set_peer(PeerInfo peer) { peer_ = std::move(peer); }

 private:
  Socket socket_;
  PeerInfo peer_;
};

class TcpStream final : public SocketStream {
 public:
  // `socket`: a connected TCP socket (IPv4 or IPv6).
  TcpStream(Socket socket, const TcpOptions& options);
};

class UnixStream final : public SocketStream {
 public:
  // `socket`: a connected AF_UNIX stream socket. `name` overrides the peer's log name
  // ("unix uid U pid P" otherwise).
  explicit UnixStream(Socket socket, std::string name = {});
};

// The IP address and port of a generic socket address; nullopt for any other family (AF_UNIX).
std::optional<boost::asio::ip::tcp::endpoint> ip_endpoint(
    const boost::asio::generic::stream_protocol::endpoint& e);

// A connected pair of UNIX streams on `io` (tests, and a parent and the child it forks).
Result<std::pair<std::unique_ptr<UnixStream>, std::unique_ptr<UnixStream>>> stream_pair(
    boost::asio::io_context& io);

}  // namespace usb::net
