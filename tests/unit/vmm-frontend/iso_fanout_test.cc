// IsoFanOut through SharedDevice's views: one isochronous IN stream from the device, every VM
// that streams the endpoint receives every packet.
#include <gtest/gtest.h>

#include "tests/unit/vmm-frontend/shared_device_fixture.h"

namespace vusbd {
namespace {

using namespace sharing_testing;  // NOLINT(google-build-using-namespace): the shared fixtures
using usb::Status;
using usb::Transfer;

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
