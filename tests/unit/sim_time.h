// SimTime: simulated time for tests of devices that take an injected timer and clock (the UVC
// camera, the HID sensor hub, SharedDevice). Timers run in due order as the test advances time;
// a timer armed by a running timer runs in the same advance() when it is due.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>

namespace vusb::testing {

class SimTime {
 public:
  using Clock = std::chrono::steady_clock;
  Clock::time_point now() const { return now_; }
  void arm(std::chrono::microseconds delay, std::move_only_function<void()> fn) {
    timers_.emplace(now_ + delay, std::move(fn));
  }
  void advance(std::chrono::nanoseconds by) {
    const auto until = now_ + by;
    while (!timers_.empty() && timers_.begin()->first <= until) {
      auto node = timers_.extract(timers_.begin());
      now_ = std::max(now_, node.key());
      node.mapped()();
    }
    now_ = until;
  }
  size_t armed() const { return timers_.size(); }

 private:
  Clock::time_point now_{std::chrono::seconds(1000)};
  std::multimap<Clock::time_point, std::move_only_function<void()>> timers_;
};

}  // namespace vusb::testing
