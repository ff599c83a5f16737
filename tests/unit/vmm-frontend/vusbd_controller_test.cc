// vusbd's register-level path: VMs get xHCI functions on vusbd's shared controller and find on
// their root-hub ports exactly the devices vusbd's AddressMap gave them — their views of the
// shared devices. The reference guest driver enumerates and moves data through them; a VM's
// Configure Endpoint that would over-commit the bus gets Bandwidth Error from the same
// BusReservations the USB/IP path uses.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include "host-controller/xhci/regs.h"
#include "tests/unit/host-controller/ehci_ref_driver.h"
#include "tests/unit/host-controller/xhci_ref_driver.h"
#include "vmm-frontend/vusbd.h"
#include "tests/unit/run_until.h"

namespace vusbd {
namespace {

namespace asio = boost::asio;
using hc::xhci::Completion;
using hc::xhci::testing::XhciRefDriver;

struct NullIrq : hc::IrqLine {
  void set_level(bool) override {}
  void message(uint16_t) override {}
};

// One VM's side: its RAM and IRQ, and MMIO into its function on vusbd's controller.
class VmSide : public hc::xhci::testing::XhciTarget {
 public:
  VmSide(asio::io_context& io, Vusbd& daemon)
      : io_(io), daemon_(daemon), ram_(16u << 20, 0x100000) {}
  bool attach(const std::string& vm) {
    auto id = daemon_.attach_controller(vm, ram_, irq_);
    if (!id) return false;
    id_ = *id;
    return true;
  }
  uint32_t read32(uint32_t off) override {
    return static_cast<uint32_t>(daemon_.controller().mmio_read(id_, off, 4));
  }
  void write32(uint32_t off, uint32_t v) override {
    daemon_.controller().mmio_write(id_, off, v, 4);
  }
  hc::GuestMemory& memory() override { return ram_; }
  void idle() override {
    io_.run_for(std::chrono::microseconds(200));
    if (io_.stopped()) io_.restart();
  }
  hc::GuestMemory& ram() { return ram_; }
  hc::IrqLine& irq() { return irq_; }
  void set_id(hc::Controller::VmId id) { id_ = id; }
  static XhciRefDriver::Options options() {
    XhciRefDriver::Options o;
    o.ram_base = 0x100000;
    o.ram_size = 16u << 20;
    o.max_td_bytes = 4096;
    o.buffers_per_endpoint = 8;
    o.timeout = std::chrono::milliseconds(5000);
    return o;
  }

