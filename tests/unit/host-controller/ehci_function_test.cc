// EhciFunction programmed by the EHCI reference driver (ehci_ref_driver.h) as ehci-hcd does: port
// ownership, port reset, the async schedule with QHs and dummy-terminated qTD lists, control and
// bulk transfers into Gadget Zero, short reads, stalls, unlink with Interrupt on Async Advance,
// FRINDEX and frame list rollover — and a hostile guest's lists. Time is injected: the driver's
// idle() advances it one frame and lets the controller take its frame's look at the schedules.
#include "host-controller/ehci/ehci_function.h"

#include <gtest/gtest.h>

#include "devices/emulated/gadget_zero.h"
#include "tests/unit/host-controller/ehci_ref_driver.h"

namespace hc::ehci {
namespace {

using namespace reg;
using testing::EhciRefDriver;

struct CountingIrq : IrqLine {
  bool level = false;
  int raised = 0;
  void set_level(bool a) override {
    if (a && !level) ++raised;
    level = a;
  }
  void message(uint16_t) override {}
};

devices::GadgetZeroOptions options(usb::Speed speed = usb::Speed::kHigh) {
  devices::GadgetZeroOptions o;
  o.pattern = 1;
  o.speed = speed;
  return o;
}

std::vector<uint8_t> mod63(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i % 512) % 63);
  return v;
}

class EhciTest : public ::testing::Test, public testing::Target {
 protected:
  EhciTest() : ehci(ram, irq, [this] { return now; }) {}
  uint32_t read32(uint32_t off) override { return static_cast<uint32_t>(ehci.mmio_read(off, 4)); }
  void write32(uint32_t off, uint32_t v) override { ehci.mmio_write(off, v, 4); }
  GuestMemory& memory() override { return ram; }
  void idle() override {
    now += std::chrono::milliseconds(1);
    ehci.poll();
  }
  uint32_t op(uint32_t r) { return read32(EhciFunction::kCapLength + r); }
  void set_op(uint32_t r, uint32_t v) { write32(EhciFunction::kCapLength + r, v); }

  InMemoryGuestMemory ram{8u << 20, 0x100000};
  CountingIrq irq;
  std::chrono::steady_clock::time_point now{};
  devices::GadgetZero gz{options()};
  EhciFunction ehci;
  EhciRefDriver d{*this};
};

TEST_F(EhciTest, CapabilitiesResetStateAndPortOwnership) {
  EXPECT_EQ(read32(kCapLength) & 0xff, EhciFunction::kCapLength);
  EXPECT_EQ(read32(kCapLength) >> 16, kVersion);
  EXPECT_EQ(read32(kHcsParams) & 0xf, EhciFunction::kPorts);
  EXPECT_EQ(op(kUsbSts) & kStsHalted, kStsHalted);
  ASSERT_TRUE(ehci.attach(1, gz));
  EXPECT_EQ(op(kPortSc) & (kPortOwner | kPortCcs), kPortOwner | kPortCcs)
      << "a companion owns the ports until CONFIGFLAG";
  set_op(kUsbIntr, kStsPcd);
  set_op(kConfigFlag, 1);
  EXPECT_EQ(op(kPortSc) & (kPortOwner | kPortCsc), kPortCsc) << "ours now, a new connection";
  EXPECT_EQ(op(kUsbSts) & kStsPcd, kStsPcd);
  EXPECT_TRUE(irq.level);
  set_op(kUsbSts, kStsPcd);
  EXPECT_FALSE(irq.level);
}

TEST_F(EhciTest, EnumerateAndMoveBulkData) {
  ASSERT_TRUE(ehci.attach(1, gz));
  ASSERT_TRUE(d.start());
  auto vid = d.enumerate(1, 5);
  ASSERT_TRUE(vid);
  EXPECT_EQ(*vid, 0x0525) << "GET_DESCRIPTOR at address 0, SET_ADDRESS, then at address 5";
  auto cfg = d.control(5, {0x00, 9, 3, 0, 0});
  ASSERT_TRUE(cfg.done);
  EXPECT_FALSE(cfg.halted);
  for (auto& r : d.bulk_many(5, 0x01, 4096, 8, mod63(4096))) {
    EXPECT_TRUE(r.done);
    EXPECT_FALSE(r.halted);
    EXPECT_EQ(r.actual, 4096u);
  }
  for (auto& r : d.bulk_many(5, 0x81, 4096, 8)) {
    EXPECT_FALSE(r.halted);
    EXPECT_EQ(r.data, mod63(4096));
  }
  EXPECT_GT(irq.raised, 0) << "IOC raised USBINT";
}

