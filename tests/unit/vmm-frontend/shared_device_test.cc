// SharedDevice / DeviceView against a FakeDevice backend, on simulated time (a manual timer).
#include "vmm-frontend/sharing/shared_device.h"

#include <gtest/gtest.h>

#include "usb/core/fake_device.h"

namespace vusbd {
namespace {

using usb::Status;
using usb::Transfer;

// Gadget Zero's shape plus alt 2: 0x81 with another packet size, incompatible with alt 0.
usb::DescriptorSet gz_like() {
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

std::unique_ptr<Transfer> control(const usb::SetupPacket& s, Outcome& o,
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

std::unique_ptr<Transfer> bulk(uint8_t ep, size_t len, Outcome& o) {
  auto t = std::make_unique<Transfer>(ep, usb::TransferType::kBulk, len);
  t->set_completion([&o](Transfer& x) {
    ++o.calls;
    o.status = x.status();
    o.actual = x.actual_length();
  });
  return t;
}

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

TEST_F(SharedDeviceTest, ConfigurationInForceSucceedsAndAChangeIsRefusedWhileShared) {
  Status s1 = Status::kIoError, s2 = Status::kIoError;
  a.set_configuration(3, [&](Status s) { s1 = s; });
  EXPECT_EQ(s1, Status::kOk);
  b.set_configuration(1, [&](Status s) { s2 = s; });
  EXPECT_EQ(s2, Status::kStall) << "vmA uses configuration 3";
  EXPECT_EQ(b.stats().refused, 1u);
  EXPECT_TRUE(backend.calls.empty()) << "the device was never touched";
  a.release();
  b.set_configuration(1, [&](Status s) { s2 = s; });
  EXPECT_EQ(s2, Status::kOk);
  EXPECT_EQ(backend.calls, (std::vector<std::string>{"set_configuration 1"}));
}

TEST_F(SharedDeviceTest, AlternateSettingsArePerVmWhenEndpointsAllowIt) {
  Status s = Status::kIoError;
  // vmB asks for alt 1 (alt 0 + iso): vmA's endpoints survive, so the device switches.
  b.set_interface(0, 1, [&](Status st) { s = st; });
  EXPECT_EQ(s, Status::kOk);
  EXPECT_EQ(backend.calls, (std::vector<std::string>{"set_interface 0 1"}));
  EXPECT_EQ(b.alternate_setting(0), 1);
  EXPECT_EQ(a.alternate_setting(0), 0) << "vmA still sees the setting it chose";
  // vmA asks for alt 1 too: already in force.
  a.set_interface(0, 1, [&](Status st) { s = st; });
  EXPECT_EQ(s, Status::kOk);
  EXPECT_EQ(backend.calls.size(), 1u);
  // vmB goes back to alt 0: vmA needs the iso endpoint, so vmB gets alt 0 on its own.
  b.set_interface(0, 0, [&](Status st) { s = st; });
  EXPECT_EQ(s, Status::kOk);
  EXPECT_EQ(backend.calls.size(), 1u) << "the device stays at alt 1";
  EXPECT_EQ(b.alternate_setting(0), 0);
  Outcome o;
  auto gi = control({0x81, usb::request::kGetInterface, 0, 0, 1}, o);
  b.submit(*gi);
  EXPECT_EQ(gi->data()[0], 0) << "GET_INTERFACE answers vmB's own setting";
  // alt 2 redefines 0x81: neither switchable nor available virtually while vmA streams.
  a.set_interface(0, 2, [&](Status st) { s = st; });
  EXPECT_EQ(s, Status::kStall);
  EXPECT_EQ(a.stats().refused, 1u);
  // A setting that does not exist stalls like on a device.
  a.set_interface(0, 7, [&](Status st) { s = st; });
  EXPECT_EQ(s, Status::kStall);
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

TEST_F(SharedDeviceTest, VendorTransactionsAreSerializedPerVm) {
  // vmA: OUT 0x5b ... IN 0x5c; vmB's OUT 0x5b in between must wait, not interleave.
  Outcome a_out, a_in, b_out;
  auto aw = control({0x40, 0x5b, 0, 0, 4}, a_out);
  auto bw = control({0x40, 0x5b, 0, 0, 4}, b_out);
  auto ar = control({0xc0, 0x5c, 0, 0, 4}, a_in);
  a.submit(*aw);
  b.submit(*bw);
  ASSERT_EQ(backend.pending.size(), 1u) << "vmB's write waits";
  backend.complete_next();
  EXPECT_EQ(a_out.status, Status::kOk);
  EXPECT_EQ(b_out.calls, 0);
  a.submit(*ar);
  ASSERT_EQ(backend.pending.size(), 1u);
  EXPECT_EQ(backend.pending.front(), ar.get()) << "vmA's read goes before vmB's write";
  backend.complete_next();
  ASSERT_EQ(backend.pending.size(), 1u) << "the read closed vmA's transaction; vmB's write runs";
  EXPECT_EQ(backend.pending.front(), bw.get());
  backend.complete_next();
  EXPECT_EQ(b_out.status, Status::kOk);
}

TEST_F(SharedDeviceTest, AbandonedTransactionTimesOut) {
  Outcome a_out, b_out;
  auto aw = control({0x40, 0x5b, 0, 0, 4}, a_out);
  auto bw = control({0x40, 0x5b, 0, 0, 4}, b_out);
  a.submit(*aw);
  backend.complete_next();
  b.submit(*bw);
  EXPECT_TRUE(backend.pending.empty());
  timers.fire_all();  // vmA never read back
  ASSERT_EQ(backend.pending.size(), 1u);
  EXPECT_EQ(backend.pending.front(), bw.get());
}

TEST_F(SharedDeviceTest, WaitingTransferCanBeCancelled) {
  Outcome a_out, b_out;
  auto aw = control({0x40, 0x5b, 0, 0, 4}, a_out);
  auto bw = control({0x40, 0x5b, 0, 0, 4}, b_out);
  a.submit(*aw);
  b.submit(*bw);
  EXPECT_TRUE(bw->cancel());
  EXPECT_EQ(b_out.calls, 1);
  EXPECT_EQ(b_out.status, Status::kCancelled);
  EXPECT_FALSE(bw->cancel());
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

namespace vusbd {
namespace {

// An iso IN URB of `packets` packets of 1024 bytes; the completion records what came back.
struct IsoOutcome {
  int calls = 0;
  Status status = Status::kIoError;
  std::vector<std::vector<uint8_t>> packets;
};

std::unique_ptr<Transfer> iso_in(int packets, IsoOutcome& o) {
  auto t = std::make_unique<Transfer>(0x82, usb::TransferType::kIsochronous, packets * 1024);
  for (int i = 0; i < packets; ++i)
    t->iso_packets.push_back({uint32_t(i * 1024), 1024, 0, Status::kOk});
  t->set_completion([&o](Transfer& x) {
    ++o.calls;
    o.status = x.status();
    o.packets.clear();
    for (const auto& p : x.iso_packets)
      o.packets.emplace_back(x.buffer().begin() + p.offset,
                             x.buffer().begin() + p.offset + p.actual_length);
  });
  return t;
}

// The device fills each packet of its oldest pending URB with `first`, `first + 1`, ...
void device_streams(usb::testing::FakeDevice& dev, uint8_t first, uint32_t bytes = 100) {
  Transfer& t = *dev.pending.front();
  size_t total = 0;
  for (auto& p : t.iso_packets) {
    std::fill_n(t.buffer().begin() + p.offset, bytes, first++);
    p.actual_length = bytes;
    total += bytes;
  }
  dev.complete_next(Status::kOk, total);
}

class IsoFanOutTest : public SharedDeviceTest {
 protected:
  IsoFanOutTest() {
    Outcome o;
    auto alt = control({0x01, usb::request::kSetInterface, 1, 0, 0}, o);
    a.submit(*alt);
    backend.complete_next();  // FakeDevice acts on SET_INTERFACE
  }
};

TEST_F(IsoFanOutTest, OneStreamFromTheDeviceEveryVmGetsEveryPacket) {
  IsoOutcome oa1, oa2, ob1, ob2;
  auto a1 = iso_in(2, oa1), a2 = iso_in(2, oa2), b1 = iso_in(2, ob1), b2 = iso_in(2, ob2);
  a.submit(*a1);
  a.submit(*a2);
  b.submit(*b1);
  b.submit(*b2);
  // Only the leader's URBs reach the device.
  ASSERT_EQ(backend.pending.size(), 2u);
  device_streams(backend, 10);  // packets 10, 11
  device_streams(backend, 12);  // packets 12, 13
  EXPECT_EQ(oa1.packets, (std::vector<std::vector<uint8_t>>{std::vector<uint8_t>(100, 10),
                                                            std::vector<uint8_t>(100, 11)}));
  EXPECT_EQ(ob1.packets, oa1.packets) << "vmB got the same packets, in order";
  EXPECT_EQ(ob2.packets, oa2.packets);
  EXPECT_EQ(ob2.packets[1], std::vector<uint8_t>(100, 13));
  EXPECT_EQ(ob1.status, Status::kOk);
  EXPECT_EQ(shared.fanout_stats(b).copied_packets, 4u);
  EXPECT_EQ(shared.fanout_stats(b).dropped_packets, 0u);
  EXPECT_EQ(b.stats().bytes_in, 400u) << "the follower's traffic is counted as its own";
}

TEST_F(IsoFanOutTest, PacketCountsMayDifferPerVm) {
  IsoOutcome oa, ob1, ob2;
  auto ta = iso_in(4, oa), tb1 = iso_in(3, ob1), tb2 = iso_in(1, ob2);
  a.submit(*ta);
  b.submit(*tb1);
  b.submit(*tb2);
  device_streams(backend, 1);
  ASSERT_EQ(ob1.calls, 1);
  ASSERT_EQ(ob2.calls, 1);
  EXPECT_EQ(ob1.packets[2], std::vector<uint8_t>(100, 3));
  EXPECT_EQ(ob2.packets[0], std::vector<uint8_t>(100, 4));
}

TEST_F(IsoFanOutTest, WhenTheLeaderStopsAFollowerLeads) {
  IsoOutcome oa, ob1, ob2;
  auto ta = iso_in(2, oa), tb1 = iso_in(2, ob1), tb2 = iso_in(2, ob2);
  a.submit(*ta);
  b.submit(*tb1);
  b.submit(*tb2);
  device_streams(backend, 1);  // vmA's only URB: vmB's first is filled, vmA has nothing left
  EXPECT_EQ(ob1.calls, 1);
  // vmB's second URB went to the device: vmB leads now.
  ASSERT_EQ(backend.pending.size(), 1u);
  EXPECT_EQ(backend.pending.front(), tb2.get());
  // vmA comes back and follows.
  IsoOutcome oa2;
  auto ta2 = iso_in(2, oa2);
  a.submit(*ta2);
  EXPECT_EQ(backend.pending.size(), 1u);
  device_streams(backend, 7);
  EXPECT_EQ(ob2.packets[0], std::vector<uint8_t>(100, 7));
  EXPECT_EQ(oa2.packets, ob2.packets);
}

TEST_F(IsoFanOutTest, ParkedUrbsCancelAndReleaseAndUnplug) {
  IsoOutcome oa, ob1, ob2;
  auto ta = iso_in(2, oa), tb1 = iso_in(2, ob1), tb2 = iso_in(2, ob2);
  a.submit(*ta);
  b.submit(*tb1);
  b.submit(*tb2);
  EXPECT_TRUE(tb1->cancel());
  EXPECT_EQ(ob1.status, Status::kCancelled);
  b.release();  // vmB detaches: its parked URB is given back
  EXPECT_EQ(ob2.calls, 1);
  EXPECT_EQ(ob2.status, Status::kCancelled);
  ASSERT_TRUE(b.try_acquire());
  IsoOutcome ob3;
  auto tb3 = iso_in(2, ob3);
  b.submit(*tb3);
  shared.set_backend(nullptr);  // unplug
  EXPECT_EQ(ob3.status, Status::kNoDevice);
  backend.complete_next(Status::kNoDevice, 0);  // the leader's URB, from the device
  EXPECT_EQ(oa.status, Status::kNoDevice);
}

TEST_F(IsoFanOutTest, AFollowerThatFallsBehindLosesTheOldestPackets) {
  IsoOutcome ob;
  auto tb = iso_in(2, ob);
  b.submit(*tb);  // vmB leads with one URB, vmA follows and then stops submitting
  IsoOutcome oa;
  auto ta = iso_in(2, oa);
  a.submit(*ta);
  std::vector<std::unique_ptr<Transfer>> more;
  std::vector<IsoOutcome> outs(200);
  for (int i = 0; i < 100; ++i) {
    device_streams(backend, uint8_t(i * 2));
    more.push_back(iso_in(2, outs[i]));
    b.submit(*more.back());
  }
  EXPECT_EQ(oa.calls, 1);
  const auto st = shared.fanout_stats(a);
  EXPECT_GT(st.dropped_packets, 0u) << "bounded: a stalled follower does not hoard packets";
  EXPECT_LE(st.copied_packets, 2u);
  while (!backend.pending.empty()) backend.complete_next(Status::kCancelled, 0);
}

TEST_F(IsoFanOutTest, ExclusiveModeDoesNotFanOut) {
  SharedDevice excl("x", SharedDevice::Mode::kExclusive, timers.timer());
  usb::testing::FakeDevice dev(gz_like());
  excl.set_backend(&dev);
  DeviceView& v = excl.view("vm", {.busid = "1-1", .path = {}});
  ASSERT_TRUE(v.try_acquire());
  IsoOutcome o;
  auto t = iso_in(2, o);
  v.submit(*t);
  EXPECT_EQ(dev.pending.size(), 1u);
  dev.complete_next(Status::kCancelled, 0);
}

}  // namespace
}  // namespace vusbd

namespace vusbd {
namespace {

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

TEST_F(TimesliceTest, TurnsHoldTheOtherVmsUrbsAndPassWhenTheHolderIsDone) {
  Outcome oa1, ob1, ob2, oa2;
  auto a1 = bulk(0x81, 64, oa1), b1 = bulk(0x81, 64, ob1), b2 = bulk(0x01, 32, ob2),
       a2 = bulk(0x81, 64, oa2);
  a.submit(*a1);
  EXPECT_EQ(shared.turn_holder(), "vmA");
  b.submit(*b1);
  b.submit(*b2);
  ASSERT_EQ(backend.pending.size(), 1u) << "vmB's URBs are held, not failed";
  EXPECT_EQ(ob1.calls, 0);
  backend.complete_next(Status::kOk, 64);  // vmA's only URB: its turn is over
  EXPECT_EQ(oa1.status, Status::kOk);
  EXPECT_EQ(shared.turn_holder(), "vmB");
  ASSERT_EQ(backend.pending.size(), 2u) << "vmB's URBs go in their order";
  EXPECT_EQ(backend.pending[0], b1.get());
  a.submit(*a2);  // held now
  EXPECT_EQ(backend.pending.size(), 2u);
  backend.complete_next(Status::kOk, 64);
  backend.complete_next(Status::kOk, 32);
  EXPECT_EQ(ob2.status, Status::kOk);
  EXPECT_EQ(shared.turn_holder(), "vmA");
  ASSERT_EQ(backend.pending.size(), 1u);
  backend.complete_next(Status::kOk, 64);
  EXPECT_EQ(oa2.status, Status::kOk);
  EXPECT_EQ(a.stats().turns, 2u);
  EXPECT_EQ(b.stats().turns, 1u);
  EXPECT_EQ(shared.turn_switches(), 2u);
}

TEST_F(TimesliceTest, AHolderThatDoesNotFinishIsCancelledAfterTheGraceTime) {
  Outcome oa, ob;
  auto ta = bulk(0x81, 64, oa), tb = bulk(0x81, 64, ob);
  backend.complete_on_cancel = true;
  a.submit(*ta);  // an IN that the device never answers
  b.submit(*tb);
  EXPECT_EQ(oa.calls, 0);
  timers.fire_all();  // slice timer, then the grace timer of the switch it started
  timers.fire_all();
  EXPECT_EQ(oa.status, Status::kCancelled);
  EXPECT_EQ(shared.turn_holder(), "vmB");
  ASSERT_EQ(backend.pending.size(), 1u);
  EXPECT_EQ(backend.pending.front(), tb.get());
  backend.complete_next(Status::kOk, 64);
  EXPECT_EQ(ob.status, Status::kOk);
}

TEST_F(TimesliceTest, HeldUrbsCancelAndReleasePassesTheTurn) {
  Outcome oa, ob1, ob2;
  auto ta = bulk(0x81, 64, oa), tb1 = bulk(0x81, 64, ob1), tb2 = bulk(0x81, 64, ob2);
  a.submit(*ta);
  b.submit(*tb1);
  b.submit(*tb2);
  EXPECT_TRUE(tb1->cancel());
  EXPECT_EQ(ob1.status, Status::kCancelled);
  a.release();  // vmA detaches while holding the device: vmB goes on at once
  EXPECT_EQ(shared.turn_holder(), "vmB");
  backend.complete_next(Status::kCancelled, 0);  // vmA's URB, cancelled by its adapter
  ASSERT_FALSE(backend.pending.empty());
  EXPECT_EQ(backend.pending.back(), tb2.get());
  backend.complete_next(Status::kOk, 64);
  EXPECT_EQ(ob2.status, Status::kOk);
}

TEST_F(TimesliceTest, UnplugAndLeavingTheModeGiveHeldUrbsBack) {
  Outcome oa, ob;
  auto ta = bulk(0x81, 64, oa), tb = bulk(0x81, 64, ob);
  a.submit(*ta);
  b.submit(*tb);
  shared.set_mode(SharedDevice::Mode::kShared);
  ASSERT_EQ(backend.pending.size(), 2u) << "shared: everyone sends";
  backend.complete_next(Status::kOk, 64);
  backend.complete_next(Status::kOk, 64);
  shared.set_mode(SharedDevice::Mode::kTimeslice);
  Outcome oa2, ob2;
  auto ta2 = bulk(0x81, 64, oa2), tb2 = bulk(0x81, 64, ob2);
  a.submit(*ta2);
  b.submit(*tb2);
  shared.set_backend(nullptr);
  EXPECT_EQ(ob2.status, Status::kNoDevice);
  backend.complete_next(Status::kNoDevice, 0);
  EXPECT_EQ(oa2.status, Status::kNoDevice);
}

class LongSliceTest : public TimesliceTest {
 protected:
  LongSliceTest() : TimesliceTest(std::chrono::hours(1)) {}
};

TEST_F(LongSliceTest, TheHolderKeepsTheDeviceWhileItIsBusy) {
  Outcome o[4];
  auto a1 = bulk(0x81, 64, o[0]), a2 = bulk(0x81, 64, o[1]), b1 = bulk(0x81, 64, o[2]),
       a3 = bulk(0x81, 64, o[3]);
  a.submit(*a1);
  a.submit(*a2);
  b.submit(*b1);
  backend.complete_next(Status::kOk, 64);
  a.submit(*a3);  // still vmA's turn: it is busy and its slice is not over
  EXPECT_EQ(shared.turn_holder(), "vmA");
  EXPECT_EQ(backend.pending.size(), 2u);
  backend.complete_next(Status::kOk, 64);
  backend.complete_next(Status::kOk, 64);  // idle now: vmB's turn
  EXPECT_EQ(shared.turn_holder(), "vmB");
  backend.complete_next(Status::kOk, 64);
  EXPECT_EQ(o[2].status, Status::kOk);
}

}  // namespace
}  // namespace vusbd

namespace vusbd {
namespace {

// Fair scheduling: a device that takes one URB at a time, two VMs with deep queues.
class FairShareTest : public SharedDeviceTest {
 protected:
  FairShareTest() { shared.set_device_queue_depth(1); }
  // Submits n 16 KiB bulk OUT URBs from `v`, tagged with `tag` in `order` when they complete.
  void flood(DeviceView& v, int n, char tag) {
    for (int i = 0; i < n; ++i) {
      auto t = std::make_unique<Transfer>(0x01, usb::TransferType::kBulk, 16384);
      t->set_completion([this, tag](Transfer& x) {
        if (x.status() == Status::kOk) order.push_back(tag);  // served by the device
      });
      v.submit(*t);
      urbs.push_back(std::move(t));
    }
  }
  void serve_all() {
    while (!backend.pending.empty()) backend.complete_next(Status::kOk, 16384);
  }
  std::vector<std::unique_ptr<Transfer>> urbs;
  std::string order;
};

TEST_F(FairShareTest, EqualWeightsAlternate) {
  flood(a, 8, 'A');
  flood(b, 8, 'B');
  EXPECT_EQ(backend.pending.size(), 1u) << "the device takes one at a time";
  EXPECT_EQ(shared.queued(a), 7u);
  EXPECT_EQ(shared.queued(b), 8u);
  serve_all();
  EXPECT_EQ(order, "AABABABABABABABB");
}

TEST_F(FairShareTest, WeightsSetTheShares) {
  shared.set_weight("vmA", 3);
  flood(a, 12, 'A');
  flood(b, 12, 'B');
  serve_all();
  // While both wait, vmA gets three 16 KiB URBs for each of vmB's (after the one the device
  // already had); when vmA's queue runs dry, vmB has the device.
  EXPECT_EQ(order, "AAAABAAABAAABAABBBBBBBBB");
}

TEST_F(FairShareTest, QueuedUrbsCancelAndAreGivenBackOnReleaseAndUnplug) {
  flood(a, 3, 'A');
  flood(b, 2, 'B');
  EXPECT_TRUE(urbs[1]->cancel());  // vmA's second, still queued
  EXPECT_EQ(urbs[1]->status(), Status::kCancelled);
  b.release();
  EXPECT_EQ(urbs[3]->status(), Status::kCancelled);
  EXPECT_EQ(urbs[4]->status(), Status::kCancelled);
  shared.set_backend(nullptr);
  EXPECT_EQ(urbs[2]->status(), Status::kNoDevice);
  backend.complete_next(Status::kNoDevice, 0);
  EXPECT_EQ(urbs[0]->status(), Status::kNoDevice);
}

TEST_F(FairShareTest, AFullShareIsRefusedForThatVmOnly) {
  flood(a, 1026, 'A');  // one at the device, 1024 queued, one refused
  EXPECT_EQ(urbs.back()->status(), Status::kNoMemory);
  EXPECT_EQ(a.stats().queue_full, 1u);
  flood(b, 1, 'B');
  EXPECT_EQ(urbs.back()->state(), Transfer::State::kIdle) << "vmB's URB waits, it is not refused";
  EXPECT_EQ(shared.queued(b), 1u);
  serve_all();
  EXPECT_EQ(order.find('B'), 2u) << "it is served in the first round: after the URB the device "
                                    "had and one of vmA's";
}

}  // namespace
}  // namespace vusbd
