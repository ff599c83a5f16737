// UsbredirAttachment: one device of a VM reached through QEMU's usb-redir — where QEMU's chardev
// is, and who connects. Part of a VM's configuration ([[vm]] usbredir = [...]); used by
// UsbredirVmAdapter. Plain data.
#pragma once

#include <string>

#include "usb/net/endpoint.h"

namespace vusbd {

struct UsbredirAttachment {
  std::string device;
  usb::net::Endpoint endpoint;
  bool connect = false;  // vusbd connects to QEMU (QEMU listens); else vusbd listens
  bool operator==(const UsbredirAttachment&) const = default;
};

}  // namespace vusbd
