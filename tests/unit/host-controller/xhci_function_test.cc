// XhciFunction programmed by a small reference driver, as Linux's xhci-hcd (and QEMU's qtest
// start sequence) does: reset, DCBAA, event ring, command ring, run, port reset, Enable Slot,
// Address Device — and the same controller facing a hostile guest.
#include "host-controller/xhci/xhci_function.h"

#include <gtest/gtest.h>

#include "devices/emulated/gadget_zero.h"
#include "host-controller/xhci/regs.h"

namespace hc::xhci {
namespace {

using namespace reg;

struct FakeIrq : IrqLine {
  bool level = false;
  int messages = 0;
  void set_level(bool a) override { level = a; }
  void message(uint16_t) override { ++messages; }
};

// Guest memory map of the reference driver.
constexpr uint64_t kDcbaa = 0x1000, kErst = 0x2000, kEvents = 0x3000, kCommands = 0x4000,
                   kInput = 0x5000, kOutput = 0x6000, kEp0Ring = 0x7000;
constexpr uint32_t kEventTrbs = 16, kCommandTrbs = 8;
constexpr uint32_t kOp = XhciFunction::kCapLength;
constexpr uint32_t kIr0 = XhciFunction::kRuntime + kInterrupterBase;

class RefDriver : public ::testing::Test {
 protected:
  RefDriver()
      : mem(0x10000), gz(devices::GadgetZeroOptions{}), hc(mem, irq, [this] { return now; }) {}

  uint32_t rd(uint32_t off) { return static_cast<uint32_t>(hc.mmio_read(off, 4)); }
  void wr(uint32_t off, uint32_t v) { hc.mmio_write(off, v, 4); }
  void wr64(uint32_t off, uint64_t v) {
    wr(off, static_cast<uint32_t>(v));
    wr(off + 4, static_cast<uint32_t>(v >> 32));
  }

  // HCRST, CONFIG, DCBAAP, ERST, ERDP, CRCR|RCS, IMAN.IE, RS|INTE.
  void start() {
    wr(kOp + kUsbCmd, kCmdHcReset);
    ASSERT_EQ(rd(kOp + kUsbSts) & kStsCnr, 0u);
    wr(kOp + kConfig, 8);
    ASSERT_TRUE(mem.write_obj(kDcbaa + 8, kOutput));  // slot 1's output context
    ErstEntry e{kEvents, kEventTrbs, 0};
    ASSERT_TRUE(mem.write_obj(kErst, e));
    wr(kIr0 + kErstSz, 1);
    wr64(kIr0 + kErdp, kEvents);
    wr64(kIr0 + kErstBa, kErst);
    wr64(kOp + kDcbaap, kDcbaa);
    wr64(kOp + kCrcr, kCommands | kCrcrRcs);
    wr(kIr0 + kIman, kImanIe);
    wr(kOp + kUsbCmd, kCmdRun | kCmdInte);
    ASSERT_EQ(rd(kOp + kUsbSts) & kStsHalted, 0u);
  }
  // The next event the driver has not consumed (cycle matches), or nullopt.
  std::optional<Trb> next_event() {
    Trb t;
    EXPECT_TRUE(mem.read_obj(kEvents + 16ull * ev_index, t));
    if (t.cycle() != ev_cycle) return std::nullopt;
    if (++ev_index == kEventTrbs) ev_index = 0, ev_cycle = !ev_cycle;
    wr64(kIr0 + kErdp, (kEvents + 16ull * ev_index) | kErdpEhb);
    return t;
  }
  Trb command(Trb cmd) {
    cmd.set_cycle(cmd_cycle);
    EXPECT_TRUE(mem.write_obj(kCommands + 16ull * cmd_index++, cmd));
    wr(XhciFunction::kDoorbells, 0);
    auto ev = next_event();
    EXPECT_TRUE(ev);
    EXPECT_EQ(ev->type(), TrbType::kCommandCompletionEvent);
    EXPECT_EQ(ev->parameter, kCommands + 16ull * (cmd_index - 1)) << "points at the command";
    return *ev;
  }
  static Trb make(TrbType t, uint8_t slot = 0, uint64_t param = 0, bool bsr = false) {
    Trb x;
    x.parameter = param;
    x.control = (uint32_t{slot} << 24) | (bsr ? 1u << 9 : 0u);
    x.set_type(t);
    return x;
  }
  void write_input_context(uint32_t port) {
    InputContext in;
    in.control.dw[1] = 3;                             // add slot + EP0
    in.slot.dw[0] = (1u << 27) | (kSpeedHigh << 20);  // one entry, high speed
    in.slot.dw[1] = port << 16;
    in.endpoints[0].dw[1] = (64u << 16) | (4u << 3) | (3u << 1);  // MPS 64, control, CErr 3
    in.endpoints[0].set_dequeue(kEp0Ring, true);
    ASSERT_TRUE(mem.write_obj(kInput, in));
  }

