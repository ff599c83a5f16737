// Confinement of a device process before its seccomp filter goes on: resource limits (address
// space, descriptors, no core dumps) and, when it was started as root, the switch to an
// unprivileged user (nobody) with no supplementary groups. Without root there is no identity to
// drop: the process already runs as vusbd's user, and seccomp is what keeps it from the file
// system and the network. Called once by run_device_host on the process's only thread.
#pragma once

#include <string>

#include "usb/core/error.h"

namespace devices {

struct Confinement {
  size_t address_space = size_t{1} << 30;  // RLIMIT_AS (skipped in sanitizer builds)
  size_t descriptors = 32;                 // RLIMIT_NOFILE
};

// What it did, for the log line ("uid 65534, RLIMIT_AS 1024 MiB, RLIMIT_NOFILE 32").
usb::Result<std::string> confine_device_process(const Confinement& c = {});

}  // namespace devices
