// The vusbd both control API fuzzers (fuzz_control_routes, fuzz_http) start from: vm1 and vm2,
// and a known device, an emulated Gadget Zero "gz" given to vm1, so attach / detach / mode paths
// are reachable from one request. Owned by the fuzz input's run; on its loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstdlib>

#include "vmm-frontend/vusbd.h"

namespace fuzzing {

inline vusbd::VusbdConfig two_vms() {
  vusbd::VusbdConfig config;
  config.vms = {{"vm1", {"127.0.0.1", 0}}, {"vm2", {"127.0.0.1", 0}}};
  return config;
}

struct Daemon {
  explicit Daemon(boost::asio::io_context& io) : vusbd(io, two_vms()) {
    vusbd::DeviceConfig gz;
    gz.name = "gz";
    gz.source = "emulated:gadget-zero";
    gz.vms = {"vm1"};
    if (!vusbd.add_device(gz)) __builtin_trap();
  }
  vusbd::Vusbd vusbd;
};

}  // namespace fuzzing