  InMemoryGuestMemory mem;
  FakeIrq irq;
  std::chrono::steady_clock::time_point now{};
  devices::GadgetZero gz;
  XhciFunction hc;
  uint32_t ev_index = 0, cmd_index = 0;
  bool ev_cycle = true, cmd_cycle = true;
};

TEST_F(RefDriver, CapabilitiesDescribeTheController) {
  EXPECT_EQ(rd(0) & 0xff, XhciFunction::kCapLength);
  EXPECT_EQ(rd(0) >> 16, kVersion);
  EXPECT_EQ(hc.mmio_read(kHciVersion, 2), kVersion) << "a 16-bit read of HCIVERSION";
  EXPECT_EQ(rd(kHcsParams1) >> 24, XhciFunction::kPorts);
  EXPECT_EQ(rd(kHcsParams1) & 0xff, XhciFunction::kMaxSlots);
  EXPECT_EQ(rd(kDbOff), XhciFunction::kDoorbells);
  EXPECT_EQ(rd(kRtsOff), XhciFunction::kRuntime);
  // Extended capabilities: Supported Protocol for USB 2 (ports 1-2) and USB 3 (ports 3-4).
  const uint32_t xecp = (rd(kHccParams1) >> 16) * 4;
  EXPECT_EQ(rd(xecp) & 0xff, kExtCapSupportedProtocol);
  EXPECT_EQ(rd(xecp) >> 24, 2u);
  EXPECT_EQ(rd(xecp + 8) & 0xff, 1u);
  const uint32_t next = xecp + ((rd(xecp) >> 8) & 0xff) * 4;
  EXPECT_EQ(rd(next) >> 24, 3u);
  EXPECT_EQ(rd(next + 8) & 0xff, 3u);
  EXPECT_EQ(rd(kOp + kUsbSts) & kStsHalted, kStsHalted) << "halted after power-on";
}

TEST_F(RefDriver, StartPortResetEnableSlotAddressDevice) {
  start();
  ASSERT_TRUE(hc.attach(1, gz));
  auto psc = next_event();
  ASSERT_TRUE(psc);
  EXPECT_EQ(psc->type(), TrbType::kPortStatusChangeEvent);
  EXPECT_EQ(psc->event_port(), 1);
  EXPECT_TRUE(irq.level);
  EXPECT_EQ(irq.messages, 1);
  const uint32_t portsc = kOp + kPortBase;
  EXPECT_EQ(rd(portsc) & (kPortCcs | kPortCsc | kPortPed), kPortCcs | kPortCsc);
  EXPECT_EQ((rd(portsc) & kPortSpeedMask) >> kPortSpeedShift, kSpeedHigh);
  wr(portsc, kPortPp | kPortCsc);  // acknowledge the connection
  wr(portsc, kPortPp | kPortPr);   // reset: enables the USB 2 port
  auto reset = next_event();
  ASSERT_TRUE(reset);
  EXPECT_EQ(reset->event_port(), 1);
  EXPECT_EQ(rd(portsc) & (kPortPed | kPortPrc | kPortPr), kPortPed | kPortPrc);

  auto noop = command(make(TrbType::kNoOpCommand));
  EXPECT_EQ(noop.completion_code(), Completion::kSuccess);
  auto en = command(make(TrbType::kEnableSlot));
  ASSERT_EQ(en.completion_code(), Completion::kSuccess);
  EXPECT_EQ(en.slot_id(), 1);
  write_input_context(1);
  auto bsr = command(make(TrbType::kAddressDevice, 1, kInput, /*bsr=*/true));
  EXPECT_EQ(bsr.completion_code(), Completion::kSuccess);
  DeviceContext out;
  ASSERT_TRUE(mem.read_obj(kOutput, out));
  EXPECT_EQ(out.slot.state(), SlotState::kDefault);
  auto addr = command(make(TrbType::kAddressDevice, 1, kInput));
  EXPECT_EQ(addr.completion_code(), Completion::kSuccess);
  ASSERT_TRUE(mem.read_obj(kOutput, out));
  EXPECT_EQ(out.slot.state(), SlotState::kAddressed);
  EXPECT_EQ(out.slot.usb_address(), 1u);
  EXPECT_EQ(out.endpoints[0].state(), EndpointState::kRunning);
  EXPECT_EQ(out.endpoints[0].dequeue_pointer(), kEp0Ring);
  auto again = command(make(TrbType::kAddressDevice, 1, kInput));
  EXPECT_EQ(again.completion_code(), Completion::kContextStateError) << "already addressed";
}

TEST_F(RefDriver, HostileCommandsGetTheSpecsErrors) {
  start();
  EXPECT_EQ(command(make(TrbType::kAddressDevice, 5, kInput)).completion_code(),
            Completion::kSlotNotEnabled);
  EXPECT_EQ(command(make(TrbType::kDisableSlot, 0)).completion_code(), Completion::kSlotNotEnabled);
  EXPECT_EQ(command(make(TrbType::kEnableSlot)).completion_code(), Completion::kSuccess);
  // An input context outside guest memory, and one for a port with nothing behind it.
  EXPECT_EQ(command(make(TrbType::kAddressDevice, 1, 0xfffff000)).completion_code(),
            Completion::kParameterError);
  write_input_context(2);
  EXPECT_EQ(command(make(TrbType::kAddressDevice, 1, kInput)).completion_code(),
            Completion::kParameterError);
}

TEST_F(RefDriver, ALoopingCommandRingIsATrbErrorNotAHang) {
  start();
  Trb a = make(TrbType::kLink, 0, kCommands + 16);
  a.set_cycle(true);
  Trb b = make(TrbType::kLink, 0, kCommands);
  b.set_cycle(true);
  ASSERT_TRUE(mem.write_obj(kCommands, a));
  ASSERT_TRUE(mem.write_obj(kCommands + 16, b));
  wr(XhciFunction::kDoorbells, 0);
  auto ev = next_event();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->completion_code(), Completion::kTrbError);
  EXPECT_EQ(rd(kOp + kCrcr) & kCrcrCrr, 0u) << "the command ring stopped";
}

TEST_F(RefDriver, AnEventRingThatIsFullLosesEventsNotMemory) {
  start();
  // The driver consumes nothing: 20 plug/unplug pairs make 40 Port Status Change events; a
  // 16-slot ring holds 15 of them and, in its last slot, a Host Controller Event with Event Ring
  // Full Error (4.9.4); the rest are dropped and counted.
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(hc.attach(1, gz));
    hc.detach(1);
  }
  EXPECT_EQ(hc.events_dropped(), 25u);
  Trb after;
  ASSERT_TRUE(mem.read_obj(kEvents + 16 * kEventTrbs, after));
  EXPECT_EQ(after.control, 0u) << "nothing written past the segment";
  int read = 0;
  std::optional<Trb> last;
  while (auto ev = next_event()) {
    ++read;
    last = ev;
  }
  EXPECT_EQ(read, 16);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->type(), TrbType::kHostControllerEvent);
  EXPECT_EQ(last->completion_code(), Completion::kEventRingFull);
  ASSERT_TRUE(hc.attach(1, gz));  // room again
  EXPECT_TRUE(next_event());
}

