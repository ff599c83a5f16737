#include "host-controller/xhci/xhci_function.h"

#include <spdlog/spdlog.h>

#include <cstring>

#include "host-controller/xhci/regs.h"

namespace hc::xhci {

using namespace reg;

namespace {

constexpr uint32_t kUsbName = 0x20425355;  // "USB " (7.2.2)

uint32_t port_speed_id(usb::Speed s) {
  switch (s) {
    case usb::Speed::kLow:
      return kSpeedLow;
    case usb::Speed::kFull:
      return kSpeedFull;
    case usb::Speed::kHigh:
      return kSpeedHigh;
    default:
      return kSpeedSuper;
  }
}

bool super_speed(usb::Speed s) {
  return s == usb::Speed::kSuper || s == usb::Speed::kSuperPlus;
}

}  // namespace

XhciFunction::XhciFunction(GuestMemory& memory, IrqLine& irq, Clock clock)
    : mem_(memory), irq_(irq), clock_(std::move(clock)) {
  reset();
}

XhciFunction::~XhciFunction() {
  // Devices give cancelled transfers back before this returns when they complete cancellations
  // inline (emulated ones do); remote backends must be detached first.
  for (auto& s : slots_) abandon_ep0(s);
  *alive_ = false;
}

void XhciFunction::abandon_ep0(Slot& slot) {
  if (!slot.ep0_inflight) return;
  usb::Transfer& t = *slot.ep0_inflight;
  orphans_.push_back(std::move(slot.ep0_inflight));
  usb::Device* dev = slot.port ? ports_[slot.port - 1].device : nullptr;
  if (dev) dev->cancel(t);
}

void XhciFunction::reset() {
  usbcmd_ = 0;
  usbsts_ = 0;  // HCH is derived from USBCMD.RS
  dnctrl_ = 0;
  config_ = 0;
  dcbaap_ = 0;
  crcr_ = 0;
  command_ring_running_ = false;
  commands_ = Ring();
  for (auto& s : slots_) {
    abandon_ep0(s);
    s = Slot{};
  }
  iman_ = 0;
  imod_ = 4000;
  erstsz_ = 0;
  erstba_ = 0;
  erdp_ = 0;
  events_.reset();
  if (irq_level_) irq_.set_level(false);
  irq_level_ = false;
  // Ports keep their devices; a reset host sees them as new connections (4.19.1).
  for (uint32_t p = 1; p <= kPorts; ++p) {
    Port& port = ports_[p - 1];
    port.portsc = kPortPp | (kPlsRxDetect << kPortPlsShift);
    if (port.device) {
      usb::Device& d = *port.device;
      port.device = nullptr;
      attach(p, d);
    }
  }
}

// ------------------------------------------------------------------ MMIO

uint64_t XhciFunction::mmio_read(uint32_t offset, unsigned size) {
  if (size == 8) return mmio_read(offset, 4) | (mmio_read(offset + 4, 4) << 32);
  const uint32_t base = offset & ~3u;
  uint32_t v = 0;
  if (base < kCapLength)
    v = cap_read(base);
  else if (base < kCapLength + kPortBase + kPortStride * kPorts)
    v = op_read(base - kCapLength);
  else if (base >= kExtCaps && base < kExtCaps + 0x20) {
    const uint32_t i = (base - kExtCaps) / 4;
    const uint32_t caps[8] = {kExtCapSupportedProtocol | (4u << 8) | (0x02u << 24),
                              kUsbName,
                              1u | (kUsb2Ports << 8),
                              0,
                              kExtCapSupportedProtocol | (0x03u << 24),
                              kUsbName,
                              (kUsb2Ports + 1) | (kUsb3Ports << 8),
                              0};
    v = caps[i];
  } else if (base >= kRuntime && base < kRuntime + 0x40)
    v = runtime_read(base - kRuntime);
  const unsigned shift = (offset & 3u) * 8;
  if (size >= 4) return v;
  return (v >> shift) & ((1u << (size * 8)) - 1);
}

void XhciFunction::mmio_write(uint32_t offset, uint64_t value, unsigned size) {
  if (size == 8) {
    mmio_write(offset, value & 0xffffffffu, 4);
    mmio_write(offset + 4, value >> 32, 4);
    return;
  }
  if (size != 4 || (offset & 3u)) {
    spdlog::debug("xhci: {}-byte write at {:#x} ignored", size, offset);
    return;
  }
  const auto v = static_cast<uint32_t>(value);
  if (offset < kCapLength) return;  // read-only
  if (offset < kCapLength + kPortBase + kPortStride * kPorts)
    return op_write(offset - kCapLength, v);
  if (offset >= kRuntime && offset < kRuntime + 0x40) return runtime_write(offset - kRuntime, v);
  if (offset >= kDoorbells && offset < kDoorbells + 4 * (kMaxSlots + 1))
    return doorbell((offset - kDoorbells) / 4, v);
}

uint32_t XhciFunction::cap_read(uint32_t offset) const {
  switch (offset) {
    case reg::kCapLength:
      return XhciFunction::kCapLength | (uint32_t{kVersion} << 16);
    case kHcsParams1:
      return kMaxSlots | (1u << 8) | (kPorts << 24);
    case kHcsParams2:
      return 4u << 4;  // ERST Max: 2^4 segment table entries; no scratchpad buffers
    case kHccParams1:
      return 1u | ((kExtCaps / 4) << 16);  // AC64, 32-byte contexts, xECP
    case kDbOff:
      return kDoorbells;
    case kRtsOff:
      return kRuntime;
    default:
      return 0;
  }
}

uint32_t XhciFunction::op_read(uint32_t offset) const {
  if (offset >= kPortBase) {
    const uint32_t p = (offset - kPortBase) / kPortStride;
    return (offset - kPortBase) % kPortStride == kPortSc ? ports_[p].portsc : 0;
  }
  switch (offset) {
    case kUsbCmd:
      return usbcmd_;
    case kUsbSts:
      return usbsts_ | (running() ? 0 : kStsHalted);
    case kPageSize:
      return 1;  // 4 KiB pages
    case kDnCtrl:
      return dnctrl_;
    case kCrcr:
      return command_ring_running_ ? static_cast<uint32_t>(kCrcrCrr) : 0;  // pointer reads 0
    case kDcbaap:
      return static_cast<uint32_t>(dcbaap_);
    case kDcbaap + 4:
      return static_cast<uint32_t>(dcbaap_ >> 32);
    case kConfig:
      return config_;
    default:
      return 0;
  }
}

void XhciFunction::op_write(uint32_t offset, uint32_t v) {
  if (offset >= kPortBase) {
    if ((offset - kPortBase) % kPortStride == kPortSc)
      port_write((offset - kPortBase) / kPortStride + 1, v);
    return;
  }
  switch (offset) {
    case kUsbCmd: {
      if (v & kCmdHcReset) return reset();
      const bool was_running = running();
      usbcmd_ = v & (kCmdRun | kCmdInte | kCmdHsee | kCmdEwe);
      if (!was_running && running()) {
        run_start_ = clock_();
        // Connections made while halted are announced now.
        for (uint32_t p = 1; p <= kPorts; ++p)
          if (ports_[p - 1].portsc & kPortChangeBits) port_change(p);
      } else if (was_running && !running()) {
        command_ring_running_ = false;
      }
      update_irq();
      return;
    }
    case kUsbSts:
      usbsts_ &= ~(v & kStsW1c);
      return;
    case kDnCtrl:
      dnctrl_ = v & 0xffff;
      return;
    case kCrcr:
      if (!command_ring_running_)
        crcr_ = (crcr_ & ~uint64_t{0xffffffff}) | v;
      else if (v & (kCrcrCs | kCrcrCa))
        command_ring_running_ = false;  // stop / abort
      return;
    case kCrcr + 4:
      if (!command_ring_running_) {
        crcr_ = (crcr_ & 0xffffffffu) | (uint64_t{v} << 32);
        commands_.set_dequeue(crcr_ & kCrcrPointerMask, crcr_ & kCrcrRcs);
      }
      return;
    case kDcbaap:
      dcbaap_ = (dcbaap_ & ~uint64_t{0xffffffff}) | (v & ~0x3fu);
      return;
    case kDcbaap + 4:
      dcbaap_ = (dcbaap_ & 0xffffffffu) | (uint64_t{v} << 32);
      return;
    case kConfig:
      config_ = std::min<uint32_t>(v & 0xff, kMaxSlots) | (v & 0x300);
      return;
    default:
      return;
  }
}

uint32_t XhciFunction::runtime_read(uint32_t offset) const {
  switch (offset) {
    case kMfindex:
      if (!running()) return 0;
      return static_cast<uint32_t>((clock_() - run_start_) / std::chrono::microseconds(125)) &
             0x3fff;
    case kInterrupterBase + kIman:
      return iman_;
    case kInterrupterBase + kImod:
      return imod_;
    case kInterrupterBase + kErstSz:
      return erstsz_;
    case kInterrupterBase + kErstBa:
      return static_cast<uint32_t>(erstba_);
    case kInterrupterBase + kErstBa + 4:
      return static_cast<uint32_t>(erstba_ >> 32);
    case kInterrupterBase + kErdp:
      return static_cast<uint32_t>(erdp_);
    case kInterrupterBase + kErdp + 4:
      return static_cast<uint32_t>(erdp_ >> 32);
    default:
      return 0;
  }
}

void XhciFunction::runtime_write(uint32_t offset, uint32_t v) {
  switch (offset) {
    case kInterrupterBase + kIman:
      iman_ = (iman_ & ~kImanIe) | (v & kImanIe);
      if (v & kImanIp) iman_ &= ~kImanIp;  // RW1C
      update_irq();
      return;
    case kInterrupterBase + kImod:
      imod_ = v;
      return;
    case kInterrupterBase + kErstSz:
      erstsz_ = v & 0xffff;
      return;
    case kInterrupterBase + kErstBa:
      erstba_ = (erstba_ & ~uint64_t{0xffffffff}) | (v & ~0x3fu);
      return;
    case kInterrupterBase + kErstBa + 4:
      // The high dword completes the address (Linux writes low, then high): the table is read.
      erstba_ = (erstba_ & 0xffffffffu) | (uint64_t{v} << 32);
      if (!events_.configure(mem_, erstba_, erstsz_)) {
        spdlog::warn("xhci: unusable event ring segment table at {:#x} ({} entries)", erstba_,
                     erstsz_);
        usbsts_ |= kStsHce;
      }
      return;
    case kInterrupterBase + kErdp: {
      const bool clear_ehb = v & kErdpEhb;
      erdp_ = (erdp_ & ~uint64_t{0xffffffff}) | (v & ~uint32_t{0xf}) |
              (erdp_ & kErdpEhb & (clear_ehb ? 0 : ~uint64_t{0}));
      events_.set_dequeue(erdp_);
      // Software caught up: events still unread raise the interrupt again (4.17.2).
      if (clear_ehb && !events_.empty()) {
        erdp_ |= kErdpEhb;
        iman_ |= kImanIp;
        usbsts_ |= kStsEint;
        update_irq();
      }
      return;
    }
    case kInterrupterBase + kErdp + 4:
      erdp_ = (erdp_ & 0xffffffffu) | (uint64_t{v} << 32);
      events_.set_dequeue(erdp_);
      return;
    default:
      return;
  }
}

// ------------------------------------------------------------------ ports

bool XhciFunction::attach(uint32_t port, usb::Device& device) {
  if (port < 1 || port > kPorts || ports_[port - 1].device) return false;
  const bool usb3_port = port > kUsb2Ports;
  if (usb3_port != super_speed(device.speed())) return false;  // wrong port range
  Port& p = ports_[port - 1];
  p.device = &device;
  p.portsc = kPortPp | kPortCcs | kPortCsc | (port_speed_id(device.speed()) << kPortSpeedShift);
  // A USB 3 port trains its link by itself (enabled, U0); a USB 2 port waits for a reset.
  if (usb3_port)
    p.portsc |= kPortPed | (kPlsU0 << kPortPlsShift);
  else
    p.portsc |= kPlsPolling << kPortPlsShift;
  port_change(port);
  return true;
}

void XhciFunction::detach(uint32_t port) {
  if (port < 1 || port > kPorts || !ports_[port - 1].device) return;
  for (auto& s : slots_)
    if (s.port == port) abandon_ep0(s);
  Port& p = ports_[port - 1];
  p.device = nullptr;
  p.portsc =
      kPortPp | kPortCsc | (p.portsc & kPortPed ? kPortPec : 0) | (kPlsRxDetect << kPortPlsShift);
  port_change(port);
}

void XhciFunction::port_write(uint32_t port, uint32_t v) {
  Port& p = ports_[port - 1];
  p.portsc &= ~(v & kPortChangeBits);       // RW1C change bits
  if (v & kPortPed) p.portsc &= ~kPortPed;  // writing 1 disables the port
  p.portsc = (p.portsc & ~(kPortPp | kPortWce | kPortWde | kPortWoe)) |
             (v & (kPortPp | kPortWce | kPortWde | kPortWoe));
  if ((v & kPortLws) && (p.portsc & kPortPed))
    p.portsc = (p.portsc & ~kPortPlsMask) | (v & kPortPlsMask);
  if ((v & (kPortPr | kPortWpr)) && (p.portsc & kPortCcs)) {
    // The reset completes at once: enabled, U0, PRC (and WRC for a warm reset).
    p.portsc = (p.portsc & ~kPortPlsMask) | kPortPed | (kPlsU0 << kPortPlsShift) | kPortPrc |
               ((v & kPortWpr) && port > kUsb2Ports ? kPortWrc : 0);
    port_change(port);
  }
}

void XhciFunction::port_change(uint32_t port) {
  usbsts_ |= kStsPcd;
  if (running()) post(Trb::port_status_change(static_cast<uint8_t>(port)));
}

// ------------------------------------------------------------------ commands

void XhciFunction::doorbell(uint32_t index, uint32_t value) {
  if (!running()) return;
  if (index == 0) {
    if ((value & 0xff) != 0) return;  // the command doorbell's target must be 0
    command_ring_running_ = true;
    run_commands();
  }
  if (index >= 1 && index <= kMaxSlots && (value & 0xff) == 1) run_ep0(static_cast<uint8_t>(index));
  // Other endpoints' doorbells: the next slice of issue 5.
}

// ------------------------------------------------------------------ EP0 control transfers

std::expected<XhciFunction::ControlTd, Completion> XhciFunction::take_control_td(
    Ring& ring, bool& incomplete, usb::SetupPacket& setup) {
  incomplete = false;
  const uint64_t start = ring.dequeue();
  const bool start_cycle = ring.cycle();
  auto give_back = [&](Completion c) -> std::expected<ControlTd, Completion> {
    ring.set_dequeue(start, start_cycle);
    return std::unexpected(c);
  };
  ControlTd td;
  auto s = ring.pop(mem_);
  if (!s) {
    incomplete = s.error() == Ring::Stop::kEmpty;
    return give_back(Completion::kTrbError);
  }
  if (s->trb.type() != TrbType::kSetupStage || !s->trb.idt() || s->trb.transfer_length() != 8) {
    // Not a control TD's start: the TRB is consumed and reported (4.11.2.2).
    td.setup_trb = s->address;
    return std::unexpected(Completion::kTrbError);
  }
  td.setup_trb = s->address;
  uint8_t raw[8];
  std::memcpy(raw, &s->trb.parameter, 8);
  setup = usb::SetupPacket::from_bytes(std::span<const uint8_t, 8>(raw, 8));
  // Data stage (optional), possibly followed by chained Normal TRBs, then the Status stage.
  uint32_t total = 0;
  for (size_t n = 0; n < Ring::kMaxTdTrbs; ++n) {
    auto f = ring.pop(mem_);
    if (!f) {
      incomplete = f.error() == Ring::Stop::kEmpty;
      return give_back(Completion::kTrbError);
    }
    const Trb& t = f->trb;
    if (t.type() == TrbType::kStatusStage) {
      td.status_trb = f->address;
      td.status_ioc = t.ioc();
      return td;
    }
    const bool data = t.type() == TrbType::kDataStage && td.data_trb == 0 && n == 0;
    const bool more =
        (t.type() == TrbType::kNormal || t.type() == TrbType::kEventData) && td.data_trb != 0;
    if (!data && !more) return give_back(Completion::kTrbError);
    if (t.type() == TrbType::kEventData) continue;
    if (data) {
      td.data_trb = f->address;
      td.in = t.dir_in();
      td.data_isp = t.isp();
      td.data_ioc = t.ioc();
    }
    const uint32_t len = t.transfer_length();
    total += len;
    if (total > 0xffff) return give_back(Completion::kTrbError);  // wLength is 16 bits
    // Immediate data: the bytes are in the TRB itself (at most 8).
    td.pieces.push_back(
        {t.idt() ? f->address : t.parameter, std::min<uint32_t>(len, t.idt() ? 8 : len)});
  }
  return give_back(Completion::kTrbError);
}

void XhciFunction::run_ep0(uint8_t slot) {
  Slot& sl = slots_[slot];
  if (!sl.enabled || !sl.port || sl.ep0_inflight || sl.ep0_halted) return;
  usb::Device* dev = ports_[sl.port - 1].device;
  sl.in_run = true;
  struct Guard {
    Slot& s;
    ~Guard() { s.in_run = false; }
  } guard{sl};
  for (int n = 0; n < 64 && !sl.ep0_inflight && !sl.ep0_halted; ++n) {
    bool incomplete = false;
    usb::SetupPacket setup;
    auto td = take_control_td(sl.ep0, incomplete, setup);
    if (!td) {
      if (incomplete) return;  // the driver has not finished writing it: wait for the doorbell
      post(Trb::transfer_event(sl.ep0.dequeue(), 0, Completion::kTrbError, slot, 1));
      sl.ep0_halted = true;  // a ring the controller cannot follow stops the endpoint
      set_ep0_state(slot, EndpointState::kError);
      return;
    }
    if (!dev) {
      post(Trb::transfer_event(td->setup_trb, 0, Completion::kUsbTransactionError, slot, 1));
      continue;
    }
    uint32_t length = 0;
    for (const auto& p : td->pieces) length += p.length;
    // The data stage's length decides what moves; wLength says what the device may answer.
    setup.length = static_cast<uint16_t>(std::min<uint32_t>(setup.length, length));
    auto t = usb::Transfer::control(td->in ? 0x80 : 0x00, setup);
    if (!td->in) {
      size_t at = 0;
      for (const auto& p : td->pieces) {
        if (!mem_.read(p.address,
                       t->buffer().subspan(at, std::min<size_t>(p.length, t->length() - at)))) {
          post(Trb::transfer_event(td->data_trb, length, Completion::kDataBufferError, slot, 1));
          t.reset();
          break;
        }
        at += p.length;
        if (at >= t->length()) break;
      }
      if (!t) continue;
    }
    sl.ep0_td = *td;
    sl.ep0_inflight = std::move(t);
    sl.ep0_inflight->set_completion([this, slot, alive = alive_](usb::Transfer& x) {
      if (*alive) ep0_done(slot, x);
    });
    dev->submit(*sl.ep0_inflight);
  }
}

void XhciFunction::ep0_done(uint8_t slot, usb::Transfer& t) {
  Slot& sl = slots_[slot];
  if (sl.ep0_inflight.get() != &t) {  // abandoned: nobody waits for it any more
    std::erase_if(orphans_, [&](const auto& p) { return p.get() == &t; });
    return;
  }
  const ControlTd td = sl.ep0_td;
  const usb::Status st = t.status();
  const size_t actual = t.actual_length();
  (void)sl;
  if (td.in && actual) {
    size_t at = 0;
    for (const auto& p : td.pieces) {
      const size_t n = std::min<size_t>(p.length, actual - at);
      if (n && !mem_.write(p.address, t.data().subspan(at, n))) break;  // counted as moved
      at += n;
      if (at >= actual) break;
    }
  }
  uint32_t asked = 0;
  for (const auto& p : td.pieces) asked += p.length;
  // A completion may destroy its transfer (usb::Transfer::complete moved it out first).
  sl.ep0_inflight.reset();
  if (st == usb::Status::kStall) {
    post(Trb::transfer_event(td.data_trb ? td.data_trb : td.status_trb, asked,
                             Completion::kStallError, slot, 1));
    sl.ep0_halted = true;
    set_ep0_state(slot, EndpointState::kHalted);
    return;
  }
  if (st != usb::Status::kOk && st != usb::Status::kShortPacket) {
    post(Trb::transfer_event(td.data_trb ? td.data_trb : td.status_trb, asked,
                             Completion::kUsbTransactionError, slot, 1));
  } else {
    if (td.data_trb && actual < asked && td.data_isp)
      post(Trb::transfer_event(td.data_trb, static_cast<uint32_t>(asked - actual),
                               Completion::kShortPacket, slot, 1));
    else if (td.data_trb && td.data_ioc)
      post(Trb::transfer_event(td.data_trb, 0, Completion::kSuccess, slot, 1));
    if (td.status_ioc) post(Trb::transfer_event(td.status_trb, 0, Completion::kSuccess, slot, 1));
  }
  if (!sl.in_run) run_ep0(slot);  // an asynchronous completion: the next TD
}

void XhciFunction::set_ep0_state(uint8_t slot, EndpointState state) {
  uint64_t out = 0;
  EndpointContext ep;
  if (!device_context_address(slot, out) || !mem_.read_obj(out + 32, ep)) return;
  ep.set_state(state);
  (void)mem_.write_obj(out + 32, ep);
}

void XhciFunction::run_commands() {
  for (int n = 0; n < kMaxCommandsPerDoorbell && command_ring_running_; ++n) {
    auto f = commands_.pop(mem_);
    if (!f) {
      if (f.error() == Ring::Stop::kEmpty) return;
      // A ring the controller cannot follow: TRB Error at the position, and the ring stops.
      spdlog::warn("xhci: command ring at {:#x} is broken ({}); stopping it", commands_.dequeue(),
                   f.error() == Ring::Stop::kLinkLoop ? "only links" : "outside guest memory");
      post(Trb::command_completion(commands_.dequeue(), Completion::kTrbError, 0));
      command_ring_running_ = false;
      return;
    }
    uint8_t slot = f->trb.slot_id();
    const Completion code = command(f->trb, slot);
    post(Trb::command_completion(f->address, code, slot));
  }
}

Completion XhciFunction::command(const Trb& trb, uint8_t& slot) {
  switch (trb.type()) {
    case TrbType::kNoOpCommand:
      slot = 0;
      return Completion::kSuccess;
    case TrbType::kEnableSlot:
      return enable_slot(slot);
    case TrbType::kDisableSlot:
      return disable_slot(slot);
    case TrbType::kAddressDevice:
      return address_device(trb);
    default:
      spdlog::debug("xhci: command type {} not handled yet", static_cast<int>(trb.type()));
      return Completion::kTrbError;
  }
}

Completion XhciFunction::enable_slot(uint8_t& slot_out) {
  const uint32_t max = std::min<uint32_t>(config_ & 0xff, kMaxSlots);
  for (uint32_t s = 1; s <= max; ++s)
    if (!slots_[s].enabled) {
      slots_[s] = Slot{};
      slots_[s].enabled = true;
      slot_out = static_cast<uint8_t>(s);
      return Completion::kSuccess;
    }
  slot_out = 0;
  return Completion::kNoSlotsAvailable;
}

Completion XhciFunction::disable_slot(uint8_t slot) {
  if (slot == 0 || slot > kMaxSlots || !slots_[slot].enabled) return Completion::kSlotNotEnabled;
  abandon_ep0(slots_[slot]);
  slots_[slot] = Slot{};
  uint64_t out = 0;
  if (device_context_address(slot, out)) {
    SlotContext cleared;
    (void)mem_.write_obj(out, cleared);
  }
  return Completion::kSuccess;
}

bool XhciFunction::device_context_address(uint8_t slot, uint64_t& out) const {
  return mem_.read_obj(dcbaap_ + 8ull * slot, out) && (out &= ~uint64_t{0x3f}, true);
}

Completion XhciFunction::address_device(const Trb& trb) {
  const uint8_t slot = trb.slot_id();
  if (slot == 0 || slot > kMaxSlots || !slots_[slot].enabled) return Completion::kSlotNotEnabled;
  InputContext in;
  if (!mem_.read_obj(trb.context_pointer(), in)) return Completion::kParameterError;
  // 4.6.5: the slot and EP0 are added, nothing dropped.
  if ((in.control.add_flags() & 3u) != 3u || in.control.drop_flags() != 0)
    return Completion::kParameterError;
  uint64_t out_addr = 0;
  DeviceContext out;
  if (!device_context_address(slot, out_addr) || !mem_.read_obj(out_addr, out))
    return Completion::kParameterError;
  // Address Device is valid in Enabled (either BSR) and in Default (BSR = 0 only).
  const SlotState state = slots_[slot].port ? out.slot.state() : SlotState::kDisabledEnabled;
  if (state == SlotState::kAddressed || state == SlotState::kConfigured ||
      (state == SlotState::kDefault && trb.bsr()))
    return Completion::kContextStateError;
  const uint32_t port = in.slot.root_hub_port();
  if (port < 1 || port > kPorts || !ports_[port - 1].device ||
      !(ports_[port - 1].portsc & kPortPed))
    return Completion::kParameterError;  // no enabled device behind that port
  if (in.endpoints[0].type() != EndpointType::kControl || in.endpoints[0].max_packet_size() == 0)
    return Completion::kParameterError;
  out.slot = in.slot;
  out.slot.set_context_entries(1);
  out.slot.set_state(trb.bsr() ? SlotState::kDefault : SlotState::kAddressed);
  out.slot.set_usb_address(trb.bsr() ? 0 : slot);  // the address "sent" is the slot id
  out.endpoints[0] = in.endpoints[0];
  out.endpoints[0].set_state(EndpointState::kRunning);
  if (!mem_.write_obj(out_addr, out)) return Completion::kParameterError;
  slots_[slot].port = port;
  slots_[slot].ep0.set_dequeue(in.endpoints[0].dequeue_pointer(), in.endpoints[0].dequeue_cycle());
  return Completion::kSuccess;
}

// ------------------------------------------------------------------ events and interrupts

void XhciFunction::post(const Trb& event) {
  if (!events_.push(mem_, event)) {
    spdlog::warn("xhci: event ring full or not set up; event type {} lost",
                 static_cast<int>(event.type()));
    return;
  }
  if (!(erdp_ & kErdpEhb)) {
    erdp_ |= kErdpEhb;
    iman_ |= kImanIp;
    usbsts_ |= kStsEint;
    update_irq();
  }
}

void XhciFunction::update_irq() {
  const bool pending = (iman_ & kImanIp) && (iman_ & kImanIe) && (usbcmd_ & kCmdInte);
  if (pending == irq_level_) return;
  irq_level_ = pending;
  irq_.set_level(pending);
  if (pending) irq_.message(0);
}

}  // namespace hc::xhci
