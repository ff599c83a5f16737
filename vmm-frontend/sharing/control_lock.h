// ControlLock: serializes class / vendor control transactions between the VMs of a SharedDevice
// (shared and exclusive modes). A VM's class/vendor OUT opens a transaction that its next
// class/vendor IN closes (command / response pairs such as Gadget Zero's 0x5b / 0x5c: another
// VM's request in between would read or overwrite the first VM's state in the device). Other
// VMs' class/vendor requests wait — parked, cancellable — not fail, meanwhile. A transaction
// with no IN closes after the timeout (a VM that never reads back must not block the others).
// A failed OUT never opened a transaction the device remembers, so it closes at once.
//
// Timeslice mode does not use it: there a class/vendor request is part of its VM's turn
// (TimeSlicePolicy keeps the turn across an open transaction instead).
//
// Owned by SharedDevice; lives on vusbd's loop; its timer is SharedDevice's injected Timer.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>

#include "usb/core/transfer.h"

namespace vusbd {

class DeviceView;
class SharedDevice;

class ControlLock {
 public:
  ControlLock(SharedDevice& shared, std::chrono::milliseconds timeout);

  // How long an OUT keeps its transaction open without its IN.
  std::chrono::milliseconds timeout() const { return timeout_; }
  // The view whose transaction is open, if any.
  const DeviceView* owner() const { return owner_; }
  // A class/vendor request of `view`: to the device now, or parked until the open transaction of
  // another VM closes.
  void submit(DeviceView& view, usb::Transfer& t);
  // Closes the open transaction (its IN was answered elsewhere, its VM left, it timed out) and
  // sends the waiting requests on.
  void release();
  // `t` was waiting: it completes with kCancelled. False when `t` is not waiting here.
  bool cancel(usb::Transfer& t);
  // The device is gone (or the SharedDevice is): no transaction is open and every waiting
  // request completes with `status`.
  void drop(usb::Status status);

 private:
  struct Waiting {
    DeviceView* view;
    usb::Transfer* transfer;
  };
  void on_done(DeviceView& view, const usb::Transfer& t, uint64_t generation);

  SharedDevice& shared_;
  std::chrono::milliseconds timeout_;
  DeviceView* owner_ = nullptr;
  // Bumped whenever a transaction closes: completions and timers of an older one are ignored.
  uint64_t generation_ = 0;
  std::deque<Waiting> waiting_;
};

}  // namespace vusbd
