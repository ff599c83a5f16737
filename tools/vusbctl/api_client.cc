#include "tools/vusbctl/api_client.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <optional>
#include <vector>

#include "usb/net/beast_stream.h"
#include "usb/net/connector.h"

namespace vusbctl {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using usb::net::BeastStream;
using error_code = boost::system::error_code;

namespace {

std::unexpected<usb::Error> io_error(const usb::net::Endpoint& api, std::string what,
                                     const error_code& ec) {
  return usb::Error::make(usb::Error::Code::kIo, "vusbd at " + api.to_string() + ": " +
                                                     std::move(what) + ": " + ec.message());
}

// The Host header: a UNIX socket has no host name ("localhost", which vusbd accepts).
std::string host_header(const usb::net::Endpoint& api) {
  return api.is_unix() ? std::string("localhost") : api.tcp.host;
}

// Connects (TCP, a UNIX socket, TLS over either: the same connector vusbd's imports use) and
// runs `then` with the stream as a Beast stream; false and `err` set when that fails.
bool connect(asio::io_context& io, const Api& api, std::chrono::seconds timeout,
             std::optional<BeastStream>& out, usb::Error& err) {
  bool done = false;
  usb::net::async_connect(io, api.at, usb::net::ConnectOptions{{}, api.tls},
                          std::chrono::duration_cast<std::chrono::milliseconds>(timeout),
                          [&](usb::Result<std::unique_ptr<usb::net::Stream>> r) {
                            done = true;
                            if (!r) {
                              err = r.error();
                              return;
                            }
                            out.emplace(std::move(*r));
                          });
  while (!done && io.run_one()) {
  }
  io.restart();
  return out.has_value();
}

}  // namespace

usb::Result<Reply> request(const Api& conn, std::string_view method, std::string_view target,
                           std::string_view body, std::chrono::seconds timeout) {
  const usb::net::Endpoint& api = conn.at;
  asio::io_context io;
  std::optional<BeastStream> stream;
  usb::Error err{usb::Error::Code::kIo, ""};
  if (!connect(io, conn, timeout, stream, err))
    return usb::Error::make(usb::Error::Code::kIo, "vusbd at " + api.to_string() + ": " +
                                                       err.message);
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
  std::string step = "send";
  asio::steady_timer deadline(io, timeout);
  deadline.async_wait([&](error_code e) {
    if (!e) stream->close();  // the outstanding operation ends with an error
  });
  http::async_write(*stream, req, [&](error_code e2, size_t) {
    if (e2) return void(result = e2);
    step = "answer";
    http::async_read(*stream, buffer, res, [&](error_code e3, size_t) {
      result = e3;
      deadline.cancel();
    });
  });
  io.run();
  if (result) return io_error(api, step, result);
  stream->close();
  return Reply{res.result_int(), std::move(res.body())};
}

usb::Result<void> follow_events(const Api& conn,
                                const std::function<bool(const std::string&)>& on_message,
                                std::chrono::seconds timeout) {
  const usb::net::Endpoint& api = conn.at;
  asio::io_context io;
  std::optional<BeastStream> stream;
  usb::Error err{usb::Error::Code::kIo, ""};
  if (!connect(io, conn, std::chrono::seconds(10), stream, err))
    return usb::Error::make(usb::Error::Code::kIo, "vusbd at " + api.to_string() + ": " +
                                                       err.message);
  websocket::stream<BeastStream> ws(std::move(*stream));
  beast::flat_buffer buffer;
  error_code result;
  std::string step = "websocket handshake";
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
  if (!conn.token.empty())
    ws.set_option(websocket::stream_base::decorator([token = conn.token](auto& req) {
      req.set(http::field::authorization, "Bearer " + token);
    }));
  ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
  ws.async_handshake(host_header(api), "/api/v1/events", [&](error_code e2) {
    if (e2) return void(result = e2);
    step = "event stream";
    read_next();
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
