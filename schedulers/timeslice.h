// TimeSlicer: whose turn it is on a device that serves one VM at a time (seed 002's time-sliced
// sharing; vusbd's `timeslice` mode). Pure decisions on the times the caller passes in — no I/O,
// no clock of its own: the caller holds URBs, quiesces the device and starts the next VM's URBs.
//  - A VM with work gets the device at once when nobody holds it.
//  - Others wait in arrival order, so a VM waits at most one slice per VM ahead of it.
//  - The holder keeps the device until its slice is over and someone waits, or until it is idle
//    (nothing in flight, nothing held) while someone waits.
// Owned by the SharedDevice it decides for; lives on that device's loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>

namespace sched {

class TimeSlicer {
 public:
  using Clock = std::chrono::steady_clock;

  explicit TimeSlicer(std::chrono::milliseconds slice) : slice_(slice) {}

  // `vm` has a transfer for the device. true: it holds the device (it did, or nobody did and now
  // it does) and may send it. false: someone else holds it; `vm` waits in line (once).
  bool request(const std::string& vm, Clock::time_point now);
  // Whether the holder should hand the device over now.
  bool should_switch(Clock::time_point now, bool holder_idle) const;
  // Ends the holder's turn (the caller has quiesced the device): the first VM in line holds it
  // now and is returned; nullopt when nobody waits (the device is free).
  std::optional<std::string> next(Clock::time_point now);
  // `vm` is gone: out of line; if it held the device, the device is free.
  void forget(const std::string& vm);

  const std::optional<std::string>& holder() const { return holder_; }
  Clock::time_point slice_end() const { return turn_start_ + slice_; }
  const std::deque<std::string>& waiting() const { return waiting_; }
  std::chrono::milliseconds slice() const { return slice_; }
  uint64_t switches() const { return switches_; }

 private:
  std::chrono::milliseconds slice_;
  std::optional<std::string> holder_;
  Clock::time_point turn_start_{};
  std::deque<std::string> waiting_;
  uint64_t switches_ = 0;
};

}  // namespace sched
