// hc::Controller: several VMs' xHCI functions on one loop, their rings served through the fair
// queue — one VM's deep ring does not starve another's, weights hold, and a VM's rings reach
// only the devices on its own ports. Deterministic: the loop is a queue this test runs by hand.
#include "host-controller/controller.h"

#include <gtest/gtest.h>

#include <deque>

#include "devices/emulated/gadget_zero.h"
#include "host-controller/xhci/regs.h"
#include "tests/unit/host-controller/xhci_ref_driver.h"

namespace hc {
namespace {

using xhci::Completion;
using xhci::testing::Td;
using xhci::testing::XhciRefDriver;

// A usb::Device that forwards to another and logs which VM's transfer reached it when.
class Recording : public usb::Device {
 public:
  Recording(usb::Device& inner, std::vector<std::string>& log, std::string vm)
      : inner_(inner), log_(log), vm_(std::move(vm)) {}
  const usb::DescriptorSet& descriptors() const override { return inner_.descriptors(); }
  usb::Speed speed() const override { return inner_.speed(); }
  const usb::DeviceLocation& location() const override { return inner_.location(); }
  uint8_t active_configuration() const override { return inner_.active_configuration(); }
  uint8_t alternate_setting(uint8_t i) const override { return inner_.alternate_setting(i); }
  bool connected() const override { return inner_.connected(); }
  void submit(usb::Transfer& t) override {
    if (t.type() == usb::TransferType::kBulk) log_.push_back(vm_);
    inner_.submit(t);
  }
  void cancel(usb::Transfer& t) override { inner_.cancel(t); }
  void reset(usb::StatusCallback d) override { inner_.reset(std::move(d)); }
  void set_configuration(uint8_t v, usb::StatusCallback d) override {
    inner_.set_configuration(v, std::move(d));
  }
  void set_interface(uint8_t i, uint8_t a, usb::StatusCallback d) override {
    inner_.set_interface(i, a, std::move(d));
  }
  void clear_halt(uint8_t e, usb::StatusCallback d) override { inner_.clear_halt(e, std::move(d)); }
  void set_halt(uint8_t e, usb::StatusCallback d) override { inner_.set_halt(e, std::move(d)); }

 private:
  usb::Device& inner_;
  std::vector<std::string>& log_;
  std::string vm_;
};

struct FakeIrq : IrqLine {
  void set_level(bool) override {}
  void message(uint16_t) override {}
};

class Loop {
 public:
  void post(std::function<void()> f) { tasks_.push_back(std::move(f)); }
  void run() {
    for (int n = 0; n < 100000 && !tasks_.empty(); ++n) {
      auto f = std::move(tasks_.front());
      tasks_.pop_front();
      f();
    }
  }
  void run_one() {
    auto f = std::move(tasks_.front());
    tasks_.pop_front();
    f();
  }
  size_t pending() const { return tasks_.size(); }

 private:
  std::deque<std::function<void()>> tasks_;
};

class Vm : public xhci::testing::XhciTarget {
 public:
  Vm(Loop& loop, Controller& c, std::string name, uint32_t weight = 1)
      : loop_(loop), c_(c), ram_(24u << 20, 0x100000), name_(name) {
    id_ = c_.add_vm(name, ram_, irq_, weight);
  }
  uint32_t read32(uint32_t off) override {
    return static_cast<uint32_t>(c_.xhci(id_)->mmio_read(off, 4));
  }
  void write32(uint32_t off, uint32_t v) override { c_.xhci(id_)->mmio_write(off, v, 4); }
  GuestMemory& memory() override { return ram_; }
  void idle() override { loop_.run(); }
  Controller::VmId id() const { return id_; }