TEST_F(RefDriver, MfindexCountsMicroframesWhileRunning) {
  EXPECT_EQ(rd(XhciFunction::kRuntime + kMfindex), 0u);
  start();
  now += std::chrono::microseconds(125 * 10);
  EXPECT_EQ(rd(XhciFunction::kRuntime + kMfindex), 10u);
}

}  // namespace
}  // namespace hc::xhci

namespace hc::xhci {
namespace {

TEST_F(RefDriver, EnableSlotStopsAtMaxSlotsEnabled) {
  start();
  wr(kOp + kConfig, 2);  // (CONFIG is read-write while running here; Linux sets it halted)
  // A ring of 8: the 8th slot holds a Link back to the start with Toggle Cycle.
  Trb link = make(TrbType::kLink, 0, kCommands);
  link.control |= 2u;
  link.set_cycle(true);
  ASSERT_TRUE(mem.write_obj(kCommands + 16 * 7, link));
  EXPECT_EQ(command(make(TrbType::kEnableSlot)).completion_code(), Completion::kSuccess);
  EXPECT_EQ(command(make(TrbType::kEnableSlot)).completion_code(), Completion::kSuccess);
  EXPECT_EQ(command(make(TrbType::kEnableSlot)).completion_code(), Completion::kNoSlotsAvailable);
  EXPECT_EQ(command(make(TrbType::kDisableSlot, 2)).completion_code(), Completion::kSuccess);
  EXPECT_EQ(command(make(TrbType::kEnableSlot)).slot_id(), 2);
}

}  // namespace
}  // namespace hc::xhci

