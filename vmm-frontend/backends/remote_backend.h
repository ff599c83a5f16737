// RemoteBackend: a device imported from a USB/IP server (vusb-stub or the kernel's usbipd) that
// keeps itself imported: when the connection ends, in-flight URBs complete with kNoDevice (the
// client does that), the owner is told the device is gone, and the import is retried with
// backoff (100 ms doubling to 2 s) until it succeeds. Owned by vusbd's registry; lives on
// vusbd's loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "devices/remote/usbip_remote_device.h"
#include "usb/net/endpoint.h"
#include "usb/usbip/url.h"
#include "vmm-frontend/backends/device_source.h"

namespace vusbd {

class RemoteBackend final : public DeviceSource {
 public:
  RemoteBackend(boost::asio::io_context& io, usb::net::Endpoint server, std::string busid,
                OnChange on_change);
  ~RemoteBackend() override;

  usb::Result<void> start() override;
  usb::Device* device() const override { return device_.get(); }
  std::string describe() const override { return usb::usbip::url(server_, busid_); }

 private:
  void import();
  void retry_later();

  boost::asio::io_context& io_;
  usb::net::Endpoint server_;
  std::string busid_;
  OnChange on_change_;
  std::unique_ptr<devices::UsbipRemoteDevice> device_;
  boost::asio::steady_timer retry_;
  std::chrono::milliseconds backoff_{100};
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool logged_failure_ = false;
};

}  // namespace vusbd
