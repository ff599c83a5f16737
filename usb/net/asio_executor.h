// AsioExecutor: adapts a Boost.Asio io_context (a daemon's loop) to usb::Executor, so modules
// below the daemons can post work to the loop without depending on Asio.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <memory>

#include "usb/core/executor.h"

namespace usb::net {

class AsioExecutor : public Executor {
 public:
  explicit AsioExecutor(boost::asio::io_context& io) : io_(io) {}
  void post(std::move_only_function<void()> fn) override {
    // Asio handlers must be copy-constructible in Boost 1.74: box the move-only function.
    auto boxed = std::make_shared<std::move_only_function<void()>>(std::move(fn));
    boost::asio::post(io_, [boxed] { (*boxed)(); });
  }

 private:
  boost::asio::io_context& io_;
};

}  // namespace usb::net
