// EmulatedSource: an emulated device (Gadget Zero, the UVC camera, HID devices, ...) living in
// vusbd's own process, on vusbd's loop and timers; it is there from start() on. Owned by Vusbd;
// lives on vusbd's loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>

#include "devices/emulated/emulated_factory.h"
#include "vmm-frontend/backends/device_source.h"

namespace vusbd {

class EmulatedSource final : public DeviceSource {
 public:
  EmulatedSource(boost::asio::io_context& io, devices::EmulatedSpec spec, OnChange on_change);
  ~EmulatedSource() override;

  usb::Result<void> start() override;
  usb::Device* device() const override { return device_.get(); }
  std::string describe() const override { return "emulated:" + spec_.type; }

 private:
  boost::asio::io_context& io_;
  devices::EmulatedSpec spec_;
  OnChange on_change_;
  std::unique_ptr<usb::Device> device_;
};

}  // namespace vusbd