 private:
  asio::io_context& io_;
  Vusbd& daemon_;
  hc::InMemoryGuestMemory ram_;
  NullIrq irq_;
  hc::Controller::VmId id_ = 0;
};

using usb::testing::run_until;

DeviceConfig device(const std::string& name, const std::string& source,
                    std::vector<std::string> vms) {
  DeviceConfig d;
  d.name = name;
  EXPECT_TRUE(parse_source(source, d));
  d.vms = std::move(vms);
  return d;
}

// Enumerates the device on `port`, sets configuration 3 after configuring its alt-0 endpoints.
std::optional<XhciRefDriver::Enumerated> bring_up(XhciRefDriver& d, uint32_t port) {
  auto e = d.enumerate(port);
  if (!e) return e;
  EXPECT_EQ(d.configure(e->slot, XhciRefDriver::endpoints_of(e->configuration, 0, 0)),
            Completion::kSuccess);
  EXPECT_EQ(d.control_sync(e->slot, {0x00, 9, 3, 0, 0}).first, Completion::kSuccess);
  return e;
}

class VusbdControllerTest : public ::testing::Test {
 protected:
  void start(std::vector<DeviceConfig> devices) {
    VusbdConfig config;
    config.vms = {{"vm1", {"127.0.0.1", 0}}, {"vm2", {"127.0.0.1", 0}}};
    config.devices = std::move(devices);
    daemon = std::make_unique<Vusbd>(io, config);
    bool ready = false;
    auto started = daemon->start([&] { ready = true; });
    ASSERT_TRUE(started) << started.error().message;
    ASSERT_TRUE(run_until(io, [&] { return ready; }));
    vm1 = std::make_unique<VmSide>(io, *daemon);
    vm2 = std::make_unique<VmSide>(io, *daemon);
    ASSERT_TRUE(vm1->attach("vm1"));
    ASSERT_TRUE(vm2->attach("vm2"));
  }
  void TearDown() override {
    if (daemon) {
      daemon->detach_controller("vm1");
      daemon->detach_controller("vm2");
    }
  }
  asio::io_context io;
  std::unique_ptr<Vusbd> daemon;
  std::unique_ptr<VmSide> vm1, vm2;
};

// One Gadget Zero shared by both VMs, a second one given to vm2 only: each VM's function has on
// its ports exactly what the AddressMap gave it; both move bulk data through their own view.
TEST_F(VusbdControllerTest, EachVmsPortsHoldWhatItWasGiven) {
  start({device("gz", "emulated:gadget-zero?pattern=1", {"vm1", "vm2"}),
         device("gz2", "emulated:gadget-zero", {"vm2"})});
  EXPECT_EQ(daemon->controller_port("vm1", "gz"), 1u);
  EXPECT_EQ(daemon->controller_port("vm1", "gz2"), 0u);
  EXPECT_EQ(daemon->controller_port("vm2", "gz"), 1u);
  EXPECT_EQ(daemon->controller_port("vm2", "gz2"), 2u);
  XhciRefDriver d1(*vm1, VmSide::options()), d2(*vm2, VmSide::options());
  ASSERT_TRUE(d1.start());
  ASSERT_TRUE(d2.start());
  EXPECT_EQ(d1.portsc(2) & hc::xhci::reg::kPortCcs, 0u) << "vm1 was not given gz2";
  EXPECT_NE(d2.portsc(2) & hc::xhci::reg::kPortCcs, 0u);
  auto e1 = bring_up(d1, 1);
  auto e2 = bring_up(d2, 1);
  ASSERT_TRUE(e1 && e2);
  EXPECT_EQ(e1->device.vendor_id, 0x0525);
  std::vector<hc::xhci::testing::Td> t1, t2;
  for (int i = 0; i < 8; ++i) {
    t1.push_back(d1.normal(e1->slot, 3, 4096));
    t2.push_back(d2.normal(e2->slot, 3, 4096));
  }
  ASSERT_TRUE(d1.wait_all(t1));
  ASSERT_TRUE(d2.wait_all(t2));
  std::vector<uint8_t> want(4096);
  for (size_t i = 0; i < want.size(); ++i) want[i] = static_cast<uint8_t>((i % 512) % 63);
  for (auto& t : t1) {
    EXPECT_EQ(t->code, Completion::kSuccess);
    EXPECT_EQ(t->data, want);
  }
  for (auto& t : t2) EXPECT_EQ(t->code, Completion::kSuccess);
  const auto stats = daemon->stats();
  EXPECT_GE(stats["vms"]["vm1"]["gz"]["bytes_in"].get<uint64_t>(), 8u * 4096);
  EXPECT_GE(stats["vms"]["vm2"]["gz"]["bytes_in"].get<uint64_t>(), 8u * 4096);
}

// vm1 streams iso on gz (82 % of the bus's microframe); vm2's Configure Endpoint for gz2's iso
// endpoints on the same bus is a Bandwidth Error, and nothing of vm2's changed.
TEST_F(VusbdControllerTest, ConfigureEndpointOverTheBusBudgetIsABandwidthError) {
  start({device("gz", "emulated:gadget-zero?isoc_mult=1,isoc_interval=1", {"vm1"}),
         device("gz2", "emulated:gadget-zero?isoc_mult=1,isoc_interval=1", {"vm2"})});
  XhciRefDriver d1(*vm1, VmSide::options()), d2(*vm2, VmSide::options());
  ASSERT_TRUE(d1.start());
  ASSERT_TRUE(d2.start());
  auto e1 = bring_up(d1, 1);
  auto e2 = bring_up(d2, 1);
  ASSERT_TRUE(e1 && e2);
  auto iso = [](const std::vector<uint8_t>& config) {
    auto all = XhciRefDriver::endpoints_of(config, 0, 1);
    return all;
  };
  ASSERT_EQ(d1.configure(e1->slot, iso(e1->configuration)), Completion::kSuccess);
  ASSERT_EQ(d1.control_sync(e1->slot, {0x01, 11, 1, 0, 0}).first, Completion::kSuccess);
  EXPECT_EQ(d2.configure(e2->slot, iso(e2->configuration)), Completion::kBandwidthError);
  EXPECT_EQ(d2.output(e2->slot).endpoints[3].state(), hc::xhci::EndpointState::kDisabled)
      << "vm2's iso endpoints were not added";
  // vm1 gives the bandwidth back (alt 0, endpoints dropped): now vm2 fits.
  ASSERT_EQ(d1.control_sync(e1->slot, {0x01, 11, 0, 0, 0}).first, Completion::kSuccess);
  ASSERT_EQ(d1.configure(e1->slot, {}, {4, 5}), Completion::kSuccess);
  run_until(
      io, [] { return false; }, 20);
  EXPECT_EQ(d2.configure(e2->slot, iso(e2->configuration)), Completion::kSuccess);
}

// A VM that leaves the register-level path gets its devices back over USB/IP.
TEST_F(VusbdControllerTest, DetachingTheControllerReturnsDevicesToUsbip) {
  start({device("gz", "emulated:gadget-zero", {"vm1"})});
  EXPECT_EQ(daemon->controller_port("vm1", "gz"), 1u);
  daemon->detach_controller("vm1");
  EXPECT_EQ(daemon->controller_port("vm1", "gz"), 0u);
  const auto vms = daemon->vms_json();
  bool exported = false;
  for (const auto& vm : vms)
    if (vm["name"] == "vm1")
      for (const auto& d : vm["devices"]) exported = exported || d["device"] == "gz";
  EXPECT_TRUE(exported);
}

}  // namespace
}  // namespace vusbd

