// Which real devices a LibusbProvider takes, and how a device is named: pure functions, no
// libusb calls, so they are unit tested without a USB bus.
//   "046d:c52b"  vendor:product, 1-4 hex digits each
//   "1-1.2"      Linux bus id: bus number, '-', port numbers from the root hub joined by '.'
//   "all"        every device except hubs
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "usb/core/error.h"

namespace devices {

// What a filter looks at; read from libusb's cached device descriptor and port path.
struct DeviceIdentity {
  uint16_t vendor_id = 0;
  uint16_t product_id = 0;
  uint8_t device_class = 0;
  std::string busid;
};

// USB hub class (USB 2.0 11.23.1). Hubs are never exported: their ports belong to the host.
constexpr uint8_t kHubClass = 0x09;

struct DeviceFilter {
  enum class Kind : uint8_t { kAll, kVidPid, kBusid };
  Kind kind = Kind::kAll;
  uint16_t vendor_id = 0;
  uint16_t product_id = 0;
  std::string busid;  // canonical form, e.g. "1-1.2"

  static DeviceFilter all() { return {}; }
  static DeviceFilter vid_pid(uint16_t vid, uint16_t pid) { return {Kind::kVidPid, vid, pid, {}}; }
  static DeviceFilter bus_id(std::string busid) { return {Kind::kBusid, 0, 0, std::move(busid)}; }

  // Hubs never match, whatever the filter.
  bool matches(const DeviceIdentity& device) const;
  std::string to_string() const;
  friend bool operator==(const DeviceFilter&, const DeviceFilter&) = default;
};

// Parses "VID:PID", "B-P.P..." or "all" (what `vusb-stub --libusb` takes). Errors are
// kInvalidArgument with a message naming the bad part.
usb::Result<DeviceFilter> parse_device_filter(std::string_view spec);

// Linux-style bus id from a bus number and the port numbers from the root hub down
// (libusb_get_port_numbers): (1, {1, 4, 2}) -> "1-1.4.2". A root hub (no ports) is "usb1".
std::string format_busid(uint8_t bus, std::span<const uint8_t> ports);

}  // namespace devices
