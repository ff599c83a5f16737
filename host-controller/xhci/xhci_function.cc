#include "host-controller/xhci/xhci_function.h"

#include <spdlog/spdlog.h>

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
  for (uint8_t s = 1; s <= kMaxSlots; ++s) abandon_slot(s);
  *alive_ = false;
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
  for (uint8_t s = 1; s <= kMaxSlots; ++s) {
    abandon_slot(s);
    slots_[s] = Slot{};
  }
  iman_ = 0;
  imod_ = 4000;
  moderation_until_ = {};
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
    case kInterrupterBase + kImod: {
      const auto left = moderation_until_ - clock_();
      const uint32_t imodc = left.count() > 0 ? static_cast<uint32_t>(std::min<int64_t>(
                                                    left / std::chrono::nanoseconds(250), 0xffff))
                                              : 0;
      return imod_ | (imodc << 16);
    }
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
      imod_ = v & 0xffff;
      moderation_until_ = clock_() + std::chrono::nanoseconds(250) * (v >> 16);  // IMODC
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
      // Software caught up: events still unread raise the interrupt again (4.17.2), subject to
      // moderation.
      if (clear_ehb && !events_.empty()) interrupt_due();
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
  for (uint8_t s = 1; s <= kMaxSlots; ++s)
    if (slots_[s].port == port) abandon_slot(s);
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

// ------------------------------------------------------------------ events and interrupts

void XhciFunction::post(const Trb& event) {
  switch (events_.push(mem_, event)) {
    case EventRing::Push::kOk:
      break;
    case EventRing::Push::kFull:
      // The Event Ring Full event (once) still interrupts; later events are lost until the
      // driver catches up.
      spdlog::warn("xhci: event ring full; event type {} lost", static_cast<int>(event.type()));
      break;
    case EventRing::Push::kUnconfigured:
      spdlog::warn("xhci: no event ring set up; event type {} lost",
                   static_cast<int>(event.type()));
      return;
    case EventRing::Push::kMemoryError:
      return host_system_error("the event ring is not in guest memory any more");
  }
  interrupt_due();
}

void XhciFunction::host_system_error(const char* why) {
  // 4.10.2.6 / 5.4.2: a memory access the controller cannot complete is a Host System Error;
  // the controller halts.
  spdlog::error("xhci: host system error: {}; halting", why);
  usbsts_ |= kStsHse;
  usbcmd_ &= ~kCmdRun;
  command_ring_running_ = false;
  update_irq();
}

void XhciFunction::interrupt_due() {
  if (erdp_ & kErdpEhb) return;  // the driver is still handling the last interrupt
  const auto now = clock_();
  if (!timer_ || now >= moderation_until_) return raise_interrupt();
  if (moderation_armed_) return;
  moderation_armed_ = true;
  timer_(moderation_until_ - now, [this, alive = std::weak_ptr<bool>(alive_)] {
    auto a = alive.lock();
    if (!a || !*a) return;
    moderation_armed_ = false;
    if (!events_.empty()) interrupt_due();
  });
}

void XhciFunction::raise_interrupt() {
  erdp_ |= kErdpEhb;
  iman_ |= kImanIp;
  usbsts_ |= kStsEint;
  // IMODC is loaded with IMODI when the interrupt is raised (4.17.2).
  moderation_until_ = clock_() + std::chrono::nanoseconds(250) * (imod_ & 0xffff);
  update_irq();
}

void XhciFunction::update_irq() {
  const bool pending = (iman_ & kImanIp) && (iman_ & kImanIe) && (usbcmd_ & kCmdInte);
  if (irq_.message_signalled()) {
    // MSI-X: one message per interrupt, and IP clears when it is sent (4.17.1).
    if (irq_level_) irq_.set_level(false);
    irq_level_ = false;
    if (!pending) return;
    iman_ &= ~kImanIp;
    irq_.message(0);
    return;
  }
  if (pending == irq_level_) return;
  irq_level_ = pending;
  irq_.set_level(pending);
  if (pending) irq_.message(0);
}

}  // namespace hc::xhci