namespace vusbd {
namespace {

// A VM on an EHCI function with `bandwidth_device`: its EHCI bus holds the device it was given and
// vusbd's reservation device, which shows what the other VM (on xHCI) reserved on the bus.
TEST(VusbdEhciTest, TheReservationDeviceShowsUpOnTheEhciBus) {
  asio::io_context io;
  VusbdConfig config;
  config.vms = {{"vm1", {"127.0.0.1", 0}}, {"vm2", {"127.0.0.1", 0}}};
  config.vms[0].bandwidth_device = true;
  config.devices = {device("gz", "emulated:gadget-zero", {"vm1"}),
                    device("gz2", "emulated:gadget-zero?isoc_mult=1,isoc_interval=1", {"vm2"})};
  Vusbd daemon(io, config);
  bool ready = false;
  ASSERT_TRUE(daemon.start([&] { ready = true; }));
  ASSERT_TRUE(run_until(io, [&] { return ready; }));
  VmSide vm1(io, daemon), vm2(io, daemon);
  auto id1 = daemon.attach_controller("vm1", vm1.ram(), vm1.irq(), hc::Controller::Model::kEhci);
  ASSERT_TRUE(id1);
  vm1.set_id(*id1);
  ASSERT_TRUE(vm2.attach("vm2"));
  const uint32_t gz_port = daemon.controller_port("vm1", "gz");
  const uint32_t bw_port = daemon.controller_port("vm1", "bandwidth");
  EXPECT_EQ(gz_port, 1u);
  EXPECT_EQ(bw_port, 2u);
  // vm2 streams iso on gz2 (xHCI: Configure Endpoint, SET_INTERFACE 1).
  XhciRefDriver d2(vm2, VmSide::options());
  ASSERT_TRUE(d2.start());
  auto e2 = bring_up(d2, 1);
  ASSERT_TRUE(e2);
  ASSERT_EQ(d2.configure(e2->slot, XhciRefDriver::endpoints_of(e2->configuration, 0, 1)),
            Completion::kSuccess);
  ASSERT_EQ(d2.control_sync(e2->slot, {0x01, 11, 1, 0, 0}).first, Completion::kSuccess);
  run_until(
      io, [] { return false; }, 50);  // the reservation device is rebuilt and re-plugged
  // vm1's EHCI driver finds both devices on its bus.
  hc::ehci::testing::EhciRefDriver::Options o;
  o.ram_base = 0x100000;
  o.ram_size = 16u << 20;
  hc::ehci::testing::EhciRefDriver e1(vm1, o);
  ASSERT_TRUE(e1.start());
  auto vid = e1.enumerate(gz_port, 2);
  ASSERT_TRUE(vid);
  EXPECT_EQ(*vid, 0x0525);
  auto bw = e1.enumerate(daemon.controller_port("vm1", "bandwidth"), 3);
  ASSERT_TRUE(bw);
  EXPECT_EQ(*bw, 0x1209) << "vusbd's reservation device";
  auto head = e1.control(3, {0x80, 6, 0x0200, 0, 9});
  ASSERT_EQ(head.data.size(), 9u);
  auto cfg = e1.control(
      3, {0x80, 6, 0x0200, 0, static_cast<uint16_t>(head.data[2] | (head.data[3] << 8))});
  auto parsed = usb::ConfigurationDescriptor::parse(cfg.data);
  ASSERT_TRUE(parsed);
  size_t iso = 0;
  for (const auto& intf : parsed->interfaces)
    for (const auto& e : intf.endpoints) iso += e.type() == usb::TransferType::kIsochronous;
  EXPECT_GE(iso, 2u) << "vm2's two iso endpoints, as a high-speed device states them";
  daemon.detach_controller("vm1");
  daemon.detach_controller("vm2");
}

}  // namespace
}  // namespace vusbd
