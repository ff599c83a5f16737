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

}  // namespace devices::testing
