// RemoteDiscovery: follows what a USB/IP server (vusb-stub, the kernel's usbipd) exports —
// devices behind hubs included, whose bus ids are "B-P.P..." — by asking for its device list
// every `interval`. Each successful listing is reported; a failed one is logged once per outage
// and not reported (an unreachable server does not mean its devices are gone: their own imports
// notice that). vusbd turns a source "usbip://HOST:PORT/*" into one device per listed bus id.
// Owned by Vusbd; lives on vusbd's loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "usb/net/endpoint.h"
#include "usb/net/tls.h"
#include "usb/wire/usbip_codec.h"

namespace vusbd {

class RemoteDiscovery {
 public:
  using OnList = std::function<void(const std::vector<usb::wire::usbip::DevlistEntry>&)>;

  // A server that lists more than this many devices gets only the first ones imported (and a
  // warning): one exporter cannot make vusbd create thousands of devices.
  static constexpr size_t kMaxDevices = 128;

  // `tls`: the client context for a TLS server (server.tls).
  RemoteDiscovery(boost::asio::io_context& io, usb::net::Endpoint server,
                  std::chrono::milliseconds interval, OnList on_list,
                  std::shared_ptr<const usb::net::TlsContext> tls = nullptr);
  ~RemoteDiscovery();

  void start();
  // At least one listing succeeded.
  bool listed() const { return listed_; }

 private:
  void poll();

  boost::asio::io_context& io_;
  usb::net::Endpoint server_;
  std::chrono::milliseconds interval_;
  OnList on_list_;
  std::shared_ptr<const usb::net::TlsContext> tls_;
  boost::asio::steady_timer timer_;
  bool capped_ = false;
  bool listed_ = false;
  bool failing_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace vusbd
