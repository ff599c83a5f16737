// DeviceSource: where one of vusbd's devices comes from — imported from a USB/IP server
// (RemoteBackend) or from a usbredir host such as usbredirect (UsbredirBackend), a device of this
// host through libusb (LibusbBackend), emulated in vusbd's own process (EmulatedSource) or in a
// device process of its own (ProcessSource). A source produces
// at most one usb::Device at a time and tells its owner when it appears (on_change(device)) and
// when it goes (on_change(nullptr), after the device's in-flight URBs completed with kNoDevice);
// getting it back — reconnecting, re-opening, restarting a process — is the source's own
// business. A new kind of device source is one more class here.
//
// (A whole USB/IP server, "usbip://HOST:PORT/*", is not a source but a discovery of sources:
// RemoteDiscovery.) Owned by Vusbd (one per device); lives on vusbd's loop.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "usb/core/device.h"
#include "usb/core/error.h"

namespace vusbd {

class DeviceSource {
 public:
  // Called on the loop with the device once it is there, and with nullptr when it goes away.
  using OnChange = std::function<void(usb::Device*)>;

  virtual ~DeviceSource() = default;
  // Starts producing the device. Fails only when it never can (libusb cannot initialise, an
  // emulated device's options are wrong); a device that is not there yet is not an error.
  virtual usb::Result<void> start() = 0;
  // The device now, if any.
  virtual usb::Device* device() const = 0;
  // "usbip://HOST:PORT/BUSID", "usbredir://HOST:PORT", "libusb:VID:PID", ...
  virtual std::string describe() const = 0;
  // Adds what `vusbctl stats` shows of the source to the device's entry.
  virtual void add_stats(nlohmann::json& device) const { (void)device; }
};

}  // namespace vusbd
