// Connecting to an Endpoint: a TCP HOST:PORT (resolved, TcpOptions set) or a UNIX socket path.
// The asynchronous form runs on the loop and hands over a Stream; the blocking form is for tools
// and tests that talk to a daemon synchronously (vusbctl, vusb-probe) and returns the socket.
#pragma once

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <memory>

#include "usb/core/error.h"
#include "usb/net/endpoint.h"
#include "usb/net/socket_stream.h"
#include "usb/net/tls.h"

namespace usb::net {

using ConnectHandler = std::move_only_function<void(Result<std::unique_ptr<Stream>>)>;

// How to connect: TCP's options, and a TLS context (client role) to run a handshake over the
// new connection before it is handed over — checking the server's certificate against the host
// dialled unless the context names another.
struct ConnectOptions {
  ConnectOptions(TcpOptions tcp = {}, std::shared_ptr<const TlsContext> tls = nullptr)  // NOLINT
      : tcp(tcp), tls(std::move(tls)) {}
  TcpOptions tcp;
  std::shared_ptr<const TlsContext> tls;
};
// Calls `done` once on the loop: the connected stream, or kIo ("connect HOST:PORT: …"), also
// when `timeout` passes first; the deadline covers the TLS handshake too. A refused handshake is
// kDenied.
void async_connect(boost::asio::io_context& io, const Endpoint& to, const ConnectOptions& options,
                   std::chrono::milliseconds timeout, ConnectHandler done);

// Blocking connect (no-delay set on TCP).
Result<boost::asio::generic::stream_protocol::socket> connect_blocking(
    boost::asio::io_context& io, const Endpoint& to);

}  // namespace usb::net
