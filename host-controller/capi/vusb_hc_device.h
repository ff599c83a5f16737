// The C API's seam for devices (C++ only): what puts a usb::Device someone else made on a VM's
// root-hub port. The controller's C API (vusb_hc.cc) knows no device types; the library that
// makes devices by name (vusb_hc_emulated.cc: vusb_hc_attach_emulated) or a C++ VMM with its own
// devices hands them over here. Same thread rules as vusb_hc.h.
#pragma once

#include <cstdint>
#include <memory>

#include "host-controller/capi/vusb_hc.h"
#include "usb/core/device.h"

// Puts `device` on root-hub port `port` (1-based) of the VM; the C API owns it until
// vusb_hc_detach() or the VM goes. 0, -EINVAL (no such VM, no device), -EBUSY (the port is taken
// or unsuitable; the device is dropped).
int vusb_hc_attach_device(vusb_hc* hc, int vm, uint32_t port, std::unique_ptr<usb::Device> device);
