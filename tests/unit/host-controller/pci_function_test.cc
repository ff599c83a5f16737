// A VM's controller function as a PCI device: configuration header, BAR sizing, the MSI-X
// capability with its table and PBA in the BAR, and interrupts going out as INTx or as the MSI-X
// messages the guest programmed — through hc::Controller as a VMM reaches it.
#include "host-controller/pci/pci_function.h"

#include <gtest/gtest.h>

#include "devices/emulated/gadget_zero.h"
#include "host-controller/controller.h"
#include "host-controller/xhci/regs.h"
#include "tests/unit/host-controller/xhci_ref_driver.h"

namespace hc {
namespace {

using xhci::TrbType;
using xhci::testing::XhciRefDriver;
using namespace xhci::reg;

struct VmIrq : IrqLine {
  bool level = false;
  std::vector<std::pair<uint64_t, uint32_t>> msis;
  void set_level(bool a) override { level = a; }
  void message(uint16_t) override {}
  void msi(uint64_t address, uint32_t data) override { msis.emplace_back(address, data); }
};

class PciTest : public ::testing::Test, public xhci::testing::XhciTarget {
 protected:
  PciTest()
      : ram(8u << 20, 0x100000),
        controller([](std::function<void()> f) { f(); },
                   [] { return std::chrono::steady_clock::time_point{}; }),
        vm(controller.add_vm("vm", ram, irq)) {}

  uint32_t read32(uint32_t off) override {
    return static_cast<uint32_t>(controller.mmio_read(vm, off, 4));
  }
  void write32(uint32_t off, uint32_t v) override { controller.mmio_write(vm, off, v, 4); }
  GuestMemory& memory() override { return ram; }
  void idle() override {}

  uint32_t cfg(uint32_t off, unsigned size = 4) { return controller.config_read(vm, off, size); }
  void set_cfg(uint32_t off, uint32_t v, unsigned size = 4) {
    controller.config_write(vm, off, v, size);
  }
  XhciRefDriver::Options options() {
    XhciRefDriver::Options o;
    o.ram_base = 0x100000;
    o.ram_size = 8u << 20;
    o.max_td_bytes = 1024;
    o.buffers_per_endpoint = 4;
    return o;
  }

