// run_until: runs a test's asio loop in short slices until `pred` holds or `ms` pass; returns
// pred(). For tests whose code under test and its peers share one io_context on the test thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>

namespace usb::testing {

template <typename Pred>
bool run_until(boost::asio::io_context& io, Pred pred, int ms = 5000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!pred() && std::chrono::steady_clock::now() < deadline) {
    io.run_for(std::chrono::milliseconds(2));
    if (io.stopped()) io.restart();
  }
  return pred();
}

}  // namespace usb::testing
