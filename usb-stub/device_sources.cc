#include "usb-stub/device_sources.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>

#include "devices/emulated/emulated_factory.h"
#include "devices/libusb/libusb_provider.h"
#include "usb/net/asio_timer.h"

namespace stub {

DeviceSources::DeviceSources(boost::asio::io_context& io, usb::Executor& loop, ExportTable& exports)
    : io_(io), loop_(loop), exports_(exports) {}

DeviceSources::~DeviceSources() {
  stop();
}

usb::Result<void> DeviceSources::add_emulated(const EmulateSpec& spec) {
  devices::EmulatedSpec what{.type = spec.type, .options = spec.options, .location = {}};
  what.location.busid = spec.busid;
  if (spec.type == "gadget-zero")
    what.options += (what.options.empty() ? "speed=" : ",speed=") + spec.speed;
  auto device = devices::make_emulated(what, usb::net::asio_timer(io_),
                                       [] { return std::chrono::steady_clock::now(); });
  if (!device) return std::unexpected(device.error());
  auto busid = exports_.add(**device);
  if (!busid) return std::unexpected(busid.error());
  spdlog::info("emulated {} exported as {}", spec.type, *busid);
  emulated_.push_back(std::move(*device));
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
