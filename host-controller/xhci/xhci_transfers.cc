// XhciFunction: transfer rings (xHCI 1.2 section 4.10): control TDs on EP0, Normal TDs on bulk and
// interrupt endpoints, into the port's usb::Device; Transfer Events back.
#include <spdlog/spdlog.h>

#include <cstring>

#include "host-controller/xhci/xhci_function.h"

namespace hc::xhci {

std::expected<XhciFunction::Td, Completion> XhciFunction::take_td(Ring& ring, bool control,
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
  if (control) {
    auto s = ring.pop(mem_);
    if (!s) {
      incomplete = s.error() == Ring::Stop::kEmpty;
      return give_back(Completion::kTrbError);
    }
    if (s->trb.type() != TrbType::kSetupStage || !s->trb.idt() || s->trb.transfer_length() != 8)
      return std::unexpected(Completion::kTrbError);  // consumed and reported (4.11.2.2)
    td.setup_trb = s->address;
    uint8_t raw[8];
    std::memcpy(raw, &s->trb.parameter, 8);
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
      if (t.type() == TrbType::kEventData) continue;
      if (data) {
        data_seen = true;
        td.in = t.dir_in();
      }
      add_piece(*f);
      if (total > 0xffff) return give_back(Completion::kTrbError);  // wLength is 16 bits
    }
    return give_back(Completion::kTrbError);
  }
  for (size_t n = 0; n < Ring::kMaxTdTrbs; ++n) {
    auto f = ring.pop(mem_);
    if (!f) {
      incomplete = f.error() == Ring::Stop::kEmpty;
      return give_back(Completion::kTrbError);
    }
    const Trb& t = f->trb;
    if (t.type() == TrbType::kNormal)
      add_piece(*f);
    else if (t.type() != TrbType::kEventData && t.type() != TrbType::kNoOp)
      return n == 0 ? std::unexpected(Completion::kTrbError) : give_back(Completion::kTrbError);
    td.last_trb = f->address;
    td.last_ioc = t.ioc();
    if (!t.chain()) return td;
    if (total > (64u << 20)) return give_back(Completion::kTrbError);  // 64 MiB per TD at most
  }
  return give_back(Completion::kTrbError);
}

void XhciFunction::run_endpoint(uint8_t slot, uint8_t dci) {
  Slot& sl = slots_[slot];
  Endpoint& ep = sl.eps[dci];
  if (!sl.enabled || !sl.port || ep.inflight || ep.in_run || ep.state != EndpointState::kRunning)
    return;
  const bool control = dci == 1;
  if (!control && ep.type != EndpointType::kBulkIn && ep.type != EndpointType::kBulkOut &&
      ep.type != EndpointType::kInterruptIn && ep.type != EndpointType::kInterruptOut)
    return;  // isochronous rings: a later slice
  usb::Device* dev = device_of(sl);
  ep.in_run = true;
  struct Guard {
    Endpoint& e;
    ~Guard() { e.in_run = false; }
  } guard{ep};
  for (int n = 0; n < 64 && !ep.inflight && ep.state == EndpointState::kRunning; ++n) {
    bool incomplete = false;
    usb::SetupPacket setup;
    const uint64_t start = ep.ring.dequeue();
    const bool start_cycle = ep.ring.cycle();
    auto td = take_td(ep.ring, control, incomplete, setup);
    if (!td) {
      if (incomplete) return;  // the driver has not finished writing it: wait for the doorbell
      // A TD the controller cannot follow: TRB Error, and the endpoint stops in Error state.
      post(Trb::transfer_event(ep.ring.dequeue(), 0, Completion::kTrbError, slot, dci));
      ep.state = EndpointState::kError;
      set_endpoint_state(slot, dci, EndpointState::kError);
      return;
    }
    if (!dev) {
      post(Trb::transfer_event(td->last_trb, 0, Completion::kUsbTransactionError, slot, dci));
      continue;
    }
    uint32_t length = 0;
    for (const auto& p : td->pieces) length += p.length;
    std::unique_ptr<usb::Transfer> t;
    bool in = td->in;
    if (control) {
      // The data stage's length decides what moves; wLength says what the device may answer.
      setup.length = static_cast<uint16_t>(std::min<uint32_t>(setup.length, length));
      t = usb::Transfer::control(in ? 0x80 : 0x00, setup);
    } else {
      in = ep.type == EndpointType::kBulkIn || ep.type == EndpointType::kInterruptIn;
      td->in = in;
      const bool bulk = ep.type == EndpointType::kBulkIn || ep.type == EndpointType::kBulkOut;
      t = std::make_unique<usb::Transfer>(
          endpoint_address_of(dci), bulk ? usb::TransferType::kBulk : usb::TransferType::kInterrupt,
          length);
    }
    if (!in) {
      size_t at = 0;
      bool ok = true;
      for (const auto& p : td->pieces) {
        const size_t n2 = std::min<size_t>(p.length, t->length() - at);
        if (n2 && !mem_.read(p.address, t->buffer().subspan(at, n2))) ok = false;
        at += n2;
      }
      if (!ok) {
        post(Trb::transfer_event(td->pieces.front().trb, length, Completion::kDataBufferError, slot,
                                 dci));
        continue;
      }
    }
    ep.td = std::move(*td);
    ep.td_start = start;
    ep.td_cycle = start_cycle;
    ep.inflight = std::move(t);
    ep.inflight->set_completion([this, slot, dci, alive = alive_](usb::Transfer& x) {
      if (*alive) transfer_done(slot, dci, x);
    });
    dev->submit(*ep.inflight);
  }
}

