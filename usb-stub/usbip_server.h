// UsbipServer: the TCP listener of vusb-stub. Accepts connections and hands each to a
// UsbipConnection. Owned by the stub's main; lives on the stub's loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <vector>

#include "usb-stub/usbip_connection.h"
#include "usb/net/address.h"

namespace stub {

class UsbipServer {
 public:
  UsbipServer(boost::asio::io_context& io, ExportTable& exports, ConnectionLimits limits);
  // Binds and starts accepting. Port 0 picks a free port (see local_port()).
  usb::Result<void> listen(const usb::net::HostPort& where);
  uint16_t local_port() const;
  // Stops accepting and closes every connection.
  void stop();

 private:
  void accept();

  boost::asio::io_context& io_;
  ExportTable& exports_;
  ConnectionLimits limits_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::vector<std::weak_ptr<UsbipConnection>> connections_;
};

}  // namespace stub
