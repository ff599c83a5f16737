// asio_timer(io): "run fn on the loop after delay" for modules that take a timer function
// instead of depending on Asio (SharedDevice, LibusbProvider). Each call arms its own
// steady_timer, kept alive by its handler; fn runs on the loop unless the io_context stops.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>

namespace usb::net {

inline auto asio_timer(boost::asio::io_context& io) {
  // Generic in the delay's duration type: converts to a millisecond or a microsecond timer
  // function.
  return [&io](auto delay, std::move_only_function<void()> fn) {
    auto timer = std::make_shared<boost::asio::steady_timer>(io, delay);
    // Asio handlers must be copy-constructible in Boost 1.74: box the move-only function.
    auto boxed = std::make_shared<std::move_only_function<void()>>(std::move(fn));
    timer->async_wait([timer, boxed](boost::system::error_code ec) {
      if (!ec) (*boxed)();
    });
  };
}

}  // namespace usb::net