namespace hc::xhci {
namespace {

// Control transfers on EP0, as xhci-hcd queues them: Setup (IDT, TRT), Data (DIR, ISP), Status
// (IOC; DIR opposite to the data stage).
class Ep0 : public RefDriver {
 protected:
  static constexpr uint64_t kData = 0x8000;
  void SetUp() override {
    start();
    ASSERT_TRUE(hc.attach(1, gz));
    ASSERT_TRUE(next_event());
    wr(kOp + kPortBase, kPortPp | kPortCsc | kPortPr);
    ASSERT_TRUE(next_event());
    ASSERT_EQ(command(make(TrbType::kEnableSlot)).completion_code(), Completion::kSuccess);
    write_input_context(1);
    ASSERT_EQ(command(make(TrbType::kAddressDevice, 1, kInput)).completion_code(),
              Completion::kSuccess);
  }
  void put(Trb t) {
    t.set_cycle(true);
    ASSERT_TRUE(mem.write_obj(kEp0Ring + 16ull * ep0_index++, t));
  }
  // Queues one control transfer; `data` (OUT) goes to kData first.
  void control(const usb::SetupPacket& s, bool isp = true, std::vector<uint8_t> out = {}) {
    Trb setup;
    const auto b = s.to_bytes();
    std::memcpy(&setup.parameter, b.data(), 8);
    setup.status = 8;
    const bool in = s.direction() == usb::Direction::kIn;
    setup.control = (1u << 6) | ((s.length ? (in ? 3u : 2u) : 0u) << 16);
    setup.set_type(TrbType::kSetupStage);
    put(setup);
    if (s.length) {
      if (!out.empty()) {
        ASSERT_TRUE(mem.write(kData, out));
      }
      Trb data;
      data.parameter = kData;
      data.status = s.length;
      data.control = (in ? 1u << 16 : 0u) | (isp ? 1u << 2 : 0u);
      data.set_type(TrbType::kDataStage);
      put(data);
    }
    Trb status;
    status.control = (1u << 5) | ((in && s.length) ? 0u : 1u << 16);
    status.set_type(TrbType::kStatusStage);
    put(status);
    wr(XhciFunction::kDoorbells + 4, 1);  // slot 1, DCI 1
  }
  uint32_t ep0_index = 0;
};

TEST_F(Ep0, GetDeviceDescriptorLandsInGuestMemory) {
  control({0x80, 6, 0x0100, 0, 18});
  auto ev = next_event();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->type(), TrbType::kTransferEvent);
  EXPECT_EQ(ev->completion_code(), Completion::kSuccess);
  EXPECT_EQ(ev->parameter, kEp0Ring + 32) << "the Status TRB (IOC)";
  EXPECT_EQ(ev->endpoint_id(), 1);
  uint8_t d[18];
  ASSERT_TRUE(mem.read(kData, d));
  EXPECT_EQ(d[0], 18);
  EXPECT_EQ(d[1], 1);
  EXPECT_EQ(d[8] | (d[9] << 8), 0x0525) << "Gadget Zero's idVendor";
}

TEST_F(Ep0, AShortAnswerIsAShortPacketEventOnTheDataTrb) {
  control({0x80, 6, 0x0200, 0, 255});  // configuration descriptor, asked for 255 bytes
  auto ev = next_event();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->completion_code(), Completion::kShortPacket);
  EXPECT_EQ(ev->parameter, kEp0Ring + 16);
  const uint32_t total = 255 - ev->event_residual();
  uint8_t c[4];
  ASSERT_TRUE(mem.read(kData, c));
  EXPECT_EQ(c[2] | (c[3] << 8), total) << "wTotalLength bytes came back";
  auto status = next_event();
  ASSERT_TRUE(status);
  EXPECT_EQ(status->completion_code(), Completion::kSuccess);
}

