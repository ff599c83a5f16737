// Reimport<RemoteDevice>: keeps a device imported from another host (devices::UsbipRemoteDevice
// from a USB/IP server, devices::UsbredirRemoteDevice from a usbredir host). When the connection
// ends or the host drops the device, in-flight URBs complete with kNoDevice (the device does
// that), the owner hears the device is gone (on_change(nullptr)), and the import is tried again
// with backoff — 100 ms doubling to 2 s — until it succeeds; a failing host is logged once until
// it works again. Owned by the DeviceSource that uses it (RemoteBackend, UsbredirBackend); lives
// on vusbd's loop.
#pragma once

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "vmm-frontend/backends/device_source.h"

namespace vusbd {

template <typename RemoteDevice>
class Reimport {
 public:
  using Options = typename RemoteDevice::Options;
  using ImportCallback = typename RemoteDevice::ImportCallback;
  // One import attempt with these options (their on_disconnect is set here).
  using Attempt = std::function<void(Options, ImportCallback)>;

  Reimport(boost::asio::io_context& io, std::string what, Options options, Attempt attempt,
           DeviceSource::OnChange on_change)
      : io_(io),
        what_(std::move(what)),
        options_(std::move(options)),
        attempt_(std::move(attempt)),
        on_change_(std::move(on_change)),
        retry_(io) {}
  ~Reimport() {
    *alive_ = false;
    retry_.cancel();
    if (device_) device_->close();
  }
  Reimport(const Reimport&) = delete;
  Reimport& operator=(const Reimport&) = delete;

  void start() { import(); }
  RemoteDevice* device() const { return device_.get(); }

 private:
  void import() {
    Options options = options_;
    options.on_disconnect = [this, alive = alive_](const std::string& reason) {
      // Runs inside the device's read or failure path: act on the next loop turn.
      boost::asio::post(io_, [this, alive, reason] {
        if (!*alive || !device_) return;
        spdlog::warn("vusbd: {} is gone ({}); re-importing", what_, reason);
        on_change_(nullptr);
        device_.reset();
        backoff_ = std::chrono::milliseconds(100);
        retry_later();
      });
    };
    attempt_(std::move(options), [this, alive = alive_](auto result) {
      if (!*alive) return;
      if (!result) {
        if (!logged_failure_)
          spdlog::warn("vusbd: cannot import {}: {} (retrying)", what_, result.error().message);
        logged_failure_ = true;
        return retry_later();
      }
      logged_failure_ = false;
      device_ = std::move(*result);
      spdlog::info("vusbd: imported {} ({:04x}:{:04x})", what_,
                   device_->descriptors().device.vendor_id,
                   device_->descriptors().device.product_id);
      on_change_(device_.get());
    });
  }
  void retry_later() {
    retry_.expires_after(backoff_);
    backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(2000));
    retry_.async_wait([this, alive = alive_](boost::system::error_code ec) {
      if (!ec && *alive) import();
    });
  }

  boost::asio::io_context& io_;
  std::string what_;
  Options options_;
  Attempt attempt_;
  DeviceSource::OnChange on_change_;
  std::unique_ptr<RemoteDevice> device_;
  boost::asio::steady_timer retry_;
  std::chrono::milliseconds backoff_{100};
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool logged_failure_ = false;
};

}  // namespace vusbd
