// Stream: a connected, reliable byte stream — the seam every protocol of vusb runs over (the
// USB/IP server connection and client channel, the control API). Implementations own the OS
// handle and whatever sits on it: TCP (keepalive, no-delay), UNIX-domain sockets and socketpairs
// (peer credentials) today (socket_stream.h); TLS and Bluetooth RFCOMM are further
// implementations, and the protocol classes do not change for them.
//
// A Stream belongs to the one connection object that uses it and lives on that object's loop;
// handlers run on that loop, never inline from the call that started the operation. One read and
// one write may be outstanding at a time.
#pragma once

#include <sys/types.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>

namespace usb::net {

// What a TLS handshake proved about the peer (tls.h): its certificate, or the PSK identity it
// knew the key of.
struct TlsPeer {
  std::string subject;      // the certificate's subject, one line ("CN=vm1,O=lab")
  std::string common_name;  // its CN
  std::string fingerprint;  // SHA-256 of the certificate (DER), lower-case hex
  std::string psk_identity;  // set instead of the above for a PSK handshake
};

// Who is at the other end, as far as the transport knows it; checked by a listener's PeerCheck
// before the first byte is read (listener.h).
struct PeerInfo {
  std::string name;  // for log lines: "10.0.2.15:40312", "unix uid 1000 pid 4711", "parent"
  std::optional<boost::asio::ip::address> address;  // TCP
  std::optional<uid_t> uid;                         // UNIX-domain: SO_PEERCRED
  std::optional<gid_t> gid;
  std::optional<pid_t> pid;
  std::optional<TlsPeer> tls;  // a TLS stream's authenticated peer
  // Whether the peer proved who it is: a TLS certificate or PSK, or a local user on a UNIX
  // socket.
  bool authenticated() const {
    return (tls && (!tls->fingerprint.empty() || !tls->psk_identity.empty())) || uid.has_value();
  }
};

class Stream {
 public:
  using Handler = std::move_only_function<void(boost::system::error_code, size_t)>;

  virtual ~Stream() = default;

  virtual boost::asio::any_io_executor get_executor() = 0;
  // Reads what is there, at least one byte, at most buffer.size().
  virtual void async_read_some(boost::asio::mutable_buffer buffer, Handler done) = 0;
  // Fills `buffer` completely, or fails (eof included).
  virtual void async_read(boost::asio::mutable_buffer buffer, Handler done) = 0;
  // Writes some of `buffer`.
  virtual void async_write_some(boost::asio::const_buffer buffer, Handler done) = 0;
  // Writes every byte of `buffers`, in order, as one gathered write. The array and the bytes
  // must stay valid until `done` runs.
  virtual void async_write(std::span<const boost::asio::const_buffer> buffers, Handler done) = 0;
  // Shuts down both directions and closes; outstanding operations finish with
  // operation_aborted. Idempotent.
  virtual void close() = 0;
  virtual bool is_open() const = 0;
  virtual const PeerInfo& peer() const = 0;

  // One buffer: the common case of a gathered write.
  void async_write(boost::asio::const_buffer buffer, Handler done) {
    one_ = buffer;
    async_write(std::span<const boost::asio::const_buffer>(&one_, 1), std::move(done));
  }

 private:
  boost::asio::const_buffer one_;  // backs the one-buffer write while it is outstanding
};

}  // namespace usb::net