TEST_F(Ep0, VendorWriteThenReadBack) {
  ASSERT_EQ(command(make(TrbType::kNoOpCommand)).completion_code(), Completion::kSuccess);
  // SET_CONFIGURATION 3 (no data), then Gadget Zero's 0x5b write and 0x5c read.
  control({0x00, 9, 3, 0, 0});
  ASSERT_EQ(next_event()->completion_code(), Completion::kSuccess);
  control({0x40, 0x5b, 0, 0, 4}, true, {1, 2, 3, 4});
  ASSERT_EQ(next_event()->completion_code(), Completion::kSuccess);
  ASSERT_TRUE(mem.write(kData, std::vector<uint8_t>{0, 0, 0, 0}));
  control({0xc0, 0x5c, 0, 0, 4});
  ASSERT_EQ(next_event()->completion_code(), Completion::kSuccess);
  uint8_t back[4];
  ASSERT_TRUE(mem.read(kData, back));
  EXPECT_EQ(std::vector<uint8_t>(back, back + 4), (std::vector<uint8_t>{1, 2, 3, 4}));
}

TEST_F(Ep0, AStallHaltsEp0) {
  control({0x80, 6, 0x4200, 0, 18});  // a descriptor type that does not exist
  auto ev = next_event();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->completion_code(), Completion::kStallError);
  DeviceContext out;
  ASSERT_TRUE(mem.read_obj(kOutput, out));
  EXPECT_EQ(out.endpoints[0].state(), EndpointState::kHalted);
  control({0x80, 6, 0x0100, 0, 18});  // not run while halted
  EXPECT_FALSE(next_event());
}

TEST_F(Ep0, AGarbageTrbOnEp0IsATrbError) {
  Trb junk;
  junk.set_type(TrbType::kIsoch);
  put(junk);
  wr(XhciFunction::kDoorbells + 4, 1);
  auto ev = next_event();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->completion_code(), Completion::kTrbError);
}

}  // namespace
}  // namespace hc::xhci

