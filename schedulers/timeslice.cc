#include "schedulers/timeslice.h"

#include <algorithm>

namespace sched {

bool TimeSlicer::request(const std::string& vm, Clock::time_point now) {
  if (holder_ == vm) return true;
  if (!holder_) {
    holder_ = vm;
    turn_start_ = now;
    std::erase(waiting_, vm);
    return true;
  }
  if (std::find(waiting_.begin(), waiting_.end(), vm) == waiting_.end()) waiting_.push_back(vm);
  return false;
}

bool TimeSlicer::should_switch(Clock::time_point now, bool holder_idle) const {
  if (!holder_ || waiting_.empty()) return false;
  return holder_idle || now >= slice_end();
}

std::optional<std::string> TimeSlicer::next(Clock::time_point now) {
  holder_.reset();
  if (waiting_.empty()) return std::nullopt;
  holder_ = waiting_.front();
  waiting_.pop_front();
  turn_start_ = now;
  ++switches_;
  return holder_;
}

void TimeSlicer::forget(const std::string& vm) {
  std::erase(waiting_, vm);
  if (holder_ == vm) holder_.reset();
}

}  // namespace sched
