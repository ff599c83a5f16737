// Server: a USB/IP server — a Listener (TCP or a UNIX socket, peer check) whose admitted streams
// each become a ServerConnection on one ExportTable. vusb-stub runs one; vusbd runs one per VM
// (its USB/IP VM adapter). Owned by that program; lives on its loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <vector>

#include "usb/net/endpoint.h"
#include "usb/net/listener.h"
#include "usb/usbip/server_connection.h"

namespace usb::usbip {

class Server {
 public:
  Server(boost::asio::io_context& io, ExportTable& exports, ConnectionLimits limits,
         usb::net::Listener::Options listener = {});
  ~Server();

  // Binds and starts accepting. TCP port 0 picks a free port (see local_port()).
  usb::Result<void> listen(const usb::net::Endpoint& where);
  uint16_t local_port() const { return listener_.local_port(); }
  usb::net::Endpoint local_endpoint() const { return listener_.local_endpoint(); }
  // Serves one more connection that was made elsewhere (a socketpair).
  void serve(std::unique_ptr<usb::net::Stream> stream);
  // Stops accepting and closes every connection.
  void stop();

 private:
  ExportTable& exports_;
  ConnectionLimits limits_;
  usb::net::Listener listener_;
  std::vector<std::weak_ptr<ServerConnection>> connections_;
};

}  // namespace usb::usbip