namespace hc::xhci {
namespace {

// Bulk endpoints after Configure Endpoint: usbtest 1, 2 and 13's equivalents through the rings.
class Bulk : public Ep0 {
 protected:
  static constexpr uint64_t kOutRing = 0x9000, kInRing = 0xa000, kBuf = 0xb000;
  void SetUp() override {
    Ep0::SetUp();
    if (HasFatalFailure()) return;
    control({0x00, 9, devices::GadgetZero::kSourceSinkConfig, 0, 0});  // SET_CONFIGURATION 3
    ASSERT_EQ(next_event()->completion_code(), Completion::kSuccess);
  }
  Completion configure(bool bulk_in = true) {
    InputContext in;
    in.control.dw[1] = 1u | (1u << 2) | (bulk_in ? 1u << 3 : 0u);  // slot, DCI 2 (OUT 1), 3
    in.slot.dw[0] = (3u << 27) | (kSpeedHigh << 20);
    in.slot.dw[1] = 1u << 16;
    in.endpoints[1].dw[1] = (512u << 16) | (2u << 3) | (3u << 1);  // bulk OUT, MPS 512
    in.endpoints[1].set_dequeue(kOutRing, true);
    in.endpoints[2].dw[1] = (512u << 16) | (6u << 3) | (3u << 1);  // bulk IN
    in.endpoints[2].set_dequeue(kInRing, true);
    EXPECT_TRUE(mem.write_obj(kInput, in));
    return command(make(TrbType::kConfigureEndpoint, 1, kInput)).completion_code();
  }
  // One Normal TRB (IOC, ISP) of `len` bytes at kBuf on `ring`, index i; doorbell DCI `dci`.
  void normal(uint64_t ring, int i, uint8_t dci, uint32_t len) {
    Trb t;
    t.parameter = kBuf;
    t.status = len;
    t.control = (1u << 5) | (1u << 2);
    t.set_type(TrbType::kNormal);
    t.set_cycle(true);
    ASSERT_TRUE(mem.write_obj(ring + 16ull * i, t));
    wr(XhciFunction::kDoorbells + 4, dci);
  }
};

TEST_F(Bulk, ConfigureEndpointThenWriteAndRead) {
  ASSERT_EQ(configure(), Completion::kSuccess);
  DeviceContext out;
  ASSERT_TRUE(mem.read_obj(kOutput, out));
  EXPECT_EQ(out.slot.state(), SlotState::kConfigured);
  EXPECT_EQ(out.endpoints[1].state(), EndpointState::kRunning);
  ASSERT_TRUE(mem.write(kBuf, std::vector<uint8_t>(4096, 0)));  // Gadget Zero's pattern 0
  normal(kOutRing, 0, 2, 4096);
  auto w = next_event();
  ASSERT_TRUE(w);
  EXPECT_EQ(w->completion_code(), Completion::kSuccess);
  EXPECT_EQ(w->endpoint_id(), 2);
  ASSERT_TRUE(mem.write(kBuf, std::vector<uint8_t>(4096, 0xee)));
  normal(kInRing, 0, 3, 4096);
  auto r = next_event();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->completion_code(), Completion::kSuccess);
  std::vector<uint8_t> got(4096);
  ASSERT_TRUE(mem.read(kBuf, got));
  EXPECT_EQ(got, std::vector<uint8_t>(4096, 0)) << "the source's pattern arrived";
}

TEST_F(Bulk, AStallHaltsTheEndpointUntilResetEndpointAndSetTrDequeue) {
  ASSERT_EQ(configure(), Completion::kSuccess);
  ASSERT_TRUE(mem.write(kBuf, std::vector<uint8_t>(512, 0x55)));  // bad pattern: the sink halts
  normal(kOutRing, 0, 2, 512);
  EXPECT_EQ(next_event()->completion_code(), Completion::kSuccess);
  normal(kOutRing, 1, 2, 512);
  auto stall = next_event();
  ASSERT_TRUE(stall);
  EXPECT_EQ(stall->completion_code(), Completion::kStallError);
  EXPECT_EQ(stall->parameter, kOutRing + 16);
  DeviceContext out;
  ASSERT_TRUE(mem.read_obj(kOutput, out));
  EXPECT_EQ(out.endpoints[1].state(), EndpointState::kHalted);
  // As xhci-hcd recovers: Reset Endpoint, Set TR Dequeue past the TD, CLEAR_FEATURE(HALT).
  Trb early = make(TrbType::kSetTrDequeue, 1, kOutRing + 32 + 1);
  early.control |= 2u << 16;
  EXPECT_EQ(command(early).completion_code(), Completion::kContextStateError) << "not while halted";
  Trb reset = make(TrbType::kResetEndpoint, 1);
  reset.control |= 2u << 16;
  EXPECT_EQ(command(reset).completion_code(), Completion::kSuccess);
  Trb deq = make(TrbType::kSetTrDequeue, 1, kOutRing + 32 + 1);
  deq.control |= 2u << 16;
  EXPECT_EQ(command(deq).completion_code(), Completion::kSuccess);
  control({0x02, 1, 0, 0x01, 0});  // CLEAR_FEATURE(ENDPOINT_HALT) on 0x01
  ASSERT_EQ(next_event()->completion_code(), Completion::kSuccess);
  ASSERT_TRUE(mem.write(kBuf, std::vector<uint8_t>(512, 0)));
  normal(kOutRing, 2, 2, 512);  // the doorbell restarts the stopped endpoint
  auto ok = next_event();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->completion_code(), Completion::kSuccess);
  EXPECT_EQ(ok->parameter, kOutRing + 32);
}

