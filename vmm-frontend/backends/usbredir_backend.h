// UsbredirBackend: the device a usbredir host serves — Debian's `usbredirect --device VID:PID --as
// HOST:PORT`, or anything speaking usbredirhost's side — imported as QEMU's usb-redir would
// (devices::UsbredirRemoteDevice), kept imported: when the connection ends or the host
// disconnects the device, in-flight URBs complete with kNoDevice, the owner is told the device is
// gone, and the import is retried with backoff (100 ms doubling to 2 s) until it succeeds.
// (usbredirect itself exits when its connection ends; whoever runs it restarts it.) Owned by
// vusbd's registry; lives on vusbd's loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "devices/remote/usbredir_remote_device.h"
#include "usb/net/endpoint.h"
#include "vmm-frontend/backends/device_source.h"

namespace vusbd {

class UsbredirBackend final : public DeviceSource {
 public:
  UsbredirBackend(boost::asio::io_context& io, usb::net::Endpoint host, OnChange on_change);
  ~UsbredirBackend() override;

  usb::Result<void> start() override;
  usb::Device* device() const override { return device_.get(); }
  std::string describe() const override;
  void add_stats(nlohmann::json& device) const override;

 private:
  void import();
  void retry_later();

  boost::asio::io_context& io_;
  usb::net::Endpoint host_;
  OnChange on_change_;
  std::unique_ptr<devices::UsbredirRemoteDevice> device_;
  boost::asio::steady_timer retry_;
  std::chrono::milliseconds backoff_{100};
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool logged_failure_ = false;
};

}  // namespace vusbd
