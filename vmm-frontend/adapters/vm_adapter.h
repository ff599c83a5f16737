// VmAdapter: one way a VM reaches the devices vusbd gives it — the VM's side of vusbd. Vusbd
// decides which device views a VM gets (AddressMap, SharedDevice); an adapter only presents them
// to the VM in its own terms: a USB/IP server the guest's vhci-hcd imports from
// (UsbipVmAdapter), root-hub ports of the VM's own register set on vusbd's host controller
// (ControllerPortAdapter), and next a usbredir channel QEMU connects to. A new way for a VM to
// connect is one more class here, not a branch in Vusbd.
//
// A VM holds a list of adapters; each device goes to the newest adapter that carries it (a
// register set attached to a VM takes its devices from its USB/IP server and gives them back when
// it is detached). Owned by Vusbd (per VM); lives on vusbd's loop.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "usb/core/device.h"
#include "usb/core/error.h"

namespace vusbd {

class DeviceView;

class VmAdapter {
 public:
  virtual ~VmAdapter() = default;

  // For logs and the API: "usbip", "controller", ...
  virtual std::string_view kind() const = 0;
  // Opens what the VM connects to (a listening socket), before any offer.
  virtual usb::Result<void> start() { return {}; }
  // Closes it: the VM's connections end. Offers already withdrawn.
  virtual void stop() {}
  // Whether `device` goes to the VM through this adapter (default: every device).
  virtual bool carries(const std::string& device) const {
    (void)device;
    return true;
  }
  // The VM may use `view` (of `device`) from now on: export it, plug it in. Returns where the
  // VM finds it ("1-1", "port 3") or why it could not be offered.
  virtual usb::Result<std::string> offer(const std::string& device, DeviceView& view) = 0;
  // `view` goes: its importer sees the device disconnect / the port is unplugged. Returns false
  // if it was not offered here.
  virtual bool withdraw(DeviceView& view) = 0;
  // The VM's bandwidth reservation device onto its bus / off it.
  virtual void place_reservations(usb::Device& device) = 0;
  virtual void unplace_reservations(usb::Device& device) = 0;
  // Adds what the VM's entry in `vusbctl vms` shows of it.
  virtual void describe(nlohmann::json& vm) const { (void)vm; }
};

}  // namespace vusbd
