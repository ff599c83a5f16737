#include "tools/vusbctl/api_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <vector>

namespace vusbctl {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using Protocol = asio::generic::stream_protocol;
// A Beast stream over a TCP or UNIX-domain socket alike (timeouts included).
using Stream = beast::basic_stream<Protocol>;
using error_code = boost::system::error_code;

namespace {

std::unexpected<usb::Error> io_error(const usb::net::Endpoint& api, std::string what,
                                     const error_code& ec) {
  return usb::Error::make(usb::Error::Code::kIo, "vusbd at " + api.to_string() + ": " +
                                                     std::move(what) + ": " + ec.message());
}

// Where to connect: the UNIX socket's path, or every address HOST resolves to.
usb::Result<std::vector<Protocol::endpoint>> resolve(asio::io_context& io,
                                                     const usb::net::Endpoint& api) {
  if (api.is_unix()) return std::vector<Protocol::endpoint>{asio::local::stream_protocol::endpoint(api.path)};
  tcp::resolver resolver(io);
  error_code ec;
  auto endpoints = resolver.resolve(api.tcp.host, std::to_string(api.tcp.port), ec);
  if (ec) return io_error(api, "resolve", ec);
  std::vector<Protocol::endpoint> out;
  for (const auto& e : endpoints) out.emplace_back(e.endpoint());
  return out;
}

// The Host header: a UNIX socket has no host name ("localhost", which vusbd accepts).
std::string host_header(const usb::net::Endpoint& api) {
  return api.is_unix() ? std::string("localhost") : api.tcp.host;
}

}  // namespace

usb::Result<Reply> request(const Api& conn, std::string_view method, std::string_view target,
                           std::string_view body, std::chrono::seconds timeout) {
  const usb::net::Endpoint& api = conn.at;
  asio::io_context io;
  auto endpoints = resolve(io, api);
  if (!endpoints) return std::unexpected(endpoints.error());
  Stream stream(io);
  http::request<http::string_body> req(http::string_to_verb({method.data(), method.size()}),
                                       {target.data(), target.size()}, 11);
  req.set(http::field::host, host_header(api));
  req.set(http::field::user_agent, "vusbctl");
  if (!conn.token.empty()) req.set(http::field::authorization, "Bearer " + conn.token);
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = std::string(body);
  }
  req.prepare_payload();
  http::response<http::string_body> res;
  beast::flat_buffer buffer;
  error_code result;
  std::string step = "connect";
  stream.expires_after(timeout);
  stream.async_connect(*endpoints, [&](error_code e, const Protocol::endpoint&) {
    if (e) return void(result = e);
    step = "send";
    http::async_write(stream, req, [&](error_code e2, size_t) {
      if (e2) return void(result = e2);
      step = "answer";
      http::async_read(stream, buffer, res, [&](error_code e3, size_t) { result = e3; });
    });
  });
  io.run();
  if (result) return io_error(api, step, result);
  error_code ignored;
  stream.socket().shutdown(Protocol::socket::shutdown_both, ignored);
  return Reply{res.result_int(), std::move(res.body())};
}

usb::Result<void> follow_events(const Api& conn,
                                const std::function<bool(const std::string&)>& on_message,
                                std::chrono::seconds timeout) {
  const usb::net::Endpoint& api = conn.at;
  asio::io_context io;
  auto endpoints = resolve(io, api);
  if (!endpoints) return std::unexpected(endpoints.error());
  websocket::stream<Stream> ws(io);
  beast::flat_buffer buffer;
  error_code result;
  std::string step = "connect";
  bool done = false;
  std::function<void()> read_next = [&] {
    ws.async_read(buffer, [&](error_code e, size_t) {
      if (e) return void(result = (e == websocket::error::closed ? error_code{} : e));
      std::string text = beast::buffers_to_string(buffer.data());
      buffer.consume(buffer.size());
      if (!on_message(text)) {
        done = true;
        ws.async_close(websocket::close_code::normal, [](error_code) {});
        return;
      }
      read_next();
    });
  };
  beast::get_lowest_layer(ws).expires_after(std::chrono::seconds(10));
  beast::get_lowest_layer(ws).async_connect(*endpoints, [&](error_code e,
                                                            const Protocol::endpoint&) {
    if (e) return void(result = e);
    step = "websocket handshake";
    if (!conn.token.empty())
      ws.set_option(websocket::stream_base::decorator([token = conn.token](auto& req) {
        req.set(http::field::authorization, "Bearer " + token);
      }));
    ws.async_handshake(host_header(api), "/api/v1/events", [&](error_code e2) {
      if (e2) return void(result = e2);
      step = "event stream";
      beast::get_lowest_layer(ws).expires_never();
      ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
      read_next();
    });
  });
  if (timeout.count() > 0) {
    io.run_for(timeout);
    if (!done && !result) return {};  // the caller's time is up: not an error
  } else {
    io.run();
  }
  if (result && !done) return io_error(api, step, result);
  return {};
}

}  // namespace vusbctl