  InMemoryGuestMemory ram;
  VmIrq irq;
  Controller controller;
  Controller::VmId vm;
  devices::GadgetZero gz{devices::GadgetZeroOptions{}};
};

TEST_F(PciTest, HeaderIdentifiesAnXhciController) {
  EXPECT_EQ(cfg(0x00, 2), 0x1b36u);
  EXPECT_EQ(cfg(0x02, 2), 0x000du);
  EXPECT_EQ(cfg(0x08) >> 8, 0x0c0330u) << "class: serial bus / USB / xHCI";
  EXPECT_EQ(cfg(0x0e, 1), 0u) << "header type 0";
  EXPECT_EQ(cfg(0x06, 2) & 0x10, 0x10u) << "a capabilities list";
  EXPECT_EQ(cfg(0x34, 1), PciFunction::kMsixCapability);
  EXPECT_EQ(cfg(0x3d, 1), 1u) << "INTA#";
  EXPECT_EQ(cfg(0x60, 1), 0x30u) << "SBRN: USB 3.0";
  set_cfg(0x3c, 11, 1);
  EXPECT_EQ(cfg(0x3c, 1), 11u) << "interrupt line is the OS's scratch byte";
  set_cfg(0x00, 0x12345678);
  EXPECT_EQ(cfg(0x00, 2), 0x1b36u) << "read-only";
}

TEST_F(PciTest, BarSizingAndPlacement) {
  EXPECT_EQ(cfg(0x10) & 0xf, 0x4u) << "64-bit memory BAR";
  set_cfg(0x10, 0xffffffff);
  set_cfg(0x14, 0xffffffff);
  EXPECT_EQ(cfg(0x10), 0xffffc004u) << "16 KiB";
  EXPECT_EQ(cfg(0x14), 0xffffffffu);
  set_cfg(0x10, 0xfe004000);
  set_cfg(0x14, 0x1);
  EXPECT_EQ(controller.pci(vm)->bar_address(), 0x1fe004000u);
  set_cfg(0x04, 0x6, 2);
  EXPECT_TRUE(controller.pci(vm)->memory_enabled());
  EXPECT_TRUE(controller.pci(vm)->bus_master());
}

TEST_F(PciTest, MsixCapabilityPointsIntoTheBar) {
  const uint32_t cap = PciFunction::kMsixCapability;
  EXPECT_EQ(cfg(cap) & 0xff, 0x11u);
  EXPECT_EQ((cfg(cap) >> 16) & 0x7ff, 0u) << "one vector (table size - 1)";
  EXPECT_EQ(cfg(cap + 4), 0x3000u) << "table at 0x3000, BIR 0";
  EXPECT_EQ(cfg(cap + 8), 0x3800u) << "PBA at 0x3800, BIR 0";
  EXPECT_EQ(read32(0x300c), 1u) << "vector masked after reset";
}

// INTx while MSI-X is off; the command register's Interrupt Disable drops the line.
TEST_F(PciTest, IntxFollowsTheInterrupterUnlessDisabled) {
  set_cfg(0x04, 0x6, 2);
  XhciRefDriver d(*this, options());
  ASSERT_TRUE(d.start());
  controller.xhci(vm)->attach(1, gz);  // a Port Status Change event: IP
  EXPECT_TRUE(irq.level);
  EXPECT_EQ(cfg(0x06, 2) & 0x8, 0x8u) << "status: interrupt";
  set_cfg(0x04, 0x6 | 0x400, 2);
  EXPECT_FALSE(irq.level);
  set_cfg(0x04, 0x6, 2);
  EXPECT_TRUE(irq.level);
  EXPECT_TRUE(irq.msis.empty());
}

// MSI-X: the programmed message goes out and IP clears itself (xHCI 4.17.1); a masked vector's
// interrupt waits in the PBA and goes out on unmask.
TEST_F(PciTest, MsixSendsTheProgrammedMessage) {
  set_cfg(0x04, 0x6, 2);
  write32(0x3000, 0xfee00000);
  write32(0x3004, 0);
  write32(0x3008, 0x4021);
  write32(0x300c, 0);                                    // unmask
  set_cfg(PciFunction::kMsixCapability + 2, 0x8000, 2);  // enable
  EXPECT_TRUE(controller.pci(vm)->msix_enabled());
  XhciRefDriver d(*this, options());
  ASSERT_TRUE(d.start());
  controller.xhci(vm)->attach(1, gz);
  ASSERT_EQ(irq.msis.size(), 1u);
  EXPECT_EQ(irq.msis[0], (std::pair<uint64_t, uint32_t>{0xfee00000, 0x4021}));
  EXPECT_FALSE(irq.level) << "no INTx under MSI-X";
  const uint32_t ir0 = d.runtime_base() + kInterrupterBase;
  EXPECT_EQ(read32(ir0 + kIman) & kImanIp, 0u) << "IP cleared when the message was sent";
  d.poll_events();
  // Masked: held in the PBA, sent on unmask.
  write32(0x300c, 1);
  controller.xhci(vm)->detach(1);
  EXPECT_EQ(irq.msis.size(), 1u);
  EXPECT_EQ(read32(0x3800) & 1, 1u) << "pending bit";
  write32(0x300c, 0);
  EXPECT_EQ(irq.msis.size(), 2u);
  EXPECT_EQ(read32(0x3800) & 1, 0u);
  // The function mask holds every vector the same way.
  d.poll_events();
  set_cfg(PciFunction::kMsixCapability + 2, 0xc000, 2);
  controller.xhci(vm)->attach(1, gz);
  EXPECT_EQ(irq.msis.size(), 2u);
  set_cfg(PciFunction::kMsixCapability + 2, 0x8000, 2);
  EXPECT_EQ(irq.msis.size(), 3u);
}

}  // namespace
}  // namespace hc

namespace hc {
namespace {

// An 8-byte access that starts in the table's last dword and runs past it touches only the table
// (the second half reads 0 and writes nothing) — ASan watches the heap.
TEST_F(PciTest, AnMsixAccessRunningPastTheTableStaysInIt) {
  controller.mmio_write(vm, 0x300c, 0xffffffff00000000ull, 8);
  EXPECT_EQ(read32(0x300c), 0u) << "the vector's control dword took the low half";
  EXPECT_EQ(controller.mmio_read(vm, 0x300c, 8) >> 32, 0u);
}

}  // namespace
}  // namespace hc
