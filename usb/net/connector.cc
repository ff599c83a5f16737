#include "usb/net/connector.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

namespace usb::net {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using generic = asio::generic::stream_protocol;

namespace {

// One asynchronous connect: resolve (TCP), connect, or give up at the deadline; `done` once.
struct ConnectOp : std::enable_shared_from_this<ConnectOp> {
  ConnectOp(asio::io_context& io, Endpoint to, ConnectOptions options, ConnectHandler done)
      : resolver(io),
        tcp_socket(io),
        unix_socket(io),
        deadline(io),
        to(std::move(to)),
        options(options),
        done(std::move(done)) {}

  void start(std::chrono::milliseconds timeout) {
    if (to.tls && (!options.tls || options.tls->role() != TlsRole::kClient)) {
      // Not inline: `done` runs on the loop like every other outcome.
      return asio::post(deadline.get_executor(), [self = shared_from_this()] {
        self->fail("TLS needs a CA or a PSK to know the server by ([tls] ca or psk)");
      });
    }
    deadline.expires_after(timeout);
    deadline.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec) self->fail("no answer in time");
    });
    if (to.is_unix()) {
      unix_socket.async_connect(asio::local::stream_protocol::endpoint(to.path),
                                [self = shared_from_this()](error_code ec) {
                                  if (ec) return self->fail(ec.message());
                                  generic::socket s(std::move(self->unix_socket));
                                  self->secure(std::make_unique<UnixStream>(std::move(s)));
                                });
      return;
    }
    resolver.async_resolve(
        to.tcp.host, std::to_string(to.tcp.port),
        [self = shared_from_this()](error_code ec, tcp::resolver::results_type results) {
          if (ec) return self->fail("resolve: " + ec.message());
          asio::async_connect(self->tcp_socket, results,
                              [self](error_code ec2, const tcp::endpoint&) {
                                if (ec2) return self->fail(ec2.message());
                                generic::socket s(std::move(self->tcp_socket));
                                self->secure(std::make_unique<TcpStream>(std::move(s),
                                                                         self->options.tcp));
                              });
        });
  }
  // TLS, when asked for, within the same deadline.
  void secure(std::unique_ptr<SocketStream> stream) {
    if (!done) return;  // timed out meanwhile
    if (!to.tls) return finish(std::move(stream));
    options.tls->upgrade(
        std::move(stream),
        [self = shared_from_this()](Result<std::unique_ptr<Stream>> tls) {
          if (!tls) {
            if (!self->done) return;
            self->deadline.cancel();
            auto cb = std::move(self->done);
            return cb(Error::make(tls.error().code, "connect " + self->to.to_string() + ": " +
                                                        tls.error().message));
          }
          self->finish(std::move(*tls));
        },
        to.is_unix() ? std::string() : to.tcp.host);
  }
  void finish(std::unique_ptr<Stream> stream) {
    if (!done) return;
    deadline.cancel();
    auto cb = std::move(done);
    cb(std::move(stream));
  }
  void fail(const std::string& why) {
    if (!done) return;
    error_code ec;
    deadline.cancel();
    resolver.cancel();
    tcp_socket.close(ec);
    unix_socket.close(ec);
    auto cb = std::move(done);
    cb(Error::make(Error::Code::kIo, "connect " + to.to_string() + ": " + why));
  }

  tcp::resolver resolver;
  tcp::socket tcp_socket;
  asio::local::stream_protocol::socket unix_socket;
  asio::steady_timer deadline;
  Endpoint to;
  ConnectOptions options;
  ConnectHandler done;
};

}  // namespace

void async_connect(asio::io_context& io, const Endpoint& to, const ConnectOptions& options,
                   std::chrono::milliseconds timeout, ConnectHandler done) {
  std::make_shared<ConnectOp>(io, to, options, std::move(done))->start(timeout);
}

Result<generic::socket> connect_blocking(asio::io_context& io, const Endpoint& to) {
  error_code ec;
  if (to.is_unix()) {
    asio::local::stream_protocol::socket s(io);
    s.connect(asio::local::stream_protocol::endpoint(to.path), ec);
    if (ec)
      return Error::make(Error::Code::kIo, "connect " + to.to_string() + ": " + ec.message());
    return generic::socket(std::move(s));
  }
  tcp::resolver resolver(io);
  auto results = resolver.resolve(to.tcp.host, std::to_string(to.tcp.port), ec);
  tcp::socket s(io);
  if (!ec) asio::connect(s, results, ec);
  if (ec) return Error::make(Error::Code::kIo, "connect " + to.to_string() + ": " + ec.message());
  s.set_option(tcp::no_delay(true), ec);
  return generic::socket(std::move(s));
}

}  // namespace usb::net
