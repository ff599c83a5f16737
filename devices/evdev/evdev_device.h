// Opening, finding and reading Linux input devices (/dev/input/eventN) with libevdev — shared by
// the sensor source and the input source.
#pragma once

#include <linux/input.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <functional>
#include <memory>
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

// EvdevReader: reads one opened input device on the loop's reactor (the descriptor is
// non-blocking; evdev reads never block, so no worker thread). Every event goes to on_event —
// after SYN_DROPPED too: libevdev then replays the differences between what was delivered and the
// device's state now, ending with SYN_REPORT, so a consumer that handles events keeps a correct
// state without a resync path of its own. A read error (ENODEV: the device went away) goes to
// on_error once and reading stops; on_error may destroy the reader.
//
// Owned by a source; lives on its loop. Owns the descriptor and the libevdev handle.
class EvdevReader {
 public:
  EvdevReader(boost::asio::io_context& io, OpenedEvdev opened, std::string label);
  ~EvdevReader();
  EvdevReader(const EvdevReader&) = delete;
  EvdevReader& operator=(const EvdevReader&) = delete;

  libevdev* dev() const { return dev_; }
  const std::string& name() const { return name_; }  // the device's name
  void start();

  std::function<void(const input_event&)> on_event;
  std::function<void(int error)> on_error;  // a negative errno

 private:
  void wait();
  void drain();

  boost::asio::posix::stream_descriptor fd_;
  libevdev* dev_;
  std::string label_;
  std::string name_;
  bool failed_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace devices