 private:
  Loop& loop_;
  Controller& c_;
  InMemoryGuestMemory ram_;
  FakeIrq irq_;
  std::string name_;
  Controller::VmId id_;
};

XhciRefDriver::Options options() {
  XhciRefDriver::Options o;
  o.ram_base = 0x100000;
  o.ram_size = 24u << 20;
  return o;
}

// Enumerates Gadget Zero on port 1 and configures its bulk endpoints; the slot.
uint8_t bring_up(XhciRefDriver& d) {
  EXPECT_TRUE(d.start());
  auto e = d.enumerate(1);
  EXPECT_TRUE(e);
  if (!e) return 0;
  // Gadget Zero lists source/sink (3) first at high speed.
  auto eps = XhciRefDriver::endpoints_of(e->configuration, 0, 0);
  EXPECT_EQ(d.configure(e->slot, eps), Completion::kSuccess);
  EXPECT_EQ(d.control_sync(e->slot, {0x00, 9, 3, 0, 0}).first, Completion::kSuccess);
  return e->slot;
}

class ControllerTest : public ::testing::Test {
 protected:
  ControllerTest()
      : controller([this](std::function<void()> f) { loop.post(std::move(f)); },
                   [] { return std::chrono::steady_clock::time_point{}; },
                   Controller::Options{.quantum = 16 * 1024, .budget_per_turn = 1 << 20}) {}
  Loop loop;
  Controller controller;
  std::vector<std::string> log;
};

// VM a queues 64 bulk IN TDs of 16 KiB, VM b 8, both ring at once: the fair queue alternates
// them, so b's last TD starts among the first 16 — not after a's 64 as a FIFO would have it.
TEST_F(ControllerTest, ADeepRingDoesNotStarveAnotherVm) {
  devices::GadgetZero gza{devices::GadgetZeroOptions{}}, gzb{devices::GadgetZeroOptions{}};
  Recording ra(gza, log, "a"), rb(gzb, log, "b");
  Vm a(loop, controller, "a"), b(loop, controller, "b");
  controller.xhci(a.id())->attach(1, ra);
  controller.xhci(b.id())->attach(1, rb);
  XhciRefDriver da(a, options()), db(b, options());
  const uint8_t sa = bring_up(da), sb = bring_up(db);
  ASSERT_TRUE(sa && sb);
  std::vector<Td> ta, tb;
  for (int i = 0; i < 64; ++i) ta.push_back(da.normal(sa, 3, 16384, {}, false));
  for (int i = 0; i < 8; ++i) tb.push_back(db.normal(sb, 3, 16384, {}, false));
  log.clear();
  da.doorbell(sa, 3);
  db.doorbell(sb, 3);
  EXPECT_TRUE(log.empty()) << "doorbells only mark endpoints ready; the pump starts TDs";
  loop.run();
  ASSERT_TRUE(da.wait_all(ta));
  ASSERT_TRUE(db.wait_all(tb));
  ASSERT_EQ(log.size(), 72u);
  size_t last_b = 0;
  for (size_t i = 0; i < log.size(); ++i)
    if (log[i] == "b") last_b = i;
  EXPECT_LT(last_b, 16u) << "b's 8 TDs were served alternately with a's";
  EXPECT_EQ(controller.stats(a.id())->bytes - controller.stats(b.id())->bytes, 56u * 16384);
}

// Weights 3:1 with both rings deep: a gets three TDs for each of b's while both are backlogged.
TEST_F(ControllerTest, WeightsDivideTheTurns) {
  devices::GadgetZero gza{devices::GadgetZeroOptions{}}, gzb{devices::GadgetZeroOptions{}};
  Recording ra(gza, log, "a"), rb(gzb, log, "b");
  Vm a(loop, controller, "a", 3), b(loop, controller, "b", 1);
  controller.xhci(a.id())->attach(1, ra);
  controller.xhci(b.id())->attach(1, rb);
  XhciRefDriver da(a, options()), db(b, options());
  const uint8_t sa = bring_up(da), sb = bring_up(db);
  ASSERT_TRUE(sa && sb);
  std::vector<Td> ta, tb;
  for (int i = 0; i < 60; ++i) ta.push_back(da.normal(sa, 3, 16384, {}, false));
  for (int i = 0; i < 60; ++i) tb.push_back(db.normal(sb, 3, 16384, {}, false));
  log.clear();
  da.doorbell(sa, 3);
  db.doorbell(sb, 3);
  loop.run();
  ASSERT_TRUE(da.wait_all(ta));
  ASSERT_TRUE(db.wait_all(tb));
  // While both were backlogged (the first 80 TDs: a's 60 take 80 at 3:1), a had 3/4 of them.
  ASSERT_GE(log.size(), 80u);
  const auto a_first80 = std::count(log.begin(), log.begin() + 80, "a");
  EXPECT_NEAR(a_first80, 60, 2) << "a's share of the first 80 TDs";
}

// The pump yields the loop after its byte budget: other work (another VM's MMIO) runs between.
TEST_F(ControllerTest, ThePumpYieldsAfterItsBudget) {
  Controller small([this](std::function<void()> f) { loop.post(std::move(f)); },
                   [] { return std::chrono::steady_clock::time_point{}; },
                   Controller::Options{.budget_per_turn = 64 * 1024});
  devices::GadgetZero gz{devices::GadgetZeroOptions{}};
  Recording r(gz, log, "a");
  Vm a(loop, small, "a");
  small.xhci(a.id())->attach(1, r);
  XhciRefDriver d(a, options());
  const uint8_t s = bring_up(d);
  std::vector<Td> tds;
  for (int i = 0; i < 16; ++i) tds.push_back(d.normal(s, 3, 16384, {}, false));
  log.clear();
  d.doorbell(s, 3);
  ASSERT_EQ(loop.pending(), 1u);
  loop.run_one();
  EXPECT_EQ(log.size(), 4u) << "64 KiB of 16 KiB TDs, then the loop is free";
  EXPECT_EQ(loop.pending(), 1u) << "the pump comes back";
  loop.run();
  EXPECT_EQ(log.size(), 16u);
  EXPECT_TRUE(d.wait_all(tds));
}

// A VM's slots and ports are its own: a doorbell or command for a slot it never enabled, with
// another VM's device enumerated at slot 1, reaches nothing.
TEST_F(ControllerTest, OneVmsRingsNeverReachAnotherVmsDevice) {
  devices::GadgetZero gz{devices::GadgetZeroOptions{}};
  Recording r(gz, log, "a");
  Vm a(loop, controller, "a"), b(loop, controller, "b");
  controller.xhci(a.id())->attach(1, r);  // only a has a device
  XhciRefDriver da(a, options()), db(b, options());
  const uint8_t sa = bring_up(da);
  ASSERT_EQ(sa, 1);
  ASSERT_TRUE(db.start());
  EXPECT_EQ(db.portsc(1) & xhci::reg::kPortCcs, 0u) << "b's port 1 is empty";
  // b rings slot 1 / EP IN 1 and addresses "slot 1" on its port 1: nothing of a's.
  db.doorbell(1, 3);
  auto slot = db.enable_slot();
  ASSERT_TRUE(slot);
  EXPECT_EQ(db.address_device(*slot, 1, xhci::reg::kSpeedHigh, 64), Completion::kParameterError);
  loop.run();
  EXPECT_TRUE(log.empty());
  EXPECT_EQ(controller.stats(b.id())->tds, 0u);
}

// A VM id the caller got wrong (never added, or removed) is an error with a neutral answer, not
// an exception; asking an EHCI VM for its xHCI function (or the reverse) answers nullptr.
TEST_F(ControllerTest, UnknownVmAndWrongModelAreErrorsNotExceptions) {
  InMemoryGuestMemory ram(1u << 20, 0);
  FakeIrq irq;
  const auto x = controller.add_vm("x", ram, irq);
  const auto e = controller.add_vm("e", ram, irq, 1, Controller::Model::kEhci);
  EXPECT_NE(controller.xhci(x), nullptr);
  EXPECT_EQ(controller.ehci(x), nullptr);
  EXPECT_NE(controller.ehci(e), nullptr);
  EXPECT_EQ(controller.xhci(e), nullptr);
  EXPECT_EQ(controller.pci(e)->layout().bar_size, ehci::EhciFunction::kBarSize);
  EXPECT_EQ(controller.name(e), "e");

  const Controller::VmId gone = x;
  controller.remove_vm(gone);
  for (const Controller::VmId unknown : {gone, Controller::VmId{0}, Controller::VmId{999}}) {
    devices::GadgetZero gz{devices::GadgetZeroOptions{}};
    EXPECT_EQ(controller.xhci(unknown), nullptr);
    EXPECT_EQ(controller.ehci(unknown), nullptr);
    EXPECT_EQ(controller.pci(unknown), nullptr);
    EXPECT_EQ(controller.stats(unknown), nullptr);
    EXPECT_EQ(controller.name(unknown), "");
    EXPECT_FALSE(controller.attach(unknown, 1, gz));
    EXPECT_EQ(controller.mmio_read(unknown, 0, 4), ~uint64_t{0});
    EXPECT_EQ(controller.config_read(unknown, 0, 4), 0xffffffffu);
    controller.detach(unknown, 1);  // ignored
    controller.mmio_write(unknown, 0, 1, 4);
    controller.config_write(unknown, 4, 6, 2);
    controller.set_weight(unknown, 2);
    controller.remove_vm(unknown);
  }
  // The VM that is still there is untouched.
  EXPECT_EQ(controller.config_read(e, 8, 4) >> 8, 0x0c0320u);
  EXPECT_EQ(controller.stats(e)->tds, 0u);
  loop.run();
}

}  // namespace
}  // namespace hc
