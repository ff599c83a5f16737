// VusbdConfig: vusbd's TOML configuration — the VMs (each with its own USB/IP listen address)
// and the devices (a source, a sharing mode, the VMs that may use it).
//
//   [[vm]]      name = "vm1"   listen = "127.0.0.1:41001"
//   [[device]]  name = "gz"    source = "usbip://127.0.0.1:3240/1-1" | "emulated:gadget-zero"
//               mode = "shared" | "exclusive"     vms = ["vm1", "vm2"]
#pragma once

#include <string>
#include <vector>

#include "usb/core/error.h"
#include "usb/net/address.h"

namespace vusbd {

struct VmConfig {
  std::string name;
  usb::net::HostPort listen;
};

struct DeviceConfig {
  std::string name;
  std::string source;  // as written
  enum class Kind { kUsbip, kEmulated } kind = Kind::kUsbip;
  usb::net::HostPort server;  // kUsbip
  std::string busid;          // kUsbip
  std::string emulated;       // kEmulated: "gadget-zero"
  std::string mode = "shared";
  std::vector<std::string> vms;
};

struct VusbdConfig {
  std::vector<VmConfig> vms;
  std::vector<DeviceConfig> devices;
};

// Parses "usbip://HOST:PORT/BUSID" or "emulated:gadget-zero" into `d`.
usb::Result<void> parse_source(const std::string& source, DeviceConfig& d);
usb::Result<VusbdConfig> load_config(const std::string& path);
// Names unique, every device's VMs exist, modes known.
usb::Result<void> validate(const VusbdConfig& config);

}  // namespace vusbd
