// usb::Executor: how code running off a loop hands work back to it (STYLE 7). The daemons adapt
// their Asio io_context to it (usb/net/asio_executor.h); tests use ManualExecutor.
#pragma once

#include <deque>
#include <functional>
#include <mutex>

namespace usb {

class Executor {
 public:
  virtual ~Executor() = default;
  // Thread-safe. Runs fn later on the executor's loop, never inline.
  virtual void post(std::move_only_function<void()> fn) = 0;
};

// Test executor: queues work until the test calls run_all(). Thread-safe post().
class ManualExecutor : public Executor {
 public:
  void post(std::move_only_function<void()> fn) override {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(fn));
  }
  // Runs queued work (and work it posts) until the queue is empty; returns how many ran.
  size_t run_all() {
    size_t n = 0;
    for (;;) {
      std::move_only_function<void()> fn;
      {
        std::lock_guard lock(mu_);
        if (queue_.empty()) return n;
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
      ++n;
    }
  }

 private:
  std::mutex mu_;
  std::deque<std::move_only_function<void()>> queue_;
};

}  // namespace usb