TEST_F(EhciTest, AShortControlReadAndAVendorRoundTrip) {
  ASSERT_TRUE(ehci.attach(1, gz));
  ASSERT_TRUE(d.start());
  ASSERT_TRUE(d.enumerate(1, 3));
  auto c = d.control(3, {0x80, 6, 0x0200, 0, 255});
  ASSERT_TRUE(c.done);
  EXPECT_FALSE(c.halted);
  ASSERT_GE(c.data.size(), 4u);
  EXPECT_EQ(c.actual, static_cast<uint32_t>(c.data[2] | (c.data[3] << 8)))
      << "short: wTotalLength bytes, and the status stage still ran";
  ASSERT_FALSE(d.control(3, {0x00, 9, 3, 0, 0}).halted);
  std::vector<uint8_t> v(100);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(i * 3);
  ASSERT_FALSE(d.control(3, {0x40, 0x5b, 0, 0, 100}, v).halted);
  auto back = d.control(3, {0xc0, 0x5c, 0, 0, 100});
  EXPECT_EQ(back.data, v);
}

TEST_F(EhciTest, AStallHaltsTheQueueUntilTheDriverClearsIt) {
  ASSERT_TRUE(ehci.attach(1, gz));
  ASSERT_TRUE(d.start());
  ASSERT_TRUE(d.enumerate(1, 4));
  ASSERT_FALSE(d.control(4, {0x00, 9, 3, 0, 0}).halted);
  ASSERT_FALSE(d.control(4, {0x02, 3, 0, 0x81, 0}).halted);  // SET_FEATURE(HALT) on 0x81
  auto stalled = d.bulk(4, 0x81, 512);
  ASSERT_TRUE(stalled.done);
  EXPECT_TRUE(stalled.halted);
  EXPECT_EQ(stalled.status & QtdToken::kXactError, 0u) << "a stall, not a transaction error";
  EXPECT_EQ(op(kUsbSts) & kStsErrInt, kStsErrInt);
  d.clear_halt(4, 0x81);
  ASSERT_FALSE(d.control(4, {0x02, 1, 0, 0x81, 0}).halted);  // CLEAR_FEATURE(HALT)
  auto ok = d.bulk(4, 0x81, 512);
  EXPECT_FALSE(ok.halted);
  EXPECT_EQ(ok.data, mod63(512));
  // A control request the device refuses stalls EP0's queue the same way.
  auto refused = d.control(4, {0x80, 6, 0x4200, 0, 8});
  EXPECT_TRUE(refused.halted);
  d.clear_halt(4, 0);
  EXPECT_FALSE(d.control(4, {0x80, 6, 0x0100, 0, 18}).halted);
}

TEST_F(EhciTest, UnlinkingAQueueHeadRingsTheAsyncAdvanceDoorbell) {
  ASSERT_TRUE(ehci.attach(1, gz));
  ASSERT_TRUE(d.start());
  ASSERT_TRUE(d.enumerate(1, 6));
  ASSERT_FALSE(d.control(6, {0x00, 9, 3, 0, 0}).halted);
  ASSERT_FALSE(d.bulk(6, 0x81, 512).halted);
  EXPECT_TRUE(d.unlink(6, 0x81));
  EXPECT_EQ(op(kUsbCmd) & kCmdIaad, 0u) << "the doorbell clears itself";
  ASSERT_FALSE(d.bulk(6, 0x81, 512).halted) << "a new QH for it works";
}

TEST_F(EhciTest, AFullSpeedDeviceIsLeftForACompanion) {
  devices::GadgetZero fs{options(usb::Speed::kFull)};
  ASSERT_TRUE(ehci.attach(2, fs));
  ASSERT_TRUE(d.start());
  EXPECT_FALSE(d.reset_port(2)) << "not enabled after reset: not a high-speed device";
  set_op(kPortSc + 4, kPortPower | kPortOwner);
  EXPECT_EQ(op(kPortSc + 4) & kPortOwner, kPortOwner);
}

TEST_F(EhciTest, NoDeviceAtAnAddressIsATransactionError) {
  ASSERT_TRUE(d.start());
  auto r = d.control(9, {0x80, 6, 0x0100, 0, 18});
  ASSERT_TRUE(r.done);
  EXPECT_TRUE(r.halted);
  EXPECT_EQ(r.status & QtdToken::kXactError, QtdToken::kXactError);
}

