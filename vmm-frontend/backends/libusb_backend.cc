#include "vmm-frontend/backends/libusb_backend.h"

#include <spdlog/spdlog.h>

#include "usb/net/asio_timer.h"

namespace vusbd {

LibusbBackend::LibusbBackend(boost::asio::io_context& io, devices::DeviceFilter filter,
                             OnChange on_change)
    : io_(io), executor_(io), filter_(std::move(filter)), on_change_(std::move(on_change)) {}

LibusbBackend::~LibusbBackend() {
  if (provider_) provider_->remove_observer(this);
  device_ = nullptr;
  provider_.reset();
}

usb::Result<void> LibusbBackend::start() {
  devices::LibusbProvider::Options options;
  options.filters = {filter_};
  // Rescans (where libusb has no hotplug) run on the loop through an Asio timer.
  options.timer = usb::net::asio_timer(io_);
  options.on_initial_scan_done = [this](size_t n) {
    if (n == 0) spdlog::warn("vusbd: {}: no such device yet; waiting for it", describe());
  };
  auto provider = devices::LibusbProvider::create(executor_, std::move(options));
  if (!provider) return std::unexpected(provider.error());
  provider_ = std::move(*provider);
  provider_->add_observer(this);
  for (usb::Device* d : provider_->devices()) on_device_added(*d);
  return {};
}

void LibusbBackend::on_device_added(usb::Device& device) {
  if (device_) {
    spdlog::info("vusbd: {}: {} also matches; keeping {}", describe(), device.location().busid,
                 device_->location().busid);
    return;
  }
  device_ = &device;
  spdlog::info("vusbd: {} is {} ({:04x}:{:04x})", describe(), device.location().busid,
               device.descriptors().device.vendor_id, device.descriptors().device.product_id);
  on_change_(device_);
}

void LibusbBackend::on_device_removed(usb::Device& device) {
  if (&device != device_) return;
  spdlog::warn("vusbd: {} ({}) is gone", describe(), device.location().busid);
  device_ = nullptr;
  on_change_(nullptr);
  // Another matching device may still be there.
  for (usb::Device* d : provider_->devices())
    if (d != &device) return on_device_added(*d);
}

}  // namespace vusbd
