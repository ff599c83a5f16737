// Interrupt endpoints and devices that answer later, on both models: a scripted FakeDevice
// (interrupt IN 0x83, 64 bytes, bInterval 4) keeps every transfer pending until the test
// completes it — a short interrupt report, and (xHCI) Stop Endpoint while a TD is at the device.
#include <gtest/gtest.h>

#include "host-controller/ehci/ehci_function.h"
#include "host-controller/xhci/regs.h"
#include "host-controller/xhci/xhci_function.h"
#include "tests/unit/host-controller/ehci_ref_driver.h"
#include "tests/unit/host-controller/xhci_ref_driver.h"
#include "usb/core/fake_device.h"

namespace hc {
namespace {

struct NoIrq : IrqLine {
  void set_level(bool) override {}
  void message(uint16_t) override {}
};

class XhciTarget : public xhci::testing::XhciTarget {
 public:
  explicit XhciTarget(usb::Device& dev)
      : ram_(8u << 20, 0x100000),
        hc_(ram_, irq_, [] { return std::chrono::steady_clock::time_point{}; }) {
    hc_.attach(1, dev);
  }
  uint32_t read32(uint32_t off) override { return static_cast<uint32_t>(hc_.mmio_read(off, 4)); }
  void write32(uint32_t off, uint32_t v) override { hc_.mmio_write(off, v, 4); }
  GuestMemory& memory() override { return ram_; }
  void idle() override {}

