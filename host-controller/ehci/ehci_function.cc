#include "host-controller/ehci/ehci_function.h"

#include <spdlog/spdlog.h>

#include <cstring>
#include <set>

#include "usb/core/device_operations.h"

namespace hc::ehci {

using namespace reg;

namespace {

constexpr auto kMicroframe = std::chrono::microseconds(125);
constexpr uint32_t kQtdTokenOffset = 8;

bool high_speed(const usb::Device& d) {
  return d.speed() == usb::Speed::kHigh;
}

// Walks `size` bytes of a qTD's or iTD's buffer: from page pointer `page` at `offset`, going on
// into the next page pointer where it crosses 4 KiB (3.3.3, 3.5.4). `io(address, done, n)`
// moves one piece; false when a piece fails or the buffer runs out of page pointers.
template <typename Io>
bool walk_pages(std::span<const uint32_t> pages, uint32_t page, uint32_t offset, size_t size,
                Io io) {
  for (size_t done = 0; done < size; ++page, offset = 0) {
    if (page >= pages.size()) return false;
    const size_t n = std::min<size_t>(size - done, 4096 - offset);
    if (!io((pages[page] & ~0xfffu) + uint64_t{offset}, done, n)) return false;
    done += n;
  }
  return true;
}

bool itd_copy(GuestMemory& mem, const Itd& itd, uint32_t tr, std::span<uint8_t> buf,
              bool to_guest) {
  return walk_pages(itd.buffer, Itd::page(tr), Itd::offset(tr), buf.size(),
                    [&](uint64_t at, size_t done, size_t n) {
                      return to_guest ? mem.write(at, buf.subspan(done, n))
                                      : mem.read(at, buf.subspan(done, n));
                    });
}

}  // namespace

EhciFunction::EhciFunction(GuestMemory& memory, IrqLine& irq, Clock clock, Timer timer)
    : mem_(memory), irq_(irq), clock_(std::move(clock)), timer_(std::move(timer)) {
  reset();
}

EhciFunction::~EhciFunction() {
  std::vector<uint32_t> qhs;
  for (auto& [a, f] : inflight_) qhs.push_back(a);
  for (uint32_t a : qhs) abandon(a);
  *alive_ = false;
}

void EhciFunction::reset() {
  std::vector<uint32_t> qhs;
  for (auto& [a, f] : inflight_) qhs.push_back(a);
  for (uint32_t a : qhs) abandon(a);
  usbcmd_ = 0x00080000;
  usbsts_ = kStsHalted;
  woken_.clear();
  linked_.clear();
  usbintr_ = 0;
  periodic_base_ = 0;
  async_addr_ = 0;
  configflag_ = 0;
  frindex_base_ = 0;
  last_frindex_ = 0;
  if (irq_level_) irq_.set_level(false);
  irq_level_ = false;
  // Ports go back to the companion (CONFIGFLAG 0) and keep their devices (2.3.9).
  for (auto& p : ports_) {
    p.portsc = kPortPower | kPortOwner | (p.device ? kPortCcs | kPortCsc : 0);
    p.address = 0;
    p.addressed = false;
  }
}

// ------------------------------------------------------------------ registers

uint64_t EhciFunction::mmio_read(uint32_t offset, unsigned size) {
  if (size == 8) return mmio_read(offset, 4) | (mmio_read(offset + 4, 4) << 32);
  const uint32_t base = offset & ~3u;
  uint32_t v = 0;
  if (base < kCapLength) {
    switch (base) {
      case reg::kCapLength:  // (the class constant of the same name is its value)
        v = kCapLength | (uint32_t{kVersion} << 16);
        break;
      case kHcsParams:
        v = kPorts;  // no port power control, no companion controllers, no debug port
        break;
      case kHccParams:
        v = 1u << 4;  // isochronous scheduling threshold: 1 microframe; 32-bit addressing
        break;
      default:
        break;
    }
  } else {
    const uint32_t op = base - kCapLength;
    if (op >= kPortSc && op < kPortSc + 4 * kPorts) {
      v = ports_[(op - kPortSc) / 4].portsc;
    } else {
      switch (op) {
        case kUsbCmd:
          v = usbcmd_;
          break;
        case kUsbSts:
          v = usbsts_;
          break;
        case kUsbIntr:
          v = usbintr_;
          break;
        case kFrIndex:
          v = frindex();
          break;
        case kPeriodicListBase:
          v = periodic_base_;
          break;
        case kAsyncListAddr:
          v = async_addr_;
          break;
        case kConfigFlag:
          v = configflag_;
          break;
        default:
          break;
      }
    }
  }
  if (size >= 4) return v;
  return (v >> ((offset & 3u) * 8)) & ((1u << (size * 8)) - 1);
}

void EhciFunction::mmio_write(uint32_t offset, uint64_t value, unsigned size) {
  if (size == 8) {
    mmio_write(offset, value & 0xffffffffu, 4);
    mmio_write(offset + 4, value >> 32, 4);
    return;
  }
  if (size != 4 || (offset & 3u) || offset < kCapLength) return;  // capabilities: read-only
  const auto v = static_cast<uint32_t>(value);
  const uint32_t op = offset - kCapLength;
  if (op >= kPortSc && op < kPortSc + 4 * kPorts) return port_write((op - kPortSc) / 4 + 1, v);
  switch (op) {
    case kUsbCmd: {
      if (v & kCmdReset) return reset();  // HCRESET completes at once and reads back 0
      const bool was = running();
      usbcmd_ = v & (kCmdRun | kCmdFlsMask | kCmdPse | kCmdAse | kCmdIaad | kCmdItcMask);
      if (!was && running()) {
        frindex_epoch_ = clock_();
        usbsts_ &= ~kStsHalted;
      } else if (was && !running()) {
        frindex_base_ = frindex();
        usbsts_ |= kStsHalted;
      }
      // The schedule status bits follow their enables (the model has no latency to hide).
      usbsts_ = (usbsts_ & ~(kStsAss | kStsPss)) | ((usbcmd_ & kCmdAse) ? kStsAss : 0) |
                ((usbcmd_ & kCmdPse) ? kStsPss : 0);
      schedule_tick();
      run_async();
      return;
    }
    case kUsbSts:
      usbsts_ &= ~(v & kStsW1c);
      return update_irq();
    case kUsbIntr:
      usbintr_ = v & 0x3fu;
      schedule_tick();
      return update_irq();
    case kFrIndex:
      if (!running()) frindex_base_ = v & 0x3fffu;  // writable only while halted
      return;
    case kPeriodicListBase:
      periodic_base_ = v & ~0xfffu;
      return;
    case kAsyncListAddr:
      async_addr_ = v & ~0x1fu;
      return run_async();
    case kConfigFlag: {
      const uint32_t now = v & 1u;
      if (now && !configflag_) {
        // The EHCI function takes every port; connected devices are new connections to it.
        for (uint32_t p = 1; p <= kPorts; ++p) {
          Port& port = ports_[p - 1];
          port.portsc &= ~kPortOwner;
          if (port.device) {
            port.portsc |= kPortCcs | kPortCsc;
            port_change(p);
          }
        }
      } else if (!now && configflag_) {
        for (auto& port : ports_) port.portsc = (port.portsc | kPortOwner) & ~kPortPed;
      }
      configflag_ = now;
      return;
    }
    default:
      return;
  }
}

void EhciFunction::port_write(uint32_t n, uint32_t v) {
  Port& p = ports_[n - 1];
  const uint32_t old = p.portsc;
  p.portsc &= ~(v & kPortW1c);
  if (configflag_) p.portsc = (p.portsc & ~kPortOwner) | (v & kPortOwner);
  if (p.portsc & kPortOwner) {  // the companion's port: nothing else is ours to change
    p.portsc &= ~(kPortPed | kPortReset | kPortSuspend);
    return;
  }
  if (!(v & kPortPed)) p.portsc &= ~kPortPed;  // software may disable, never enable
  if ((v & kPortReset) && !(old & kPortReset)) {
    p.portsc = (p.portsc | kPortReset) & ~(kPortPed | kPortSuspend);
  } else if (!(v & kPortReset) && (old & kPortReset)) {
    // The reset ends when software clears PR (2.3.9): a high-speed device's port is enabled;
    // a full- or low-speed one stays disabled for a companion controller.
    p.portsc &= ~kPortReset;
    p.address = 0;
    p.addressed = false;
    if (p.device) {
      p.device->reset([](usb::Status) {});
      if (high_speed(*p.device) && (p.portsc & kPortCcs)) p.portsc |= kPortPed;
    }
  }
  if ((v & kPortSuspend) && (p.portsc & kPortPed)) p.portsc |= kPortSuspend;
  if ((v & kPortFpr) || !(v & kPortSuspend)) p.portsc &= ~(kPortSuspend | kPortFpr);
}

void EhciFunction::port_change(uint32_t) {
  set_status(kStsPcd);
}

bool EhciFunction::attach(uint32_t port, usb::Device& device) {
  if (port < 1 || port > kPorts || ports_[port - 1].device) return false;
  Port& p = ports_[port - 1];
  p.device = &device;
  p.address = 0;
  p.addressed = false;
  // Line status K (01) marks a low-speed device, for the driver to hand the port over.
  p.portsc = (p.portsc & ~(3u << kPortLineShift)) | kPortCcs | kPortCsc |
             (device.speed() == usb::Speed::kLow ? 1u << kPortLineShift : 0u);
  port_change(port);
  return true;
}

void EhciFunction::detach(uint32_t port) {
  if (port < 1 || port > kPorts || !ports_[port - 1].device) return;
  Port& p = ports_[port - 1];
  std::vector<uint32_t> qhs;
  for (auto& [a, f] : inflight_)
    if (f.device == p.device) qhs.push_back(a);
  for (uint32_t a : qhs) abandon(a);
  p.device = nullptr;
  p.addressed = false;
  p.portsc = (p.portsc & ~(kPortCcs | kPortPed | kPortSuspend | kPortReset)) | kPortCsc |
             ((p.portsc & kPortPed) ? kPortPedc : 0);
  port_change(port);
}

void EhciFunction::host_system_error(const char* what, uint32_t address) {
  spdlog::warn("ehci: {} at {:#x} is outside guest memory: host system error", what, address);
  usbcmd_ &= ~kCmdRun;
  usbsts_ |= kStsHalted;
  set_status(kStsHse);
}

void EhciFunction::set_status(uint32_t bits) {
  usbsts_ |= bits;
  update_irq();
}

void EhciFunction::update_irq() {
  const bool pending = (usbsts_ & usbintr_ & 0x3fu) != 0;
  if (pending == irq_level_) return;
  irq_level_ = pending;
  irq_.set_level(pending);
  if (pending) irq_.message(0);
}

uint32_t EhciFunction::frindex() const {
  if (!running()) return frindex_base_;
  const auto uframes = static_cast<uint64_t>((clock_() - frindex_epoch_) / kMicroframe);
  return static_cast<uint32_t>((frindex_base_ + uframes) & 0x3fffu);
}

void EhciFunction::schedule_tick() {
  if (!timer_ || tick_armed_ || !running()) return;
  if (!(usbcmd_ & (kCmdAse | kCmdPse)) && !(usbintr_ & kStsFlr)) return;
  tick_armed_ = true;
  timer_(std::chrono::milliseconds(1), [this, alive = std::weak_ptr<bool>(alive_)] {
    auto a = alive.lock();
    if (!a || !*a) return;
    tick_armed_ = false;
    tick();
  });
}

void EhciFunction::tick() {
  poll();
  schedule_tick();
}

void EhciFunction::poll() {
  if (!running()) return;
  // Frame list rollover: FRINDEX bit 13 toggles once per pass over a 1024-entry list (2.3.4).
  const uint32_t f = frindex();
  if ((f ^ last_frindex_) & 0x2000u) set_status(kStsFlr);
  last_frindex_ = f;
  // The frames that began since the last look, late ones included, at most kMaxCatchUp of
  // them (as QEMU's EHCI catches up): a VM's loop turn that came late delivers its iso data
  // late rather than dropping it; frames further behind are skipped and their iTDs stay
  // active, which the driver sees as missed.
  const uint32_t frame = (f >> 3) & 0x3ffu;
  if (usbcmd_ & kCmdPse) {
    if (!periodic_started_) {
      periodic_started_ = true;
      last_frame_ = (frame - 1) & 0x3ffu;
    }
    uint32_t pending = (frame - last_frame_) & 0x3ffu;
    const uint32_t first =
        pending > kMaxCatchUp ? (frame - kMaxCatchUp + 1) & 0x3ffu : (last_frame_ + 1) & 0x3ffu;
    pending = std::min<uint32_t>(pending, kMaxCatchUp);
    for (uint32_t i = 0; i < pending && running(); ++i) run_periodic((first + i) & 0x3ffu);
    last_frame_ = frame;
  } else {
    periodic_started_ = false;
  }
  run_async();
}

usb::TransferType EhciFunction::endpoint_type(usb::Device& dev, uint8_t endpoint) const {
  const auto* cfg = dev.descriptors().find_configuration(dev.active_configuration());
  if (cfg)
    for (const auto& intf : cfg->interfaces) {
      if (intf.alternate != dev.alternate_setting(intf.number)) continue;
      for (const auto& e : intf.endpoints)
        if (e.address == endpoint) return e.type();
    }
  return usb::TransferType::kBulk;
}

// ------------------------------------------------------------------ periodic schedule

void EhciFunction::run_periodic(uint32_t frame) {
  Link link;
  if (!mem_.read_obj(periodic_base_ + 4ull * frame, link)) {
    return host_system_error("the frame list", periodic_base_);
  }
  std::set<uint32_t> seen;
  for (int n = 0; n < kMaxQhs && !link.terminate() && !seen.contains(link.address()); ++n) {
    const uint32_t at = link.address();
    seen.insert(at);
    if (link.type() == LinkType::kItd) {
      Itd itd;
      if (!mem_.read_obj(at, itd)) break;
      if (!inflight_.contains(at)) start_itd(at, itd);
      link = itd.next;
    } else if (link.type() == LinkType::kQh) {
      Qh qh;
      if (!mem_.read_obj(at, qh)) break;
      if (qh.s_mask()) service_qh(at, qh, /*now=*/true, /*periodic=*/true);  // once per frame
      link = qh.horizontal;
    } else {
      // siTD / FSTN: full-speed devices behind a transaction translator, not on this EHCI.
      uint32_t next = 0;
      if (!mem_.read_obj(at, next)) break;
      link.raw = next;
    }
  }
}

bool EhciFunction::periodic_reachable(uint32_t address) const {
  std::set<uint32_t> visited;
  for (uint32_t frame = 0; frame < 1024; ++frame) {
    uint32_t link = 1;
    if (!mem_.read_obj(periodic_base_ + 4ull * frame, link)) return false;
    // Every periodic element starts with its next link pointer (3.3, 3.4, 3.6, 3.7).
    for (int n = 0; n < kMaxQhs && !(link & 1u); ++n) {
      const uint32_t at = link & ~0x1fu;
      if (at == address) return true;
      if (!visited.insert(at).second || !mem_.read_obj(at, link)) break;
    }
  }
  return false;
}

void EhciFunction::start_itd(uint32_t at, const Itd& itd) {
  usb::Device* dev = device_for(itd.device_address());
  std::array<int, 8> slots{};  // packet index of each transaction (-1: not in this transfer)
  slots.fill(-1);
  uint32_t total = 0;
  std::vector<usb::IsoPacket> packets;
  for (int i = 0; i < 8; ++i) {
    const uint32_t tr = itd.transaction[i];
    if (!(tr & Itd::kActive)) continue;
    slots[i] = static_cast<int>(packets.size());
    packets.push_back({total, Itd::length(tr), 0, usb::Status::kOk});
    total += Itd::length(tr);
  }
  if (packets.empty()) return;
  if (!dev) {
    // Nobody answers: every active transaction retires with a transaction error.
    Itd out = itd;
    bool ioc = false;
    for (int i = 0; i < 8; ++i)
      if (slots[i] >= 0) {
        ioc = ioc || Itd::ioc(out.transaction[i]);
        out.transaction[i] = (out.transaction[i] & ~Itd::kActive) | Itd::kXactError;
      }
    (void)mem_.write_obj(at, out);
    return set_status(kStsErrInt | (ioc ? kStsInt : 0));
  }
  const auto endpoint = static_cast<uint8_t>(itd.endpoint() | (itd.in() ? 0x80 : 0x00));
  auto t =
      std::make_unique<usb::Transfer>(endpoint, usb::TransferType::kIsochronous, pool_.get(total));
  t->iso_packets = std::move(packets);
  if (!itd.in()) {
    for (int i = 0; i < 8; ++i) {
      if (slots[i] < 0) continue;
      const auto& p = t->iso_packets[slots[i]];
      if (!itd_copy(mem_, itd, itd.transaction[i], t->buffer().subspan(p.offset, p.length),
                    /*to_guest=*/false)) {
        // The OUT data is not in guest memory: the transactions retire with a buffer error.
        Itd out = itd;
        for (int j = 0; j < 8; ++j)
          if (slots[j] >= 0)
            out.transaction[j] = (out.transaction[j] & ~Itd::kActive) | Itd::kBufferError;
        (void)mem_.write_obj(at, out);
        pool_.put(t->take_buffer());
        return set_status(kStsErrInt);
      }
    }
  }
  Inflight f;
  f.device = dev;
  f.periodic = true;
  f.transfer = std::move(t);
  usb::Transfer& ref = *f.transfer;
  inflight_[at] = std::move(f);
  ref.set_completion([this, at, slots, alive = alive_, orphans = orphans_](usb::Transfer& x) {
    if (orphans->release(x)) return;  // abandoned: destroyed, nobody waits for it
    if (*alive) finish_itd(at, x, slots);
  });
  dev->submit(ref);  // may complete inline
}

void EhciFunction::finish_itd(uint32_t at, usb::Transfer& t, std::array<int, 8> slots) {
  auto it = inflight_.find(at);
  if (it == inflight_.end() || it->second.transfer.get() != &t) return;  // not ours any more
  Inflight f = std::move(it->second);
  inflight_.erase(it);
  Itd itd;
  if (!mem_.read_obj(at, itd) || !periodic_reachable(at)) {
    // The driver took the iTD out of the frame list meanwhile: nothing is written back.
    pool_.put(t.take_buffer());
    return;
  }
  bool ioc = false, error = false;
  for (int i = 0; i < 8; ++i) {
    if (slots[i] < 0 || static_cast<size_t>(slots[i]) >= t.iso_packets.size()) continue;
    const auto& p = t.iso_packets[slots[i]];
    uint32_t& tr = itd.transaction[i];
    ioc = ioc || Itd::ioc(tr);
    uint32_t status = 0;
    if (t.status() == usb::Status::kCancelled || t.status() == usb::Status::kNoDevice ||
        (p.status != usb::Status::kOk && p.status != usb::Status::kShortPacket))
      status = p.status == usb::Status::kBabble ? Itd::kBabble : Itd::kXactError;
    error = error || status;
    const uint32_t actual = std::min(p.actual_length, p.length);
    if (itd.in() && actual &&
        !itd_copy(mem_, itd, tr, t.buffer().subspan(p.offset, actual), /*to_guest=*/true))
      status = Itd::kBufferError;
    error = error || status;
    // Active cleared; an IN transaction's length becomes what arrived (3.3.2).
    tr = (tr & ~(Itd::kActive | Itd::kBufferError | Itd::kBabble | Itd::kXactError)) | status;
    if (itd.in()) tr = (tr & ~(0xfffu << 16)) | (actual << 16);
  }
  (void)mem_.write_obj(at, itd);
  pool_.put(t.take_buffer());
  f.transfer.reset();
  set_status((ioc ? kStsInt : 0) | (error ? kStsErrInt : 0));
}

// ------------------------------------------------------------------ async schedule

void EhciFunction::run_async() {
  if (in_async_) {  // an inline completion: the walk in progress goes round again
    async_again_ = true;
    return;
  }
  in_async_ = true;
  for (int round = 0; round < 16; ++round) {
    async_again_ = false;
    const bool iaad = usbcmd_ & kCmdIaad;
    std::set<uint32_t>& seen = linked_;
    seen.clear();
    bool whole = true;  // the walk came back round (or ended): `seen` is the whole list
    if (running() && (usbcmd_ & kCmdAse) && async_addr_) {
      uint32_t at = async_addr_;
      whole = false;
      for (int n = 0;; ++n) {
        if (seen.contains(at)) {
          whole = true;
          break;
        }
        if (n == kMaxQhs) break;
        seen.insert(at);
        Qh qh;
        if (!mem_.read_obj(at, qh)) {
          host_system_error("a queue head", at);
          in_async_ = false;
          return;
        }
        service_qh(at, qh, /*now=*/false, /*periodic=*/false);
        if (qh.horizontal.terminate() || qh.horizontal.type() != LinkType::kQh) {
          whole = true;
          break;
        }
        at = qh.horizontal.address();
      }
    }
    if (iaad) {
      // Interrupt on Async Advance (4.8.2): nothing the driver unlinked from the async list is
      // referenced any more — transfers of async queue heads no longer in it are given up
      // (periodic ones are not the doorbell's business; a walk cut short decides nothing).
      std::vector<uint32_t> gone;
      for (auto& [a, f] : inflight_)
        if (!f.periodic && whole && !seen.contains(a)) gone.push_back(a);
      for (uint32_t a : gone) abandon(a);
      usbcmd_ &= ~kCmdIaad;
      set_status(kStsIaa);
    }
    if (!async_again_) break;
  }
  in_async_ = false;
}

std::optional<uint32_t> EhciFunction::serve(uint32_t a) {
  woken_.erase(a);
  if (!running() || !(usbcmd_ & kCmdAse) || !linked_.contains(a)) return std::nullopt;
  Qh qh;
  if (!mem_.read_obj(a, qh)) return std::nullopt;
  const uint64_t before = starts_;
  service_qh(a, qh, /*now=*/true, /*periodic=*/false);
  if (starts_ == before) return std::nullopt;
  return qh.overlay.token.total_bytes();
}

bool EhciFunction::service_qh(uint32_t a, Qh& qh, bool now, bool periodic) {
  if (inflight_.contains(a)) return true;  // one transfer per queue at a time
  if (qh.overlay.token.halted()) return true;
  if (!qh.overlay.token.active()) {
    // Advance the queue (4.10.2): after a short read the alternate next qTD, else the next.
    Link next = qh.overlay.next;
    const bool short_read = qh.overlay.token.pid() == Pid::kIn &&
                            qh.overlay.token.total_bytes() != 0 && qh.current != 0;
    if (short_read && !qh.overlay.alt_next.terminate()) next = qh.overlay.alt_next;
    if (next.terminate() || next.address() == 0) return true;
    Qtd q;
    if (!mem_.read_obj(next.address(), q)) {
      qh.overlay.token.raw |= QtdToken::kHalted;
      (void)mem_.write_obj(a + offsetof(Qh, overlay) + kQtdTokenOffset, qh.overlay.token);
      set_status(kStsErrInt);
      return false;
    }
    if (!q.token.active()) return true;  // not ready yet
    qh.current = next.address();
    qh.overlay = q;
    (void)mem_.write_obj(a + offsetof(Qh, current), qh.current);
    (void)mem_.write_obj(a + offsetof(Qh, overlay), qh.overlay);
  }
  if (periodic) {
    // The frame list serves interrupt endpoints only: a guest cannot move bulk traffic past the
    // fair queue by linking it there.
    usb::Device* dev = device_for(qh.device_address());
    const auto ep =
        static_cast<uint8_t>(qh.endpoint() | (qh.overlay.token.pid() == Pid::kIn ? 0x80 : 0x00));
    if (!dev || qh.endpoint() == 0 || endpoint_type(*dev, ep) != usb::TransferType::kInterrupt)
      return true;
  } else if (wake_ && !now) {
    // An async transfer is ready: its VM's turn in the controller's fair queue starts it.
    if (woken_.insert(a).second) wake_(a, qh.overlay.token.total_bytes());
    return true;
  }
  start(a, qh);
  if (periodic) {
    auto it = inflight_.find(a);
    if (it != inflight_.end()) it->second.periodic = true;
  }
  return true;
}

usb::Device* EhciFunction::device_for(uint8_t address) {
  for (auto& p : ports_) {
    if (!p.device || (p.portsc & kPortOwner) || !(p.portsc & kPortPed)) continue;
    if (address == 0 ? !p.addressed : (p.addressed && p.address == address)) return p.device;
  }
  return nullptr;
}

bool EhciFunction::gather(const Qtd& qtd, std::span<uint8_t> out) const {
  return walk_pages(
      qtd.buffer, qtd.token.c_page(), qtd.buffer[0] & 0xfffu, out.size(),
      [&](uint64_t at, size_t done, size_t n) { return mem_.read(at, out.subspan(done, n)); });
}

bool EhciFunction::scatter(const Qtd& qtd, std::span<const uint8_t> in) {
  return walk_pages(
      qtd.buffer, qtd.token.c_page(), qtd.buffer[0] & 0xfffu, in.size(),
      [&](uint64_t at, size_t done, size_t n) { return mem_.write(at, in.subspan(done, n)); });
}

void EhciFunction::start(uint32_t a, Qh& qh) {
  const Qtd& q = qh.overlay;
  usb::Device* dev = device_for(qh.device_address());
  auto fail = [&](uint32_t status) {
    // No device answers at that address (or the qTD cannot be followed): the qTD halts with a
    // transaction error once its retries are used up (4.15.1.1.2).
    Qtd retired = q;
    retired.token.retire(q.token.total_bytes(), status | QtdToken::kHalted, q.token.c_page());
    (void)mem_.write_obj(qh.current + kQtdTokenOffset, retired.token);
    (void)mem_.write_obj(a + offsetof(Qh, overlay) + kQtdTokenOffset, retired.token);
    set_status(kStsErrInt | (q.token.ioc() ? kStsInt : 0));
  };
  if (!dev) return fail(QtdToken::kXactError);
  Inflight f;
  f.device = dev;
  if (q.token.pid() == Pid::kSetup) {
    uint8_t raw[8];
    if (!gather(q, raw)) return fail(QtdToken::kBufferError);
    const auto setup = usb::SetupPacket::from_bytes(std::span<const uint8_t, 8>(raw, 8));
    const bool in = setup.direction() == usb::Direction::kIn;
    // Gather the data stage and the status stage that follow (Linux queues them together).
    f.control = true;
    f.qtds.push_back(qh.current);
    f.data_first = 1;
    uint32_t data_bytes = 0;
    Link next = q.next;
    bool complete = false;
    for (int n = 0; n < kMaxQtdChain && !next.terminate(); ++n) {
      Qtd d;
      if (!mem_.read_obj(next.address(), d) || !d.token.active()) break;
      const bool status_stage = d.token.total_bytes() == 0 &&
                                (setup.length == 0 ? d.token.pid() == Pid::kIn
                                                   : d.token.pid() == (in ? Pid::kOut : Pid::kIn));
      f.qtds.push_back(next.address());
      if (status_stage && (f.data_count > 0 || setup.length == 0 || data_bytes == 0)) {
        complete = true;
        break;
      }
      ++f.data_count;
      data_bytes += d.token.total_bytes();
      next = d.next;
    }
    if (!complete) return;  // the driver has not linked the whole transfer yet
    usb::SetupPacket s = setup;
    s.length = static_cast<uint16_t>(std::min<uint32_t>(s.length, data_bytes));
    if (s.request_type == 0x00 && s.request == usb::request::kSetAddress) {
      // The controller keeps the address: its device answers to it from now on.
      for (auto& p : ports_)
        if (p.device == dev) {
          p.address = static_cast<uint8_t>(s.value & 0x7f);
          p.addressed = p.address != 0;
        }
      f.transfer = usb::Transfer::control(0x00, s);
      f.set_address = true;
      usb::Transfer& t = *f.transfer;
      inflight_[a] = std::move(f);
      t.set_completion([this, a](usb::Transfer& x) { finish(a, x); });
      ++starts_;
      t.complete(usb::Status::kOk, 0);
      return;
    }
    f.transfer = usb::Transfer::control(in ? 0x80 : 0x00, s);
    if (!in && s.length) {
      size_t at = 0;
      for (uint32_t i = 0; i < f.data_count; ++i) {
        Qtd d;
        if (!mem_.read_obj(f.qtds[1 + i], d)) return fail(QtdToken::kBufferError);
        const size_t n = std::min<size_t>(d.token.total_bytes(), s.length - at);
        if (n && !gather(d, f.transfer->buffer().subspan(at, n)))
          return fail(QtdToken::kBufferError);
        at += n;
      }
    }
  } else {
    const bool in = q.token.pid() == Pid::kIn;
    const uint32_t length = q.token.total_bytes();
    f.qtds.push_back(qh.current);
    const auto endpoint = static_cast<uint8_t>(qh.endpoint() | (in ? 0x80 : 0x00));
    f.transfer =
        std::make_unique<usb::Transfer>(endpoint, endpoint_type(*dev, endpoint), pool_.get(length));
    if (!in && length && !gather(q, f.transfer->buffer())) return fail(QtdToken::kBufferError);
  }
  usb::Transfer& t = *f.transfer;
  inflight_[a] = std::move(f);
  t.set_completion([this, a, alive = alive_, orphans = orphans_](usb::Transfer& x) {
    if (orphans->release(x)) return;  // abandoned: destroyed, nobody waits for it
    if (*alive) finish(a, x);
  });
  ++starts_;
  usb::submit_or_perform(*dev, t);  // may complete inline
}

void EhciFunction::finish(uint32_t a, usb::Transfer& t) {
  auto it = inflight_.find(a);
  if (it == inflight_.end() || it->second.transfer.get() != &t) return;  // not ours any more
  Inflight f = std::move(it->second);
  inflight_.erase(it);
  if (f.periodic && !periodic_reachable(a)) {
    // An interrupt QH the driver unlinked meanwhile: its memory may be reused, write nothing.
    if (t.type() != usb::TransferType::kControl) pool_.put(t.take_buffer());
    return;
  }
  const usb::Status st = t.status();
  const bool ok = st == usb::Status::kOk || st == usb::Status::kShortPacket;
  const uint32_t error_bits =
      st == usb::Status::kStall
          ? QtdToken::kHalted
          : (st == usb::Status::kBabble ? QtdToken::kHalted | QtdToken::kBabble
                                        : QtdToken::kHalted | QtdToken::kXactError);
  size_t actual = t.actual_length();
  bool ioc = false;
  Qtd last;
  uint32_t last_address = 0;
  // Retires qTD `addr` with `left` bytes not moved and `status`.
  auto retire = [&](uint32_t addr, uint32_t left, uint32_t status) {
    Qtd q;
    if (!mem_.read_obj(addr, q)) return;
    ioc = ioc || q.token.ioc();
    q.token.retire(left, status, q.token.c_page());
    (void)mem_.write_obj(addr + kQtdTokenOffset, q.token);
    last = q;
    last_address = addr;
  };
  const bool in = t.direction() == usb::Direction::kIn;
  if (f.control) {
    retire(f.qtds[0], 0, 0);  // SETUP
    size_t left_over = actual;
    bool halted = false;
    for (uint32_t i = 0; i < f.data_count && !halted; ++i) {
      Qtd d;
      if (!mem_.read_obj(f.qtds[1 + i], d)) break;
      const uint32_t want = d.token.total_bytes();
      const size_t n = std::min<size_t>(want, left_over);
      if (in && n) (void)scatter(d, t.data().subspan(actual - left_over, n));
      left_over -= n;
      const bool short_here = n < want;
      if (!ok && (short_here || i + 1 == f.data_count)) {
        retire(f.qtds[1 + i], static_cast<uint32_t>(want - n), error_bits);
        halted = true;
      } else {
        retire(f.qtds[1 + i], static_cast<uint32_t>(want - n), 0);
      }
    }
    if (!halted) retire(f.qtds.back(), 0, ok ? 0 : error_bits);  // STATUS
  } else {
    Qtd q;
    if (mem_.read_obj(f.qtds[0], q)) {
      const uint32_t want = q.token.total_bytes();
      actual = std::min<size_t>(actual, want);
      if (in && actual) (void)scatter(q, t.data().first(actual));
      retire(f.qtds[0], static_cast<uint32_t>(want - actual), ok ? 0 : error_bits);
    }
    if (t.type() != usb::TransferType::kControl) pool_.put(t.take_buffer());
  }
  // The overlay holds the last retired qTD: its token says where the queue stands (halted or
  // ready to advance).
  if (last_address) {
    (void)mem_.write_obj(a + offsetof(Qh, current), last_address);
    (void)mem_.write_obj(a + offsetof(Qh, overlay), last);
  }
  f.transfer.reset();
  set_status((ioc ? kStsInt : 0) | (ok ? 0 : kStsErrInt));
  run_async();  // the queue's next qTD
}

void EhciFunction::abandon(uint32_t a) {
  auto it = inflight_.find(a);
  if (it == inflight_.end()) return;
  Inflight f = std::move(it->second);
  inflight_.erase(it);
  // Whoever holds it — the device, or a sharing layer that parked it — is asked to give it back;
  // it is kept (beyond this function's life if need be) until it completes.
  OrphanStore::adopt(orphans_, std::move(f.transfer));
}

}  // namespace hc::ehci
