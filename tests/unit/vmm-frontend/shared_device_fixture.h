// Shared fixtures for the tests of SharedDevice and its parts (config_arbiter_test.cc,
// control_lock_test.cc, fair_admission_test.cc, iso_fanout_test.cc, timeslice_policy_test.cc,
// shared_device_test.cc): a FakeDevice backend shaped like Gadget Zero, timers that fire when the
// test says so, and two VMs' views.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "usb/core/fake_device.h"
#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd::sharing_testing {

using usb::Status;
using usb::Transfer;

// Gadget Zero's shape plus alt 2: 0x81 with another packet size, incompatible with alt 0.
inline usb::DescriptorSet gz_like() {
  usb::DescriptorSet d = usb::testing::gadget_zero_like_descriptors();
  usb::InterfaceDescriptor alt2 = d.configurations[0].interfaces[0];
  alt2.alternate = 2;
  alt2.endpoints[0].max_packet_size = 64;
  d.configurations[0].interfaces.push_back(alt2);
  return d;
}

// Timers that fire when the test says so.
struct ManualTimers {
  std::vector<std::move_only_function<void()>> pending;
  SharedDevice::Timer timer() {
    return [this](std::chrono::milliseconds, std::move_only_function<void()> fn) {
      pending.push_back(std::move(fn));
    };
  }
  void fire_all() {
    auto fns = std::move(pending);
    pending.clear();
    for (auto& f : fns) f();
  }
};

struct Outcome {
  int calls = 0;
  Status status = Status::kIoError;
  size_t actual = 0;
};

inline std::unique_ptr<Transfer> control(const usb::SetupPacket& s, Outcome& o,
                                         bool short_not_ok = false) {
  auto t = Transfer::control(s.direction() == usb::Direction::kIn ? 0x80 : 0x00, s);
  t->flags.short_not_ok = short_not_ok;
  t->set_completion([&o](Transfer& x) {
    ++o.calls;
    o.status = x.status();
    o.actual = x.actual_length();
  });
  return t;
}

inline std::unique_ptr<Transfer> bulk(uint8_t ep, size_t len, Outcome& o) {
  auto t = std::make_unique<Transfer>(ep, usb::TransferType::kBulk, len);
  t->set_completion([&o](Transfer& x) {
    ++o.calls;
    o.status = x.status();
    o.actual = x.actual_length();
  });
  return t;
}

// Shared mode, two VMs (vmA, vmB) holding the device.
class SharedDeviceTest : public ::testing::Test {
 protected:
  SharedDeviceTest()
      : backend(gz_like()),
        shared("gz", SharedDevice::Mode::kShared, timers.timer()),
        a(shared.view("vmA", {.busid = "1-1", .path = {}})),
        b(shared.view("vmB", {.busid = "1-1", .path = {}})) {
    shared.set_backend(&backend);
    EXPECT_TRUE(a.try_acquire());
    EXPECT_TRUE(b.try_acquire());
  }
  ManualTimers timers;
  usb::testing::FakeDevice backend;
  SharedDevice shared;
  DeviceView& a;
  DeviceView& b;
};

// Timeslice mode with a slice of 0 (every holder's turn is over as soon as someone waits) or of
// an hour (turns end only when the holder is idle): no test here depends on the clock.
class TimesliceTest : public ::testing::Test {
 protected:
  explicit TimesliceTest(std::chrono::milliseconds slice = std::chrono::milliseconds(0))
      : backend(gz_like()),
        shared("gz", SharedDevice::Mode::kTimeslice, timers.timer(), std::chrono::milliseconds(200),
               slice),
        a(shared.view("vmA", {.busid = "1-1", .path = {}})),
        b(shared.view("vmB", {.busid = "1-1", .path = {}})) {
    shared.set_backend(&backend);
    EXPECT_TRUE(a.try_acquire());
    EXPECT_TRUE(b.try_acquire()) << "timeslice: every VM imports it";
  }
  ManualTimers timers;
  usb::testing::FakeDevice backend;
  SharedDevice shared;
  DeviceView& a;
  DeviceView& b;
};

}  // namespace vusbd::sharing_testing