 private:
  InMemoryGuestMemory ram_;
  NoIrq irq_;
  xhci::XhciFunction hc_;
};

xhci::testing::XhciRefDriver::Options xhci_options() {
  xhci::testing::XhciRefDriver::Options o;
  o.ram_base = 0x100000;
  o.ram_size = 8u << 20;
  o.max_td_bytes = 1024;
  o.buffers_per_endpoint = 8;
  o.timeout = std::chrono::milliseconds(200);
  return o;
}

TEST(XhciInterrupt, AShortReportAndAStopWhileTheDeviceHoldsTheTd) {
  usb::testing::FakeDevice dev(usb::testing::gadget_zero_like_descriptors());
  XhciTarget target(dev);
  xhci::testing::XhciRefDriver d(target, xhci_options());
  ASSERT_TRUE(d.start());
  auto e = d.enumerate(1);
  ASSERT_TRUE(e);
  auto eps = xhci::testing::XhciRefDriver::endpoints_of(e->configuration, 0, 0);
  ASSERT_EQ(d.configure(e->slot, eps), xhci::Completion::kSuccess);
  const uint8_t dci = xhci::dci_of(0x83);
  EXPECT_EQ(d.output(e->slot).endpoints[dci - 1].type(), xhci::EndpointType::kInterruptIn);
  EXPECT_EQ(d.output(e->slot).endpoints[dci - 1].interval(), 3u) << "bInterval 4 → 2^3 µframes";
  // A 64-byte interrupt TD; the device answers 8 bytes later.
  xhci::testing::Td td = d.normal(e->slot, dci, 64);
  ASSERT_EQ(dev.pending.size(), 1u);
  EXPECT_EQ(dev.pending.front()->type(), usb::TransferType::kInterrupt);
  EXPECT_EQ(dev.pending.front()->endpoint(), 0x83);
  const uint8_t report[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  std::copy(report, report + 8, dev.pending.front()->buffer().begin());
  dev.complete_next(usb::Status::kOk, 8);
  ASSERT_TRUE(d.wait(td));
  EXPECT_EQ(td->code, xhci::Completion::kShortPacket);
  EXPECT_EQ(td->actual, 8u);
  EXPECT_EQ(td->data, std::vector<uint8_t>(report, report + 8));
  // Another TD waits at the device; Stop Endpoint takes it back (Stopped event at the TD, the
  // device asked to cancel), Set TR Dequeue skips it, and a new TD goes out.
  xhci::testing::Td waiting = d.normal(e->slot, dci, 64);
  ASSERT_EQ(dev.pending.size(), 1u);
  EXPECT_EQ(d.stop_endpoint(e->slot, dci), xhci::Completion::kSuccess);
  EXPECT_EQ(dev.cancel_requests.size(), 1u);
  d.poll_events();
  EXPECT_TRUE(waiting->done);
  EXPECT_EQ(waiting->code, xhci::Completion::kStopped);
  EXPECT_EQ(d.skip_queued(e->slot, dci), xhci::Completion::kSuccess);
  xhci::testing::Td next = d.normal(e->slot, dci, 64);
  ASSERT_EQ(dev.pending.size(), 1u) << "the doorbell restarted the stopped endpoint";
  dev.complete_next(usb::Status::kOk, 64);
  ASSERT_TRUE(d.wait(next));
  EXPECT_EQ(next->code, xhci::Completion::kSuccess);
}

class EhciTarget : public ehci::testing::Target {
 public:
  explicit EhciTarget(usb::Device& dev)
      : ram_(8u << 20, 0x100000), hc_(ram_, irq_, [this] { return now_; }) {
    hc_.attach(1, dev);
  }
  uint32_t read32(uint32_t off) override { return static_cast<uint32_t>(hc_.mmio_read(off, 4)); }
  void write32(uint32_t off, uint32_t v) override { hc_.mmio_write(off, v, 4); }
  GuestMemory& memory() override { return ram_; }
  void idle() override {
    now_ += std::chrono::milliseconds(1);
    hc_.poll();
  }

 private:
  InMemoryGuestMemory ram_;
  NoIrq irq_;
  std::chrono::steady_clock::time_point now_{};
  ehci::EhciFunction hc_;
};

// An interrupt QH (S-mask) in the frame list: its qTD goes to the device as an interrupt
// transfer, and the short report retires it with the bytes left.
TEST(EhciInterrupt, AnInterruptQhInTheFrameList) {
  usb::testing::FakeDevice dev(usb::testing::gadget_zero_like_descriptors());
  EhciTarget target(dev);
  ehci::testing::EhciRefDriver::Options o;
  o.ram_base = 0x100000;
  o.ram_size = 8u << 20;
  o.timeout = std::chrono::milliseconds(300);
  ehci::testing::EhciRefDriver d(target, o);
  ASSERT_TRUE(d.start());
  ASSERT_TRUE(d.reset_port(1));
  ASSERT_FALSE(d.control(0, {0x00, 5, 4, 0, 0}).halted);  // SET_ADDRESS 4, kept by the model
  ASSERT_FALSE(d.control(4, {0x00, 9, 3, 0, 0}).halted);  // SET_CONFIGURATION, an operation
  ASSERT_TRUE(d.start_periodic());
  // The QH and a 64-byte IN qTD, linked from every frame (S-mask: microframe 0).
  using ehci::Qh;
  using ehci::Qtd;
  using ehci::QtdToken;
  const auto qh = static_cast<uint32_t>(d.alloc(sizeof(Qh)));
  const auto qtd = static_cast<uint32_t>(d.alloc(sizeof(Qtd)));
  const auto buf = static_cast<uint32_t>(d.alloc(4096, 4096));
  Qtd t;
  t.next.raw = 1;
  t.alt_next.raw = 1;
  t.token.raw = QtdToken::kActive | (1u << 8) | (3u << 10) | (1u << 15) | (64u << 16);
  t.buffer[0] = buf;
  ASSERT_TRUE(d.mem().write_obj(qtd, t));
  Qh h;
  h.horizontal.raw = 1;
  h.characteristics = 4 | (3u << 8) | (2u << 12) | (64u << 16);
  h.capabilities = 0x01 | (1u << 30);
  h.overlay.next.raw = qtd;
  h.overlay.alt_next.raw = 1;
  ASSERT_TRUE(d.mem().write_obj(qh, h));
  uint32_t frame_list =
      target.read32(ehci::EhciFunction::kCapLength + ehci::reg::kPeriodicListBase);
  for (uint32_t f = 0; f < 1024; ++f) ASSERT_TRUE(d.mem().write_obj(frame_list + 4 * f, qh | 2u));
  for (int i = 0; i < 5 && dev.pending.empty(); ++i) target.idle();
  ASSERT_EQ(dev.pending.size(), 1u);
  EXPECT_EQ(dev.pending.front()->type(), usb::TransferType::kInterrupt);
  EXPECT_EQ(dev.pending.front()->endpoint(), 0x83);
  dev.complete_next(usb::Status::kOk, 8);
  QtdToken after;
  ASSERT_TRUE(d.mem().read_obj(qtd + 8, after));
  EXPECT_FALSE(after.active());
  EXPECT_FALSE(after.halted());
  EXPECT_EQ(after.total_bytes(), 56u) << "64 asked, 8 arrived";
}

}  // namespace
}  // namespace hc

namespace hc {
namespace {

// A function that goes away while a device still holds one of its transfers (a remote backend's
// unlink round trip): the transfer lives on, owned by the orphan store its completion holds, and
// the device's late completion touches nothing that is gone (ASan watches).
TEST(Orphans, ATransferOutlivesTheFunctionThatAbandonedIt) {
  usb::testing::FakeDevice dev(usb::testing::gadget_zero_like_descriptors());
  dev.complete_on_cancel = false;  // the device answers the cancel later
  {
    XhciTarget target(dev);
    xhci::testing::XhciRefDriver d(target, xhci_options());
    ASSERT_TRUE(d.start());
    auto e = d.enumerate(1);
    ASSERT_TRUE(e);
    ASSERT_EQ(
        d.configure(e->slot, xhci::testing::XhciRefDriver::endpoints_of(e->configuration, 0, 0)),
        xhci::Completion::kSuccess);
    d.normal(e->slot, xhci::dci_of(0x83), 64);
    ASSERT_EQ(dev.pending.size(), 1u);
  }  // the function is destroyed with the TD at the device
  EXPECT_EQ(dev.cancel_requests.size(), 1u) << "it asked the device to give it back";
  dev.complete_next(usb::Status::kCancelled, 0);  // the late answer: nothing to crash into
  EXPECT_TRUE(dev.pending.empty());
}

}  // namespace
}  // namespace hc
