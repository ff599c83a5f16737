// run_device_host(): the body of a device process (the vusb-devhost program). It makes one
// emulated device, offers it as bus id 1-1 to the parent over the already connected stream `fd`
// (the USB/IP protocol, server side — the parent imports it like any remote device), restricts
// itself with seccomp (seccomp_policy.h) once that is set up, and serves until the parent hangs
// up. Everything runs on one Asio loop in one thread.
#pragma once

#include <string>

#include "devices/emulated/emulated_factory.h"

namespace devices {

struct DeviceHostOptions {
  EmulatedSpec device;
  int fd = 3;                     // the connected stream to the parent
  bool seccomp = true;            // false only for debugging a device model
  bool seccomp_selftest = false;  // after the filter: try a forbidden call (the process dies)
};

// Returns the process exit status: 0 when the parent hung up, 2 on a setup error (logged).
int run_device_host(const DeviceHostOptions& options);

}  // namespace devices
