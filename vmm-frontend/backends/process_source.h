// ProcessSource: an emulated device run in a process of its own (vusb-devhost, seccomp-confined;
// devices::DeviceProcess restarts it when it dies) and reached over a socketpair; `vusbctl stats`
// shows the child's pid, starts and how the last one ended. Owned by Vusbd; lives on vusbd's loop.
#pragma once

#include <boost/asio/io_context.hpp>

#include "devices/process/device_process.h"
#include "vmm-frontend/backends/device_source.h"

namespace vusbd {

class ProcessSource final : public DeviceSource {
 public:
  ProcessSource(boost::asio::io_context& io, devices::DeviceProcess::Options options,
                OnChange on_change)
      : process_(io, std::move(options), std::move(on_change)) {}

  usb::Result<void> start() override {
    process_.start();
    return {};
  }
  usb::Device* device() const override { return process_.device(); }
  std::string describe() const override { return process_.describe(); }
  void add_stats(nlohmann::json& device) const override;

 private:
  devices::DeviceProcess process_;
};

}  // namespace vusbd
