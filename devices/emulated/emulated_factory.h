// make_emulated(): the one place that turns "TYPE" + "key=value,..." options into an emulated
// device — used by vusb-stub's --emulate, vusbd's "emulated:TYPE?..." sources and the device
// process host. Known types: gadget-zero, uvc-camera.
//
// The device comes back configured (configuration index 0 selected), as a Linux host configures
// a device before usbip-host exports it, and with its timers wired to `timer` / `clock` (the
// owner's loop). It lives on that loop.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "usb/core/device.h"
#include "usb/core/error.h"

namespace devices {

struct EmulatedSpec {
  std::string type;     // "gadget-zero" or "uvc-camera"
  std::string options;  // the type's own "key=value,..." options
  usb::DeviceLocation location{};
};

using EmulatedTimer =
    std::function<void(std::chrono::microseconds, std::move_only_function<void()>)>;
using EmulatedClock = std::function<std::chrono::steady_clock::time_point()>;

// "gadget-zero, uvc-camera", for messages.
std::string_view known_emulated_types();
// Checks type and options without making anything.
usb::Result<void> validate_emulated(std::string_view type, std::string_view options);
usb::Result<std::unique_ptr<usb::Device>> make_emulated(const EmulatedSpec& spec,
                                                        EmulatedTimer timer, EmulatedClock clock);

}  // namespace devices