TEST_F(EhciTest, FrameIndexCountsMicroframesAndRollsOver) {
  ASSERT_TRUE(d.start());
  const uint32_t f0 = op(kFrIndex);
  now += std::chrono::microseconds(125 * 10);
  EXPECT_EQ(op(kFrIndex), (f0 + 10) & 0x3fff);
  set_op(kUsbIntr, kStsFlr);
  set_op(kUsbSts, kStsFlr);
  now += std::chrono::microseconds(125) * 8192;  // one pass over the 1024-frame list
  ehci.poll();
  EXPECT_EQ(op(kUsbSts) & kStsFlr, kStsFlr);
  EXPECT_TRUE(irq.level);
}

TEST_F(EhciTest, HostileAsyncListsEnd) {
  ASSERT_TRUE(d.start());
  // Two QHs pointing at each other with active qTDs for an address nobody has: the walk ends
  // (bounded), the qTDs halt with transaction errors, nothing hangs.
  const uint32_t a = static_cast<uint32_t>(d.alloc(64)), b = static_cast<uint32_t>(d.alloc(64));
  Qh qa, qb;
  qa.horizontal.raw = b | 2;
  qb.horizontal.raw = a | 2;
  qa.characteristics = qb.characteristics = 77 | (2u << 12) | (64u << 16);
  const uint32_t t = static_cast<uint32_t>(d.alloc(32));
  Qtd q;
  q.next.raw = 1;
  q.alt_next.raw = 1;
  q.token.raw = QtdToken::kActive | (1u << 8) | (8u << 16);
  ASSERT_TRUE(ram.write_obj(t, q));
  qa.overlay.next.raw = t;
  qb.overlay.next.raw = 1;
  ASSERT_TRUE(ram.write_obj(a, qa));
  ASSERT_TRUE(ram.write_obj(b, qb));
  set_op(kAsyncListAddr, a);
  ehci.poll();
  QtdToken after;
  ASSERT_TRUE(ram.read_obj(t + 8, after));
  EXPECT_TRUE(after.halted());
  // An async list outside guest memory: Host System Error, halted.
  set_op(kAsyncListAddr, 0xfff00000);
  ehci.poll();
  EXPECT_EQ(op(kUsbSts) & (kStsHse | kStsHalted), kStsHse | kStsHalted);
}

}  // namespace
}  // namespace hc::ehci

namespace hc::ehci {
namespace {

// usbtest 15 / 16's equivalents on EHCI: Gadget Zero's alternate setting 1, iTDs in the frame
// list a few frames ahead, one 1024-byte transaction per frame (bInterval 4), each direction.
TEST_F(EhciTest, IsochronousThroughItdsInTheFrameList) {
  ASSERT_TRUE(ehci.attach(1, gz));
  ASSERT_TRUE(d.start());
  ASSERT_TRUE(d.enumerate(1, 7));
  ASSERT_FALSE(d.control(7, {0x00, 9, 3, 0, 0}).halted);
  ASSERT_FALSE(d.control(7, {0x01, 11, 1, 0, 0}).halted);  // SET_INTERFACE(0, 1)
  ASSERT_TRUE(d.start_periodic());
  std::vector<uint8_t> want(1024);
  for (size_t i = 0; i < want.size(); ++i) want[i] = static_cast<uint8_t>(i % 63);
  const uint32_t f = d.frame();
  std::vector<uint32_t> ins, outs;
  for (uint32_t k = 0; k < 8; ++k) {
    ins.push_back(d.itd(7, 0x82, 1024, f + 2 + k, 0x01, 1024));
    outs.push_back(d.itd(7, 0x02, 1024, f + 2 + k, 0x01, 1024, want));
  }
  for (uint32_t a : ins) {
    auto r = d.wait_itd(a);
    ASSERT_TRUE(r.done);
    EXPECT_EQ(r.status, 0u);
    EXPECT_EQ(r.actual, 1024u);
    EXPECT_EQ(r.data, want);
  }
  for (uint32_t a : outs) {
    auto r = d.wait_itd(a);
    ASSERT_TRUE(r.done);
    EXPECT_EQ(r.status, 0u);
  }
  EXPECT_EQ(gz.iso_out_mismatches(), 0u);
  EXPECT_GT(irq.raised, 0);
  // An iTD for an address nobody has: a transaction error, the frame list goes on.
  auto lost = d.wait_itd(d.itd(9, 0x82, 1024, d.frame() + 2, 0x01, 1024));
  EXPECT_EQ(lost.status & (Itd::kXactError >> 28), Itd::kXactError >> 28);
}

}  // namespace
}  // namespace hc::ehci
