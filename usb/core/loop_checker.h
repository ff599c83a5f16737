// LoopChecker: remembers the thread an object lives on and asserts it in debug builds (STYLE 7).
// Objects bind lazily on first use, so they may be constructed on another thread.
#pragma once

#include <cassert>
#include <thread>

namespace usb {

class LoopChecker {
 public:
  void check() const {
#ifndef NDEBUG
    if (owner_ == std::thread::id{}) owner_ = std::this_thread::get_id();
    assert(owner_ == std::this_thread::get_id() && "called off the object's loop");
#endif
  }
  void detach() {
    owner_ = std::thread::id{};
  }

 private:
  mutable std::thread::id owner_{};
};

}  // namespace usb
