#include "devices/libusb/libusb_context.h"

#include <gtest/gtest.h>
#include <libusb.h>

#include <chrono>

#include "test_util.h"

namespace devices {
namespace {

using devices::testing::run_until;
using devices::testing::settled_thread_count;
using devices::testing::thread_count_after_reaping;
using std::chrono::steady_clock;

TEST(LibusbContext, StartsItsEventThreadAndStopsPromptly) {
  usb::ManualExecutor loop;
  auto ctx = LibusbContext::create(loop);
  ASSERT_TRUE(ctx.has_value()) << ctx.error().message;
  EXPECT_TRUE((*ctx)->running());
  EXPECT_NE((*ctx)->get(), nullptr);
  EXPECT_EQ(&(*ctx)->loop(), &loop);
  const auto start = steady_clock::now();
  (*ctx)->stop();
  // Woken by libusb_interrupt_event_handler, not by the 1 s event timeout.
  EXPECT_LT(steady_clock::now() - start, std::chrono::milliseconds(500));
  EXPECT_FALSE((*ctx)->running());
  (*ctx)->stop();                 // idempotent
  EXPECT_EQ(loop.run_all(), 0u);  // nothing was posted
}

TEST(LibusbContext, StopsWhileTheThreadIsInsideEventHandling) {
  usb::ManualExecutor loop;
  auto ctx = LibusbContext::create(loop);
  ASSERT_TRUE(ctx.has_value());
  // Let the thread block in libusb_handle_events for a while first.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto start = steady_clock::now();
  ctx->reset();  // destructor: stop + libusb_exit
  EXPECT_LT(steady_clock::now() - start, std::chrono::milliseconds(500));
}

TEST(LibusbContext, RepeatedStartStopLeavesNoThreads) {
  usb::ManualExecutor loop;
  {
    // libusb keeps process-wide state (the default context, its hotplug monitor) after the
    // first init; measure from there.
    auto warm = LibusbContext::create(loop);
    ASSERT_TRUE(warm.has_value());
  }
  const int before = settled_thread_count();
  const auto start = steady_clock::now();
  for (int i = 0; i < 25; ++i) {
    auto ctx = LibusbContext::create(loop);
    ASSERT_TRUE(ctx.has_value()) << ctx.error().message;
    if (i % 2) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(thread_count_after_reaping(before), before);
}

TEST(LibusbContext, TwoContextsAtOnce) {
  usb::ManualExecutor loop;
  auto a = LibusbContext::create(loop);
  auto b = LibusbContext::create(loop);
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(b.has_value());
  EXPECT_NE((*a)->get(), (*b)->get());
  (*a)->stop();
  EXPECT_TRUE((*b)->running());
}

TEST(LibusbContext, WithLogLevelOption) {
  usb::ManualExecutor loop;
  auto ctx = LibusbContext::create(loop, {.log_level = LIBUSB_LOG_LEVEL_ERROR});
  ASSERT_TRUE(ctx.has_value());
}

}  // namespace
}  // namespace devices
