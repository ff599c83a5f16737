// UsbredirBackend: the device a usbredir host serves — Debian's `usbredirect --device VID:PID --as
// HOST:PORT`, or anything speaking usbredirhost's side — imported as QEMU's usb-redir would
// (devices::UsbredirRemoteDevice), kept imported by Reimport: re-imported with backoff when the
// connection ends or the host disconnects the device. (usbredirect itself exits when its
// connection ends; whoever runs it restarts it.) Owned by vusbd's registry; lives on vusbd's
// loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>

#include "devices/remote/usbredir_remote_device.h"
#include "usb/net/endpoint.h"
#include "vmm-frontend/backends/device_source.h"
#include "vmm-frontend/backends/reimport.h"

namespace vusbd {

class UsbredirBackend final : public DeviceSource {
 public:
  UsbredirBackend(boost::asio::io_context& io, usb::net::Endpoint host, OnChange on_change);

  usb::Result<void> start() override;
  usb::Device* device() const override { return reimport_.device(); }
  std::string describe() const override;
  void add_stats(nlohmann::json& device) const override;

 private:
  usb::net::Endpoint host_;
  Reimport<devices::UsbredirRemoteDevice> reimport_;
};

}  // namespace vusbd