TEST_F(Bulk, ABusThatCannotTakeTheEndpointsIsABandwidthError) {
  std::vector<usb::EndpointDescriptor> seen;
  hc.set_admission([&](uint32_t port, std::span<const usb::EndpointDescriptor> eps) {
    EXPECT_EQ(port, 1u);
    seen.assign(eps.begin(), eps.end());
    return false;
  });
  EXPECT_EQ(configure(), Completion::kBandwidthError);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].address, 0x01);
  EXPECT_EQ(seen[1].address, 0x81);
  EXPECT_EQ(seen[1].max_packet(), 512);
  DeviceContext out;
  ASSERT_TRUE(mem.read_obj(kOutput, out));
  EXPECT_EQ(out.slot.state(), SlotState::kAddressed) << "nothing changed";
}

TEST_F(Bulk, DeconfigureAndResetDevice) {
  ASSERT_EQ(configure(), Completion::kSuccess);
  Trb dc = make(TrbType::kConfigureEndpoint, 1);
  dc.control |= 1u << 9;
  EXPECT_EQ(command(dc).completion_code(), Completion::kSuccess);
  DeviceContext out;
  ASSERT_TRUE(mem.read_obj(kOutput, out));
  EXPECT_EQ(out.slot.state(), SlotState::kAddressed);
  EXPECT_EQ(out.endpoints[1].state(), EndpointState::kDisabled);
  EXPECT_EQ(command(make(TrbType::kResetDevice, 1)).completion_code(), Completion::kSuccess);
  ASSERT_TRUE(mem.read_obj(kOutput, out));
  EXPECT_EQ(out.slot.state(), SlotState::kDefault);
  EXPECT_EQ(out.slot.usb_address(), 0u);
  EXPECT_EQ(command(make(TrbType::kResetDevice, 1)).completion_code(),
            Completion::kContextStateError);
}

TEST_F(Bulk, StopEndpointOnAnIdleEndpoint) {
  ASSERT_EQ(configure(), Completion::kSuccess);
  Trb stop = make(TrbType::kStopEndpoint, 1);
  stop.control |= 3u << 16;
  EXPECT_EQ(command(stop).completion_code(), Completion::kSuccess);
  EXPECT_EQ(command(stop).completion_code(), Completion::kContextStateError) << "already stopped";
}

}  // namespace
}  // namespace hc::xhci

