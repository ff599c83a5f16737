// Opening and finding Linux input devices (/dev/input/eventN) with libevdev — shared by the
// sensor source and the input source. Plain functions; the caller owns what they return.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "usb/core/error.h"

struct libevdev;

namespace devices {

struct OpenedEvdev {
  int fd = -1;              // non-blocking, close-on-exec
  libevdev* dev = nullptr;  // libevdev_free() it; closing fd is the caller's
};

// Opens `path` read-only, or read-write when `writable` (falling back to read-only), and reads
// its capabilities. Errors name the path.
usb::Result<OpenedEvdev> open_evdev(const std::string& path, bool writable = false);

// Every /dev/input/event* that `wanted` accepts, sorted.
std::vector<std::string> find_evdev(const std::function<bool(const libevdev*)>& wanted);

}  // namespace devices
