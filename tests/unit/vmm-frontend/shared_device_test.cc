// SharedDevice / DeviceView against a FakeDevice backend, on simulated time (a manual timer): the
// view's cache, its serial control pipe, per-VM halts, completions, unplug, exclusive mode. The
// parts have their own tests (config_arbiter_test.cc, control_lock_test.cc, ...).
#include <gtest/gtest.h>

#include "tests/unit/vmm-frontend/shared_device_fixture.h"

namespace vusbd {
namespace {

using namespace sharing_testing;  // NOLINT(google-build-using-namespace): the shared fixtures
using usb::Status;
using usb::Transfer;

TEST_F(SharedDeviceTest, DescriptorsAndStatusComeFromTheCache) {
  Outcome o;
  auto t = control({0x80, usb::request::kGetDescriptor, 0x0100, 0, 18}, o);
  a.submit(*t);
  EXPECT_EQ(o.status, Status::kOk);
  EXPECT_EQ(o.actual, 18u);
  EXPECT_EQ(t->data()[8], 0x25);  // idVendor low byte
  auto cfg = control({0x80, usb::request::kGetDescriptor, 0x0200, 0, 9}, o);
  a.submit(*cfg);
  EXPECT_EQ(o.actual, 9u) << "short read of the configuration header";
  auto st = control({0x80, usb::request::kGetStatus, 0, 0, 2}, o);
  a.submit(*st);
  EXPECT_EQ(st->data()[0], 1) << "self-powered bit from bmAttributes";
  auto gc = control({0x80, usb::request::kGetConfiguration, 0, 0, 1}, o);
  b.submit(*gc);
  EXPECT_EQ(gc->data()[0], 3);
  EXPECT_TRUE(backend.pending.empty()) << "no round trip";
  EXPECT_EQ(a.stats().cache_hits, 3u);
  EXPECT_EQ(b.stats().cache_hits, 1u);
}

TEST_F(SharedDeviceTest, CachedShortAnswerWithShortNotOkIsAnError) {
  Outcome o;
  auto t = control({0x80, usb::request::kGetDescriptor, 0x0100, 0, 64}, o, /*short_not_ok=*/true);
  a.submit(*t);
  EXPECT_EQ(o.status, Status::kShortPacket);
  EXPECT_EQ(o.actual, 18u);
}

TEST_F(SharedDeviceTest, UncachedRequestsGoToTheDevice) {
  Outcome o;
  auto t = control({0x80, usb::request::kGetDescriptor, 0x0301, 0x0409, 255}, o);  // a string
  a.submit(*t);
  ASSERT_EQ(backend.pending.size(), 1u);
  backend.complete_next(Status::kOk, 10);
  EXPECT_EQ(o.actual, 10u);
}

TEST_F(SharedDeviceTest, ControlRequestsCompleteInSubmissionOrder) {
  // usbtest case 10: a forwarded request (a string) followed by cached ones.
  std::vector<int> order;
  auto make = [&](const usb::SetupPacket& setup, int n) {
    auto t = Transfer::control(0x80, setup);
    t->set_completion([&order, n](Transfer&) { order.push_back(n); });
    return t;
  };
  auto t0 = make({0x80, usb::request::kGetDescriptor, 0x0300, 0, 4}, 0);   // forwarded
  auto t1 = make({0x80, usb::request::kGetDescriptor, 0x0100, 0, 18}, 1);  // cached
  auto t2 = make({0x80, usb::request::kGetStatus, 0, 0, 2}, 2);            // cached
  a.submit(*t0);
  a.submit(*t1);
  a.submit(*t2);
  EXPECT_TRUE(order.empty()) << "cached answers wait for the request before them";
  ASSERT_EQ(backend.pending.size(), 1u);
  backend.complete_next(Status::kOk, 4);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
  // A queued request can be cancelled.
  auto t3 = make({0x80, usb::request::kGetDescriptor, 0x0300, 0, 4}, 3);
  auto t4 = make({0x80, usb::request::kGetDescriptor, 0x0100, 0, 18}, 4);
  a.submit(*t3);
  a.submit(*t4);
  EXPECT_TRUE(t4->cancel());
  EXPECT_EQ(t4->status(), Status::kCancelled);
  backend.complete_next();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 4, 3}));
}

