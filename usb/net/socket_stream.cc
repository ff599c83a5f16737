#include "usb/net/socket_stream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>

namespace usb::net {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

PeerInfo tcp_peer(SocketStream::Socket& s) {
  PeerInfo p;
  error_code ec;
  const auto ep = ip_endpoint(s.remote_endpoint(ec));
  if (ec || !ep) {
    p.name = "unknown-peer";
    return p;
  }
  p.address = ep->address();
  p.name = (p.address->is_v6() ? "[" + p.address->to_string() + "]" : p.address->to_string()) +
           ":" + std::to_string(ep->port());
  return p;
}

PeerInfo unix_peer(SocketStream::Socket& s, std::string name) {
  PeerInfo p;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(s.native_handle(), SOL_SOCKET, SO_PEERCRED,
                   &cred, &len) == 0 &&
      len == sizeof cred) {
    p.uid = cred.uid;
    p.gid = cred.gid;
    p.pid = cred.pid;
  }
  if (!name.empty())
    p.name = std::move(name);
  else if (p.uid)
    p.name = "unix uid " + std::to_string(*p.uid) + " pid " + std::to_string(*p.pid);
  else
    p.name = "unix peer";
  return p;
}

}  // namespace

std::optional<asio::ip::tcp::endpoint> ip_endpoint(const asio::generic::stream_protocol::endpoint& e) {
  const int family = e.data()->sa_family;
  if ((family != AF_INET && family != AF_INET6) || e.size() > sizeof(sockaddr_in6))
    return std::nullopt;
  asio::ip::tcp::endpoint out;
  std::memcpy(out.data(), e.data(), e.size());
  out.resize(e.size());
  return out;
}

SocketStream::SocketStream(Socket socket, PeerInfo peer)
    : socket_(std::move(socket)), peer_(std::move(peer)) {}

SocketStream::~SocketStream() = default;

void SocketStream::async_read_some(asio::mutable_buffer buffer, Handler done) {
  socket_.async_read_some(buffer, [done = std::move(done)](error_code ec, size_t n) mutable {
    done(ec, n);
  });
}

void SocketStream::async_read(asio::mutable_buffer buffer, Handler done) {
  asio::async_read(socket_, buffer, [done = std::move(done)](error_code ec, size_t n) mutable {
    done(ec, n);
  });
}

void SocketStream::async_write_some(asio::const_buffer buffer, Handler done) {
  socket_.async_write_some(buffer, [done = std::move(done)](error_code ec, size_t n) mutable {
    done(ec, n);
  });
}

void SocketStream::async_write(std::span<const asio::const_buffer> buffers, Handler done) {
  asio::async_write(socket_, buffers, [done = std::move(done)](error_code ec, size_t n) mutable {
    done(ec, n);
  });
}

void SocketStream::close() {
  error_code ec;
  if (!socket_.is_open()) return;
  socket_.shutdown(asio::socket_base::shutdown_both, ec);
  socket_.close(ec);
}

TcpStream::TcpStream(Socket socket, const TcpOptions& o) : SocketStream(std::move(socket), {}) {
  Socket& s = this->socket();
  set_peer(tcp_peer(s));
  error_code ec;
  if (o.no_delay) s.set_option(asio::ip::tcp::no_delay(true), ec);
  if (o.keepalive_idle.count() > 0) {
    s.set_option(asio::socket_base::keep_alive(true), ec);
    const int fd = s.native_handle();
    const int idle = static_cast<int>(o.keepalive_idle.count());
    const int interval = static_cast<int>(o.keepalive_interval.count());
    const int count = o.keepalive_count;
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  }
}

UnixStream::UnixStream(Socket socket, std::string name) : SocketStream(std::move(socket), {}) {
  set_peer(unix_peer(this->socket(), std::move(name)));
}

Result<std::pair<std::unique_ptr<UnixStream>, std::unique_ptr<UnixStream>>> stream_pair(
    asio::io_context& io) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    return Error::make(Error::Code::kIo, std::string("socketpair: ") + std::strerror(errno));
  const asio::generic::stream_protocol unix_stream(AF_UNIX, SOCK_STREAM);
  SocketStream::Socket a(io, unix_stream, fds[0]), b(io, unix_stream, fds[1]);
  return std::pair{std::make_unique<UnixStream>(std::move(a)),
                   std::make_unique<UnixStream>(std::move(b))};
}

}  // namespace usb::net
