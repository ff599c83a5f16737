#include "usb-stub/device_sources.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>

#include "devices/emulated/gadget_zero.h"
#include "devices/libusb/libusb_provider.h"
#include "usb/net/asio_timer.h"

namespace stub {

DeviceSources::DeviceSources(boost::asio::io_context& io, usb::Executor& loop, ExportTable& exports)
    : io_(io), loop_(loop), exports_(exports) {}

DeviceSources::~DeviceSources() {
  stop();
}

usb::Result<void> DeviceSources::add_emulated(const EmulateSpec& spec) {
  auto parsed = devices::parse_gadget_zero_options(spec.options);
  if (!parsed) return std::unexpected(parsed.error());
  devices::GadgetZeroOptions options = *parsed;
  options.speed = spec.speed == "super" ? usb::Speed::kSuper : usb::Speed::kHigh;
  usb::DeviceLocation location;
  location.busid = spec.busid;
  auto device = std::make_unique<devices::GadgetZero>(options, location);
  device->set_pacing(usb::net::asio_timer(io_), [] { return std::chrono::steady_clock::now(); });
  // A Linux host configures a device before usbip-host exports it (usb_choose_configuration);
  // do the same so DEVLIST shows the interfaces and the importer finds it configured.
  if (const auto& configs = device->descriptors().configurations; !configs.empty())
    device->set_configuration(configs.front().value, [](usb::Status) {});
  auto busid = exports_.add(*device);
  if (!busid) return std::unexpected(busid.error());
  emulated_.push_back(std::move(device));
  return {};
}

usb::Result<void> DeviceSources::add_libusb(const std::vector<std::string>& selectors, bool all) {
  devices::LibusbProvider::Options options;
  if (all) options.filters.push_back(devices::DeviceFilter::all());
  for (const auto& s : selectors) {
    auto f = devices::parse_device_filter(s);
    if (!f) return std::unexpected(f.error());
    options.filters.push_back(*f);
  }
  // Rescans (when libusb has no hotplug here) run on the loop through an Asio timer.
  options.timer = usb::net::asio_timer(io_);
  options.on_initial_scan_done = [this](size_t n) {
    spdlog::info("libusb: initial scan found {} device(s); exporting {}", n, exports_.size());
  };
  auto provider = devices::LibusbProvider::create(loop_, std::move(options));
  if (!provider) return std::unexpected(provider.error());
  (*provider)->add_observer(&exports_);
  for (usb::Device* d : (*provider)->devices()) exports_.on_device_added(*d);
  providers_.push_back(std::move(*provider));
  return {};
}

void DeviceSources::stop() {
  for (auto& d : emulated_) exports_.remove(*d);
  emulated_.clear();
  // A provider's destructor reports every device removed to its observers (the export table).
  providers_.clear();
}

}  // namespace stub
