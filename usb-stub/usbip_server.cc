#include "usb-stub/usbip_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace stub {

namespace asio = boost::asio;
using asio::ip::tcp;

UsbipServer::UsbipServer(asio::io_context& io, ExportTable& exports, ConnectionLimits limits)
    : io_(io), exports_(exports), limits_(limits), acceptor_(io) {}

usb::Result<void> UsbipServer::listen(const usb::net::HostPort& where) {
  boost::system::error_code ec;
  tcp::resolver resolver(io_);
  auto results = resolver.resolve(where.host, std::to_string(where.port),
                                  tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || results.empty())
    return usb::Error::make(
        usb::Error::Code::kInvalidArgument,
        "cannot resolve listen address " + where.to_string() + ": " + ec.message());
  tcp::endpoint ep = results.begin()->endpoint();
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return usb::Error::make(usb::Error::Code::kIo,
                            "cannot listen on " + where.to_string() + ": " + ec.message());
  accept();
  return {};
}

uint16_t UsbipServer::local_port() const {
  boost::system::error_code ec;
  return acceptor_.local_endpoint(ec).port();
}

void UsbipServer::accept() {
  acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {
      spdlog::warn("usbip: accept failed: {}", ec.message());
    } else {
      auto conn = std::make_shared<UsbipConnection>(std::move(socket), exports_, limits_);
      std::erase_if(connections_, [](auto& w) { return w.expired(); });
      connections_.push_back(conn);
      conn->start();
    }
    accept();
  });
}

void UsbipServer::stop() {
  boost::system::error_code ec;
  acceptor_.close(ec);
  for (auto& w : connections_)
    if (auto c = w.lock()) c->close("server stopping");
  connections_.clear();
}

}  // namespace stub
