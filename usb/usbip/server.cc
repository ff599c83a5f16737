#include "usb/usbip/server.h"

namespace usb::usbip {

namespace {
usb::net::Listener::Options with_label(usb::net::Listener::Options o, const ConnectionLimits& l) {
  if (o.label == usb::net::Listener::Options{}.label) o.label = l.label.empty() ? "usbip" : l.label;
  return o;
}
}  // namespace

Server::Server(boost::asio::io_context& io, ExportTable& exports, ConnectionLimits limits,
               usb::net::Listener::Options listener)
    : exports_(exports), limits_(limits), listener_(io, with_label(std::move(listener), limits)) {}

Server::~Server() {
  stop();
}

usb::Result<void> Server::listen(const usb::net::Endpoint& where) {
  if (auto r = listener_.listen(where); !r) return r;
  listener_.start([this](std::unique_ptr<usb::net::Stream> stream) { serve(std::move(stream)); });
  return {};
}

void Server::serve(std::unique_ptr<usb::net::Stream> stream) {
  auto conn = std::make_shared<ServerConnection>(std::move(stream), exports_, limits_);
  std::erase_if(connections_, [](auto& w) { return w.expired(); });
  connections_.push_back(conn);
  conn->start();
}

void Server::stop() {
  listener_.stop();
  for (auto& w : connections_)
    if (auto c = w.lock()) c->close("server stopping");
  connections_.clear();
}

}  // namespace usb::usbip
