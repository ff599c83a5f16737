#include "vmm-frontend/backends/usbredir_backend.h"

#include <spdlog/spdlog.h>

#include "usb/usbredir/url.h"

namespace vusbd {

namespace {
devices::UsbredirRemoteDevice::Options options_for(const usb::net::Endpoint& host) {
  devices::UsbredirRemoteDevice::Options options;
  options.channel.label = "vusbd " + usb::usbredir::url(host);
  return options;
}
}  // namespace

UsbredirBackend::UsbredirBackend(boost::asio::io_context& io, usb::net::Endpoint host,
                                 OnChange on_change)
    : host_(std::move(host)),
      reimport_(
          io, usb::usbredir::url(host_), options_for(host_),
          [&io, host = host_](auto options, auto done) {
            devices::UsbredirRemoteDevice::import(io, host, std::move(options), std::move(done));
          },
          std::move(on_change)) {}

usb::Result<void> UsbredirBackend::start() {
  reimport_.start();
  return {};
}

std::string UsbredirBackend::describe() const {
  return usb::usbredir::url(host_);
}

void UsbredirBackend::add_stats(nlohmann::json& device) const {
  const devices::UsbredirRemoteDevice* d = reimport_.device();
  if (!d) return;
  const auto& s = d->channel().stats();
  device["usbredir_import"] = {
      {"packets_out", s.packets_out}, {"packets_in", s.packets_in},
      {"cancelled", s.cancelled},     {"unknown_ids", s.unknown_ids},
      {"refused", s.refused},         {"interrupt_dropped", s.interrupt_dropped}};
}

}  // namespace vusbd
