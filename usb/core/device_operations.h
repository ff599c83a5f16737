// Standard requests that change a device's state — SET_CONFIGURATION, SET_INTERFACE,
// CLEAR_FEATURE(ENDPOINT_HALT) and a hub's SET_FEATURE(PORT_RESET) — which whoever plays the host
// (a USB/IP server, a controller model) performs through the usb::Device operations instead of
// sending them as raw control transfers (libusb, for one, must be told to set a configuration,
// PROTOCOLS.md). Devices that want them in order with their other ep0 requests say so with
// performs_standard_requests(). Pure functions over the caller's device, on its loop.
#pragma once

#include "usb/core/device.h"
#include "usb/core/setup.h"
#include "usb/core/transfer.h"

namespace usb {

// True for the four requests above.
bool is_device_operation(const SetupPacket& setup);

// Sends `t` to `device`: a device operation is performed and `t` completed with its status (0
// bytes) without being submitted, unless the device performs standard requests itself; anything
// else is submitted. `t` may complete inline.
void submit_or_perform(Device& device, Transfer& t);

}  // namespace usb