namespace hc::xhci {
namespace {

// Interrupter moderation (4.17.2): after an interrupt, the next waits IMODI × 250 ns; IMODC
// reads the time left.
TEST_F(RefDriver, InterruptModerationHoldsTheNextInterrupt) {
  std::vector<std::pair<std::chrono::steady_clock::time_point, std::function<void()>>> timers;
  hc.set_timer([&](std::chrono::nanoseconds d, std::function<void()> fn) {
    timers.emplace_back(now + d, std::move(fn));
  });
  start();
  wr(kIr0 + kImod, 4000);  // 1 ms
  ASSERT_TRUE(hc.attach(1, gz));
  EXPECT_EQ(irq.messages, 1) << "the first interrupt is not held";
  EXPECT_EQ(rd(kIr0 + kImod) >> 16, 4000u) << "IMODC loaded with IMODI";
  ASSERT_TRUE(next_event());            // ERDP with EHB: handled
  wr(kIr0 + kIman, kImanIe | kImanIp);  // acknowledge
  hc.detach(1);                         // a second event 0 µs later
  EXPECT_EQ(irq.messages, 1) << "held by moderation";
  EXPECT_EQ(rd(kIr0 + kIman) & kImanIp, 0u);
  ASSERT_EQ(timers.size(), 1u);
  now += std::chrono::microseconds(400);
  EXPECT_EQ(rd(kIr0 + kImod) >> 16, 2400u) << "IMODC counts down in 250 ns steps";
  now = timers[0].first;
  timers[0].second();
  EXPECT_EQ(irq.messages, 2);
  EXPECT_EQ(rd(kIr0 + kIman) & kImanIp, kImanIp);
  auto ev = next_event();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->type(), TrbType::kPortStatusChangeEvent);
}

TEST_F(RefDriver, ImodZeroMeansNoModeration) {
  std::vector<std::function<void()>> timers;
  hc.set_timer(
      [&](std::chrono::nanoseconds, std::function<void()> fn) { timers.push_back(std::move(fn)); });
  start();
  wr(kIr0 + kImod, 0);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(hc.attach(1, gz));
    ASSERT_TRUE(next_event());
    wr(kIr0 + kIman, kImanIe | kImanIp);
    hc.detach(1);
    ASSERT_TRUE(next_event());
    wr(kIr0 + kIman, kImanIe | kImanIp);
  }
  EXPECT_EQ(irq.messages, 6);
  EXPECT_TRUE(timers.empty());
}

}  // namespace
}  // namespace hc::xhci

namespace hc::xhci {
namespace {

// RAM whose writes start failing (a VMM's memory callback refusing): the controller cannot write
// its event ring any more — Host System Error, and it halts (5.4.2, 4.10.2.6).
class FailingRam : public GuestMemory {
 public:
  bool read(uint64_t a, std::span<uint8_t> out) const override { return ram.read(a, out); }
  bool write(uint64_t a, std::span<const uint8_t> in) override { return !fail && ram.write(a, in); }
  InMemoryGuestMemory ram{0x10000};
  bool fail = false;
};

TEST(XhciHostSystemError, AnEventRingOutOfReachHaltsTheController) {
  FailingRam mem;
  FakeIrq irq;
  XhciFunction hc(mem, irq, [] { return std::chrono::steady_clock::time_point{}; });
  devices::GadgetZero gz{devices::GadgetZeroOptions{}};
  auto wr = [&](uint32_t off, uint32_t v) { hc.mmio_write(off, v, 4); };
  auto rd = [&](uint32_t off) { return static_cast<uint32_t>(hc.mmio_read(off, 4)); };
  ASSERT_TRUE(mem.ram.write_obj(kErst, ErstEntry{kEvents, kEventTrbs, 0}));
  wr(kOp + kConfig, 1);
  wr(kIr0 + kErstSz, 1);
  wr(kIr0 + kErdp, kEvents);
  wr(kIr0 + kErstBa, kErst);
  wr(kIr0 + kErstBa + 4, 0);
  wr(kOp + kUsbCmd, kCmdRun);
  ASSERT_EQ(rd(kOp + kUsbSts) & kStsHalted, 0u);
  mem.fail = true;
  ASSERT_TRUE(hc.attach(1, gz));  // a Port Status Change event it cannot write
  EXPECT_EQ(rd(kOp + kUsbSts) & (kStsHse | kStsHalted), kStsHse | kStsHalted);
  EXPECT_FALSE(hc.running());
}

}  // namespace
}  // namespace hc::xhci
