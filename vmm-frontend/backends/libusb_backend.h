// LibusbBackend: a real USB device of this host, taken through libusb (the same LibusbProvider
// vusb-stub uses) and kept: the first device matching the filter becomes the backend; when it
// is unplugged (its in-flight URBs have completed with kNoDevice) the owner is told, and when a
// matching device appears again it becomes the backend again. Owned by vusbd's registry; lives
// on vusbd's loop (the provider's event thread never touches it).
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>

#include "devices/libusb/device_filter.h"
#include "devices/libusb/libusb_provider.h"
#include "usb/net/asio_executor.h"
#include "vmm-frontend/backends/device_source.h"

namespace vusbd {

class LibusbBackend final : public DeviceSource, private usb::DeviceProvider::Observer {
 public:
  LibusbBackend(boost::asio::io_context& io, devices::DeviceFilter filter, OnChange on_change);
  ~LibusbBackend() override;

  // Fails when libusb cannot initialise; a device that is not there yet is not an error.
  usb::Result<void> start() override;
  usb::Device* device() const override { return device_; }
  std::string describe() const override { return "libusb:" + filter_.to_string(); }

 private:
  void on_device_added(usb::Device& device) override;
  void on_device_removed(usb::Device& device) override;

  boost::asio::io_context& io_;
  usb::net::AsioExecutor executor_;
  devices::DeviceFilter filter_;
  OnChange on_change_;
  std::unique_ptr<devices::LibusbProvider> provider_;
  usb::Device* device_ = nullptr;
};

}  // namespace vusbd
