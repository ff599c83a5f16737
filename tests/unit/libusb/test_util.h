// Helpers for the libusb tests: driving a ManualExecutor until something happens, and counting
// the process's threads to see that nothing is left running.
#pragma once

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "usb/core/executor.h"

namespace devices::testing {

// Runs the loop until `done()` or the deadline; returns done().
template <typename Pred>
bool run_until(usb::ManualExecutor& loop, Pred done,
               std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    if (loop.run_all() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return done();
}

inline int thread_count() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

// A joined thread can still be listed for a moment while the kernel reaps it, so a count taken
// right after a join may be one too high. This returns the count once it has stopped changing
// (three equal reads 5 ms apart, at most 2 s).
inline int settled_thread_count() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  int last = thread_count();
  int same = 0;
  while (same < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const int now = thread_count();
    same = now == last ? same + 1 : 0;
    last = now;
  }
  return last;
}

// Waits (at most 2 s) for the thread count to come down to `expected`; returns the last count.
inline int thread_count_after_reaping(int expected) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  int now = thread_count();
  while (now > expected && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    now = thread_count();
  }
  return now;
}

}  // namespace devices::testing