void XhciFunction::transfer_done(uint8_t slot, uint8_t dci, usb::Transfer& t) {
  Endpoint& ep = slots_[slot].eps[dci];
  if (ep.inflight.get() != &t) {  // abandoned: nobody waits for it any more
    std::erase_if(orphans_, [&](const auto& p) { return p.get() == &t; });
    return;
  }
  const Td td = std::move(ep.td);
  const usb::Status st = t.status();
  const size_t actual = t.actual_length();
  if (td.in && actual) {
    size_t at = 0;
    for (const auto& p : td.pieces) {
      const size_t n = std::min<size_t>(p.length, actual - at);
      if (n && !mem_.write(p.address, t.data().subspan(at, n))) break;
      at += n;
      if (at >= actual) break;
    }
  }
  ep.inflight.reset();  // a completion may destroy its transfer
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
  const uint64_t first = td.pieces.empty() ? td.last_trb : td.pieces.front().trb;
  if (st == usb::Status::kStall || (st != usb::Status::kOk && st != usb::Status::kShortPacket &&
                                    st != usb::Status::kCancelled)) {
    const Completion code =
        st == usb::Status::kStall ? Completion::kStallError : Completion::kUsbTransactionError;
    post(Trb::transfer_event(short_trb ? short_trb : (td.setup_trb ? td.last_trb : first),
                             short_trb ? residual : 0, code, slot, dci));
    ep.state = EndpointState::kHalted;
    set_endpoint_state(slot, dci, EndpointState::kHalted);
    return;
  }
  if (td.setup_trb) {
    // Control: a short data stage reports on its TRB (ISP); the Status stage then completes.
    if (short_trb && short_isp)
      post(Trb::transfer_event(short_trb, residual, Completion::kShortPacket, slot, dci));
    else if (!td.pieces.empty() && td.pieces.front().ioc)
      post(Trb::transfer_event(td.pieces.front().trb, 0, Completion::kSuccess, slot, dci));
    if (td.status_ioc) post(Trb::transfer_event(td.status_trb, 0, Completion::kSuccess, slot, dci));
  } else if (short_trb && short_isp) {
    // Normal: one event, at the TRB where the data ended short (ISP), as QEMU's xHCI reports.
    post(Trb::transfer_event(short_trb, residual, Completion::kShortPacket, slot, dci));
  } else if (td.last_ioc) {
    post(Trb::transfer_event(td.last_trb, 0, Completion::kSuccess, slot, dci));
  }
  if (!ep.in_run) run_endpoint(slot, dci);  // an asynchronous completion: the next TD
}

void XhciFunction::set_endpoint_state(uint8_t slot, uint8_t dci, EndpointState state) {
  uint64_t out = 0;
  EndpointContext ctx;  // the slot context, then endpoint contexts by DCI
  if (!device_context_address(slot, out) || !mem_.read_obj(out + 32ull * dci, ctx)) return;
  ctx.set_state(state);
  (void)mem_.write_obj(out + 32ull * dci, ctx);
}

void XhciFunction::abandon(Endpoint& ep, usb::Device* device) {
  if (!ep.inflight) return;
  usb::Transfer& t = *ep.inflight;
  orphans_.push_back(std::move(ep.inflight));
  if (device) device->cancel(t);
}

void XhciFunction::abandon_slot(uint8_t slot) {
  Slot& sl = slots_[slot];
  for (auto& ep : sl.eps) abandon(ep, device_of(sl));
}

}  // namespace hc::xhci