TEST_F(SharedDeviceTest, BulkCompletionsReturnToTheirOwnVm) {
  Outcome oa, ob;
  auto ta = bulk(0x81, 64, oa);
  auto tb = bulk(0x01, 32, ob);
  a.submit(*ta);
  b.submit(*tb);
  ASSERT_EQ(backend.pending.size(), 2u);
  backend.complete_next(Status::kOk, 64);
  backend.complete_next(Status::kOk, 32);
  EXPECT_EQ(oa.actual, 64u);
  EXPECT_EQ(ob.actual, 32u);
  EXPECT_EQ(a.stats().bytes_in, 64u);
  EXPECT_EQ(b.stats().bytes_out, 32u);
  EXPECT_EQ(a.stats().urbs, 1u);
  EXPECT_EQ(b.stats().urbs, 1u);
}

TEST_F(SharedDeviceTest, HaltIsPerVm) {
  Outcome o;
  auto set = control({0x02, usb::request::kSetFeature, usb::feature::kEndpointHalt, 0x81, 0}, o);
  a.submit(*set);
  EXPECT_EQ(o.status, Status::kOk);
  EXPECT_TRUE(backend.calls.empty()) << "the real endpoint keeps running for vmB";
  auto sa = control({0x82, usb::request::kGetStatus, 0, 0x81, 2}, o);
  a.submit(*sa);
  EXPECT_EQ(sa->data()[0], 1);
  auto sb = control({0x82, usb::request::kGetStatus, 0, 0x81, 2}, o);
  b.submit(*sb);
  EXPECT_EQ(sb->data()[0], 0);
  Outcome oa, ob;
  auto ta = bulk(0x81, 8, oa);
  auto tb = bulk(0x81, 8, ob);
  a.submit(*ta);
  b.submit(*tb);
  EXPECT_EQ(oa.status, Status::kStall);
  ASSERT_EQ(backend.pending.size(), 1u);
  backend.complete_next();
  EXPECT_EQ(ob.status, Status::kOk);
  Status cleared = Status::kIoError;
  a.clear_halt(0x81, [&](Status s) { cleared = s; });
  EXPECT_EQ(cleared, Status::kOk);
  EXPECT_TRUE(backend.calls.empty()) << "virtual halt: vmB's data toggle is left alone";
}

TEST_F(SharedDeviceTest, DeviceStallIsClearedOnTheDevice) {
  Outcome o;
  auto t = bulk(0x01, 8, o);
  a.submit(*t);
  backend.complete_next(Status::kStall, 0);
  EXPECT_EQ(o.status, Status::kStall);
  Status cleared = Status::kIoError;
  a.clear_halt(0x01, [&](Status s) { cleared = s; });
  EXPECT_EQ(backend.calls, (std::vector<std::string>{"clear_halt 1"}));
}

TEST_F(SharedDeviceTest, BackendGoneCompletesWithNoDevice) {
  Outcome o, w;
  auto t = bulk(0x81, 8, o);
  a.submit(*t);
  backend.unplug();
  EXPECT_EQ(o.status, Status::kNoDevice);
  shared.set_backend(nullptr);
  EXPECT_FALSE(a.connected());
  auto t2 = bulk(0x81, 8, w);
  a.submit(*t2);
  EXPECT_EQ(w.status, Status::kNoDevice);
}

TEST(SharedDeviceExclusiveTest, OneVmAtATime) {
  ManualTimers timers;
  usb::testing::FakeDevice backend(gz_like());
  SharedDevice shared("gz", SharedDevice::Mode::kExclusive, timers.timer());
  shared.set_backend(&backend);
  DeviceView& a = shared.view("vmA", {});
  DeviceView& b = shared.view("vmB", {});
  EXPECT_TRUE(a.try_acquire());
  EXPECT_FALSE(b.try_acquire());
  a.release();
  EXPECT_TRUE(b.try_acquire());
}

}  // namespace
}  // namespace vusbd
