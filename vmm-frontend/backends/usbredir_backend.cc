#include "vmm-frontend/backends/usbredir_backend.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include "usb/usbredir/url.h"

namespace vusbd {

UsbredirBackend::UsbredirBackend(boost::asio::io_context& io, usb::net::Endpoint host,
                                 OnChange on_change)
    : io_(io), host_(std::move(host)), on_change_(std::move(on_change)), retry_(io) {}

UsbredirBackend::~UsbredirBackend() {
  *alive_ = false;
  retry_.cancel();
  if (device_) device_->close();
}

usb::Result<void> UsbredirBackend::start() {
  import();
  return {};
}

std::string UsbredirBackend::describe() const {
  return usb::usbredir::url(host_);
}

void UsbredirBackend::add_stats(nlohmann::json& device) const {
  if (!device_) return;
  const auto& s = device_->channel().stats();
  device["usbredir_import"] = {
      {"packets_out", s.packets_out}, {"packets_in", s.packets_in},
      {"cancelled", s.cancelled},     {"unknown_ids", s.unknown_ids},
      {"refused", s.refused},         {"interrupt_dropped", s.interrupt_dropped}};
}

void UsbredirBackend::import() {
  devices::UsbredirRemoteDevice::Options options;
  options.channel.label = "vusbd " + describe();
  options.on_disconnect = [this, alive = alive_](const std::string& reason) {
    // Runs inside the channel's read or failure path: act on the next loop turn.
    boost::asio::post(io_, [this, alive, reason] {
      if (!*alive || !device_) return;
      spdlog::warn("vusbd: {} is gone ({}); re-importing", describe(), reason);
      on_change_(nullptr);
      device_.reset();
      backoff_ = std::chrono::milliseconds(100);
      retry_later();
    });
  };
  devices::UsbredirRemoteDevice::import(
      io_, host_, std::move(options), [this, alive = alive_](auto result) {
        if (!*alive) return;
        if (!result) {
          if (!logged_failure_)
            spdlog::warn("vusbd: cannot import {}: {} (retrying)", describe(),
                         result.error().message);
          logged_failure_ = true;
          return retry_later();
        }
        logged_failure_ = false;
        device_ = std::move(*result);
        spdlog::info("vusbd: imported {} ({:04x}:{:04x})", describe(),
                     device_->descriptors().device.vendor_id,
                     device_->descriptors().device.product_id);
        on_change_(device_.get());
      });
}

void UsbredirBackend::retry_later() {
  retry_.expires_after(backoff_);
  backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(2000));
  retry_.async_wait([this, alive = alive_](boost::system::error_code ec) {
    if (!ec && *alive) import();
  });
}

}  // namespace vusbd
