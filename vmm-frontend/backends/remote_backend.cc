#include "vmm-frontend/backends/remote_backend.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

namespace vusbd {

RemoteBackend::RemoteBackend(boost::asio::io_context& io, usb::net::Endpoint server,
                             std::string busid, OnChange on_change)
    : io_(io),
      server_(std::move(server)),
      busid_(std::move(busid)),
      on_change_(std::move(on_change)),
      retry_(io) {}

RemoteBackend::~RemoteBackend() {
  *alive_ = false;
  retry_.cancel();
  if (device_) device_->close();
}

usb::Result<void> RemoteBackend::start() {
  import();
  return {};
}

void RemoteBackend::import() {
  devices::UsbipRemoteDevice::Options options;
  options.on_disconnect = [this, alive = alive_](const std::string& reason) {
    // Runs inside the client's failure path: act on the next loop turn.
    boost::asio::post(io_, [this, alive, reason] {
      if (!*alive || !device_) return;
      spdlog::warn("vusbd: {} is gone ({}); re-importing", describe(), reason);
      on_change_(nullptr);
      device_.reset();
      backoff_ = std::chrono::milliseconds(100);
      retry_later();
    });
  };
  devices::UsbipRemoteDevice::import(
      io_, server_, busid_, std::move(options), [this, alive = alive_](auto result) {
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

void RemoteBackend::retry_later() {
  retry_.expires_after(backoff_);
  backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(2000));
  retry_.async_wait([this, alive = alive_](boost::system::error_code ec) {
    if (!ec && *alive) import();
  });
}

}  // namespace vusbd
