// XhciFunction: transfer rings (xHCI 1.2 section 4.10): control TDs on EP0, Normal TDs on bulk and
// interrupt endpoints, Isoch TDs on isochronous ones, into the port's usb::Device; Transfer Events
// back (4.11.3.1, 4.10.1.1), Event Data TRBs (4.11.5.2) included.
#include <spdlog/spdlog.h>

#include <cstring>

#include "host-controller/xhci/xhci_function.h"
#include "usb/core/device_operations.h"

namespace hc::xhci {

namespace {

constexpr uint32_t kMaxTdBytes = 64u << 20;  // a TD larger than 64 MiB is a TRB Error here

bool in_type(EndpointType t) {
  return t == EndpointType::kBulkIn || t == EndpointType::kInterruptIn ||
         t == EndpointType::kIsochIn;
}

}  // namespace

XhciFunction::TdKind XhciFunction::kind_of(uint8_t dci, EndpointType type) const {
  if (dci == 1) return TdKind::kControl;
  if (type == EndpointType::kIsochIn || type == EndpointType::kIsochOut) return TdKind::kIsoch;
  return TdKind::kNormal;
}

std::expected<XhciFunction::Td, Completion> XhciFunction::take_td(Ring& ring, TdKind kind,
                                                                  bool& incomplete,
                                                                  usb::SetupPacket& setup) {
  incomplete = false;
  const uint64_t start = ring.dequeue();
  const bool start_cycle = ring.cycle();
  auto give_back = [&](Completion c) -> std::expected<Td, Completion> {
    ring.set_dequeue(start, start_cycle);
    return std::unexpected(c);
  };
  Td td;
  uint32_t total = 0;
  auto add_piece = [&](const Ring::Fetched& f) {
    const Trb& t = f.trb;
    const uint32_t len = t.idt() ? std::min<uint32_t>(t.transfer_length(), 8) : t.transfer_length();
    total += len;
    td.pieces.push_back({t.idt() ? f.address : t.parameter, len, f.address, t.isp(), t.ioc()});
  };
  auto add_mark = [&](const Ring::Fetched& f) {
    td.marks.push_back({f.trb.parameter, total, f.trb.ioc()});
  };
  auto first = ring.pop(mem_);
  if (!first) {
    incomplete = first.error() == Ring::Stop::kEmpty;
    return give_back(Completion::kTrbError);
  }
  const TrbType first_type = first->trb.type();
  if (first_type == TrbType::kNoOp) {
    // A TD the driver turned into No Ops (xhci-hcd does when it cancels one): consumed, with an
    // event only if it asks for one. Its chain may hold more No Ops and Event Data.
    td.noop = true;
    Ring::Fetched f = *first;
    for (size_t n = 0;; ++n) {
      td.last_trb = f.address;
      td.last_ioc = f.trb.ioc() && f.trb.type() != TrbType::kEventData;
      if (f.trb.type() == TrbType::kEventData) add_mark(f);
      if (!f.trb.chain()) return td;
      if (n == Ring::kMaxTdTrbs) return give_back(Completion::kTrbError);
      auto next = ring.pop(mem_);
      if (!next) {
        incomplete = next.error() == Ring::Stop::kEmpty;
        return give_back(Completion::kTrbError);
      }
      if (next->trb.type() != TrbType::kNoOp && next->trb.type() != TrbType::kEventData)
        return give_back(Completion::kTrbError);
      f = *next;
    }
  }
  if (kind == TdKind::kControl) {
    const Ring::Fetched& s = *first;
    if (first_type != TrbType::kSetupStage || !s.trb.idt() || s.trb.transfer_length() != 8)
      return std::unexpected(Completion::kTrbError);  // consumed and reported (4.11.2.2)
    td.setup_trb = s.address;
    uint8_t raw[8];
    std::memcpy(raw, &s.trb.parameter, 8);
    setup = usb::SetupPacket::from_bytes(std::span<const uint8_t, 8>(raw, 8));
    bool data_seen = false;
    for (size_t n = 0; n < Ring::kMaxTdTrbs; ++n) {
      auto f = ring.pop(mem_);
      if (!f) {
        incomplete = f.error() == Ring::Stop::kEmpty;
        return give_back(Completion::kTrbError);
      }
      const Trb& t = f->trb;
      if (t.type() == TrbType::kStatusStage) {
        td.status_trb = td.last_trb = f->address;
        td.status_ioc = td.last_ioc = t.ioc();
        return td;
      }
      const bool data = t.type() == TrbType::kDataStage && !data_seen && n == 0;
      const bool more =
          (t.type() == TrbType::kNormal || t.type() == TrbType::kEventData) && data_seen;
      if (!data && !more) return give_back(Completion::kTrbError);
      if (t.type() == TrbType::kEventData) {
        add_mark(*f);
        continue;
      }
      if (data) {
        data_seen = true;
        td.in = t.dir_in();
      }
      add_piece(*f);
      if (total > 0xffff) return give_back(Completion::kTrbError);  // wLength is 16 bits
    }
    return give_back(Completion::kTrbError);
  }
  // Normal TDs: Normal TRBs; Isoch TDs: an Isoch TRB first, then Normal TRBs (4.11.2.3).
  // Either may carry Event Data TRBs; the chain bit holds the TD together.
  const TrbType opener = kind == TdKind::kIsoch ? TrbType::kIsoch : TrbType::kNormal;
  if (first_type != opener) return std::unexpected(Completion::kTrbError);
  Ring::Fetched f = *first;
  for (size_t n = 0;; ++n) {
    const Trb& t = f.trb;
    if (t.type() == TrbType::kEventData)
      add_mark(f);
    else if (n == 0 || t.type() == TrbType::kNormal)
      add_piece(f);
    else
      return give_back(Completion::kTrbError);
    td.last_trb = f.address;
    td.last_ioc = t.ioc() && t.type() != TrbType::kEventData;
    if (total > kMaxTdBytes) return give_back(Completion::kTrbError);
    if (!t.chain()) return td;
    if (n + 1 == Ring::kMaxTdTrbs) return give_back(Completion::kTrbError);
    auto next = ring.pop(mem_);
    if (!next) {
      incomplete = next.error() == Ring::Stop::kEmpty;
      return give_back(Completion::kTrbError);
    }
    f = *next;
  }
}

bool XhciFunction::can_run(uint8_t slot, uint8_t dci) const {
  if (slot < 1 || slot > kMaxSlots || dci < 1 || dci > 31) return false;
  const Slot& sl = slots_[slot];
  const Endpoint& ep = sl.eps[dci];
  return running() && sl.enabled && sl.port && !ep.inflight &&
         ep.state == EndpointState::kRunning && (dci == 1 || ep.type != EndpointType::kNotValid);
}

std::optional<uint32_t> XhciFunction::next_td_bytes(uint8_t slot, uint8_t dci) {
  if (!can_run(slot, dci)) return std::nullopt;
  Endpoint& ep = slots_[slot].eps[dci];
  const uint64_t at = ep.ring.dequeue();
  const bool cycle = ep.ring.cycle();
  bool incomplete = false;
  usb::SetupPacket setup;
  auto td = take_td(ep.ring, kind_of(dci, ep.type), incomplete, setup);
  ep.ring.set_dequeue(at, cycle);
  if (!td) return incomplete ? std::nullopt : std::optional<uint32_t>(0);
  return td->length();
}

std::optional<uint32_t> XhciFunction::serve(uint8_t slot, uint8_t dci) {
  if (!can_run(slot, dci)) return std::nullopt;
  Endpoint& ep = slots_[slot].eps[dci];
  ep.in_run = true;
  auto started = start_next(slot, dci);
  ep.in_run = false;
  if (!ep.inflight) run_endpoint(slot, dci);  // done inline: say whether more is waiting
  return started;
}

void XhciFunction::run_endpoint(uint8_t slot, uint8_t dci) {
  if (!can_run(slot, dci)) return;
  Endpoint& ep = slots_[slot].eps[dci];
  if (ep.in_run) return;  // start_next is on the stack: it goes on by itself
  if (wake_) return wake_(slot, dci);
  ep.in_run = true;
  for (int n = 0; n < 64 && can_run(slot, dci); ++n)
    if (!start_next(slot, dci)) break;
  ep.in_run = false;
}

std::optional<uint32_t> XhciFunction::start_next(uint8_t slot, uint8_t dci) {
  Slot& sl = slots_[slot];
  Endpoint& ep = sl.eps[dci];
  const TdKind kind = kind_of(dci, ep.type);
  usb::Device* dev = device_of(sl);
  for (int n = 0; n < 64 && can_run(slot, dci); ++n) {
    bool incomplete = false;
    usb::SetupPacket setup;
    const uint64_t start = ep.ring.dequeue();
    const bool start_cycle = ep.ring.cycle();
    auto td = take_td(ep.ring, kind, incomplete, setup);
    if (!td) {
      if (incomplete) return std::nullopt;  // not finished by the driver: wait for the doorbell
      // A TD the controller cannot follow: TRB Error, and the endpoint stops in Error state.
      spdlog::debug("xhci: slot {} endpoint {}: TRB Error at {:#x}", slot, dci, ep.ring.dequeue());
      post(Trb::transfer_event(ep.ring.dequeue(), 0, Completion::kTrbError, slot, dci));
      ep.state = EndpointState::kError;
      set_endpoint_state(slot, dci, EndpointState::kError);
      return std::nullopt;
    }
    if (td->noop) {
      post_td_events(slot, dci, *td, usb::Status::kOk, 0, false);
      continue;
    }
    if (!dev) {
      post(Trb::transfer_event(td->last_trb, 0, Completion::kUsbTransactionError, slot, dci));
      continue;
    }
    const uint32_t length = td->length();
    std::unique_ptr<usb::Transfer> t;
    if (kind == TdKind::kControl) {
      // The data stage's length decides what moves; wLength says what the device may answer.
      setup.length = static_cast<uint16_t>(std::min<uint32_t>(setup.length, length));
      t = usb::Transfer::control(td->in ? 0x80 : 0x00, setup);
    } else {
      td->in = in_type(ep.type);
      usb::TransferType type = usb::TransferType::kBulk;
      if (kind == TdKind::kIsoch)
        type = usb::TransferType::kIsochronous;
      else if (ep.type == EndpointType::kInterruptIn || ep.type == EndpointType::kInterruptOut)
        type = usb::TransferType::kInterrupt;
      t = std::make_unique<usb::Transfer>(endpoint_address_of(dci), type, pool_.get(length));
      // An Isoch TD is one service interval's data: one packet (4.11.2.3).
      if (kind == TdKind::kIsoch) t->iso_packets.push_back({0, length, 0, usb::Status::kOk});
    }
    if (!td->in) {
      size_t at = 0;
      bool ok = true;
      for (const auto& p : td->pieces) {
        const size_t n2 = std::min<size_t>(p.length, t->length() - at);
        if (n2 && !mem_.read(p.address, t->buffer().subspan(at, n2))) ok = false;
        at += n2;
      }
      if (!ok) {
        spdlog::debug("xhci: slot {} endpoint {}: OUT buffer outside guest memory", slot, dci);
        post(Trb::transfer_event(td->pieces.front().trb, length, Completion::kDataBufferError, slot,
                                 dci));
        continue;
      }
    }
    ep.td = std::move(*td);
    ep.td_start = start;
    ep.td_cycle = start_cycle;
    ep.inflight = std::move(t);
    ep.inflight->set_completion(
        [this, slot, dci, alive = alive_, orphans = orphans_](usb::Transfer& x) {
          if (orphans->release(x)) return;  // abandoned: destroyed, nobody waits for it
          if (*alive) transfer_done(slot, dci, x);
        });
    usb::submit_or_perform(*dev, *ep.inflight);  // may complete inline
    return length;
  }
  return std::nullopt;
}

void XhciFunction::transfer_done(uint8_t slot, uint8_t dci, usb::Transfer& t) {
  Endpoint& ep = slots_[slot].eps[dci];
  if (ep.inflight.get() != &t) return;  // not ours (any more)
  const Td td = std::move(ep.td);
  usb::Status st = t.status();
  size_t actual = t.actual_length();
  const bool iso = t.type() == usb::TransferType::kIsochronous;
  if (iso && !t.iso_packets.empty()) {
    actual = std::min<size_t>(t.iso_packets[0].actual_length, t.length());
    if (st == usb::Status::kOk) st = t.iso_packets[0].status;
  }
  if (td.in && actual) {
    size_t at = 0;
    const auto data = t.buffer().first(actual);
    for (const auto& p : td.pieces) {
      const size_t n = std::min<size_t>(p.length, actual - at);
      if (n && !mem_.write(p.address, data.subspan(at, n))) break;
      at += n;
      if (at >= actual) break;
    }
  }
  if (t.type() != usb::TransferType::kControl) pool_.put(t.take_buffer());
  ep.inflight.reset();  // a completion may destroy its transfer
  // Isochronous endpoints never halt: a failed interval is reported and the ring goes on.
  post_td_events(slot, dci, td, st, actual, !iso);
  run_endpoint(slot, dci);  // the next TD unless halted (under a scheduler: its next turn)
}

void XhciFunction::post_td_events(uint8_t slot, uint8_t dci, const Td& td, usb::Status st,
                                  size_t actual, bool halts) {
  // The TRB where the data ended, and what it left (a short packet's residual).
  uint64_t short_trb = 0;
  uint32_t residual = 0;
  bool short_isp = false;
  {
    size_t left = actual;
    for (const auto& p : td.pieces) {
      if (left < p.length) {
        short_trb = p.trb;
        residual = static_cast<uint32_t>(p.length - left);
        short_isp = p.isp || p.ioc;
        break;
      }
      left -= p.length;
    }
  }
  const bool ok =
      st == usb::Status::kOk || st == usb::Status::kShortPacket || st == usb::Status::kCancelled;
  const uint64_t first = td.pieces.empty() ? td.last_trb : td.pieces.front().trb;
  if (!ok) {
    const Completion code =
        st == usb::Status::kStall ? Completion::kStallError : Completion::kUsbTransactionError;
    post(Trb::transfer_event(short_trb ? short_trb : (td.setup_trb ? td.last_trb : first),
                             short_trb ? residual : 0, code, slot, dci));
    if (halts) {
      slots_[slot].eps[dci].state = EndpointState::kHalted;
      set_endpoint_state(slot, dci, EndpointState::kHalted);
    }
    return;
  }
  // Event Data TRBs the data reached report their EDTLA (Success); those past a short packet
  // report what the TD moved (Short Packet), as 4.10.1.1 has the controller go on to them.
  auto post_marks = [&] {
    for (const auto& m : td.marks) {
      if (!m.ioc) continue;
      const bool reached = m.offset <= actual && !(short_trb && m.offset == actual && residual);
      post(Trb::transfer_event(m.data, reached ? m.offset : static_cast<uint32_t>(actual),
                               reached ? Completion::kSuccess : Completion::kShortPacket, slot, dci,
                               /*event_data=*/true));
    }
  };
  if (td.setup_trb) {
    // Control: a short data stage reports on its TRB (ISP); the Status stage then completes.
    if (short_trb && short_isp)
      post(Trb::transfer_event(short_trb, residual, Completion::kShortPacket, slot, dci));
    else if (!td.pieces.empty() && td.pieces.front().ioc)
      post(Trb::transfer_event(td.pieces.front().trb, 0, Completion::kSuccess, slot, dci));
    post_marks();
    if (td.status_ioc) post(Trb::transfer_event(td.status_trb, 0, Completion::kSuccess, slot, dci));
    return;
  }
  if (short_trb && short_isp) {
    // Normal / Isoch: one event, at the TRB where the data ended short (ISP), as QEMU's xHCI
    // reports.
    post(Trb::transfer_event(short_trb, residual, Completion::kShortPacket, slot, dci));
    post_marks();
    return;
  }
  post_marks();
  // Short without ISP: the controller goes on to the TD's last TRB and reports there what the
  // whole TD left undone.
  if (td.last_ioc)
    post(Trb::transfer_event(
        td.last_trb, short_trb ? td.length() - static_cast<uint32_t>(actual) : 0,
        short_trb ? Completion::kShortPacket : Completion::kSuccess, slot, dci));
}

void XhciFunction::set_endpoint_state(uint8_t slot, uint8_t dci, EndpointState state) {
  uint64_t out = 0;
  EndpointContext ctx;  // the slot context, then endpoint contexts by DCI
  if (!device_context_address(slot, out) || !mem_.read_obj(out + 32ull * dci, ctx)) return;
  ctx.set_state(state);
  (void)mem_.write_obj(out + 32ull * dci, ctx);
}

void XhciFunction::abandon(Endpoint& ep, usb::Device*) {
  // Whoever holds it — the device, or a sharing layer that parked it — is asked to give it back;
  // it is kept (beyond this function's life if need be) until it completes.
  OrphanStore::adopt(orphans_, std::move(ep.inflight));
}

void XhciFunction::abandon_slot(uint8_t slot) {
  Slot& sl = slots_[slot];
  for (auto& ep : sl.eps) abandon(ep, device_of(sl));
}

}  // namespace hc::xhci
