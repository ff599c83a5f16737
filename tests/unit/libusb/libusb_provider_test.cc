#include "devices/libusb/libusb_provider.h"

#include <gtest/gtest.h>
#include <libusb.h>

#include <optional>

#include "test_util.h"

namespace devices {
namespace {

using devices::testing::run_until;
using devices::testing::settled_thread_count;
using devices::testing::thread_count_after_reaping;

class RecordingObserver : public usb::DeviceProvider::Observer {
 public:
  void on_device_added(usb::Device&) override { ++added; }
  void on_device_removed(usb::Device&) override { ++removed; }
  int added = 0;
  int removed = 0;
};

// Matches nothing on any host: vendor 0xdead is unassigned and this host has no USB bus anyway.
LibusbProvider::Options nothing_matches() {
  LibusbProvider::Options o;
  o.filters = {DeviceFilter::vid_pid(0xdead, 0xbeef), DeviceFilter::bus_id("250-7.7")};
  return o;
}

TEST(LibusbProvider, FilterMatchingNothingEnumeratesZeroDevices) {
  usb::ManualExecutor loop;
  std::optional<size_t> scanned;
  auto options = nothing_matches();
  options.on_initial_scan_done = [&](size_t n) { scanned = n; };
  auto provider = LibusbProvider::create(loop, std::move(options));
  ASSERT_TRUE(provider.has_value()) << provider.error().message;
  RecordingObserver observer;
  (*provider)->add_observer(&observer);
  ASSERT_TRUE(run_until(loop, [&] { return scanned.has_value(); }));
  EXPECT_EQ(*scanned, 0u);
  EXPECT_TRUE((*provider)->devices().empty());
  EXPECT_TRUE((*provider)->context().running());
  provider->reset();
  EXPECT_EQ(observer.added, 0);
  EXPECT_EQ(observer.removed, 0);
  loop.run_all();  // anything still queued for the provider is a no-op now
}

TEST(LibusbProvider, AllDevicesOnAHostWithoutUsbIsEmptyToo) {
  usb::ManualExecutor loop;
  LibusbProvider::Options options;
  options.filters = {DeviceFilter::all()};
  bool scanned = false;
  options.on_initial_scan_done = [&](size_t) { scanned = true; };
  auto provider = LibusbProvider::create(loop, std::move(options));
  ASSERT_TRUE(provider.has_value());
  ASSERT_TRUE(run_until(loop, [&] { return scanned; }));
  // A host with USB would list its non-hub devices here; hubs are never among them.
  for (usb::Device* d : (*provider)->devices())
    EXPECT_NE(d->descriptors().device.device_class, kHubClass);
}

TEST(LibusbProvider, RescanModeUsesTheCallersTimerAndStopsCleanly) {
  usb::ManualExecutor loop;
  std::vector<std::pair<std::chrono::milliseconds, std::move_only_function<void()>>> timers;
  auto options = nothing_matches();
  options.use_hotplug = false;
  options.rescan_interval = std::chrono::milliseconds(250);
  options.timer = [&](std::chrono::milliseconds delay, std::move_only_function<void()> fn) {
    timers.emplace_back(delay, std::move(fn));
  };
  bool scanned = false;
  options.on_initial_scan_done = [&](size_t n) {
    EXPECT_EQ(n, 0u);
    scanned = true;
  };
  auto provider = LibusbProvider::create(loop, std::move(options));
  ASSERT_TRUE(provider.has_value());
  EXPECT_FALSE((*provider)->uses_hotplug());
  ASSERT_TRUE(run_until(loop, [&] { return scanned; }));
  ASSERT_EQ(timers.size(), 1u);
  EXPECT_EQ(timers[0].first, std::chrono::milliseconds(250));
  // Each tick rescans on the worker and re-arms the timer.
  for (int i = 0; i < 3; ++i) {
    auto fn = std::move(timers.back().second);
    fn();
    loop.run_all();
  }
  EXPECT_EQ(timers.size(), 4u);
  EXPECT_TRUE((*provider)->devices().empty());
  provider->reset();
  // A timer firing after the provider is gone does nothing.
  auto late = std::move(timers.back().second);
  late();
  EXPECT_EQ(timers.size(), 4u);
}

TEST(LibusbProvider, HotplugModeWhenLibusbHasIt) {
  usb::ManualExecutor loop;
  auto provider = LibusbProvider::create(loop, nothing_matches());
  ASSERT_TRUE(provider.has_value());
  EXPECT_EQ((*provider)->uses_hotplug(), libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG) != 0);
}

TEST(LibusbProvider, RepeatedCreateDestroyLeavesNoThreads) {
  usb::ManualExecutor loop;
  { auto warm = LibusbProvider::create(loop, nothing_matches()); }
  loop.run_all();
  const int before = settled_thread_count();
  for (int i = 0; i < 10; ++i) {
    bool scanned = false;
    auto options = nothing_matches();
    options.use_hotplug = (i % 2) == 0;
    options.on_initial_scan_done = [&](size_t) { scanned = true; };
    auto provider = LibusbProvider::create(loop, std::move(options));
    ASSERT_TRUE(provider.has_value());
    // Otherwise destroyed with the initial scan possibly still queued.
    if (i % 3 == 0) {
      ASSERT_TRUE(run_until(loop, [&] { return scanned; }));
    }
  }
  loop.run_all();
  EXPECT_EQ(thread_count_after_reaping(before), before);
}

TEST(LibusbProvider, NoFiltersTakesNothing) {
  usb::ManualExecutor loop;
  bool scanned = false;
  LibusbProvider::Options options;
  options.on_initial_scan_done = [&](size_t n) {
    EXPECT_EQ(n, 0u);
    scanned = true;
  };
  auto provider = LibusbProvider::create(loop, std::move(options));
  ASSERT_TRUE(provider.has_value());
  ASSERT_TRUE(run_until(loop, [&] { return scanned; }));
}

}  // namespace
}  // namespace devices
