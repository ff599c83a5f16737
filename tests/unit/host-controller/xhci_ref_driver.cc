#include "tests/unit/host-controller/xhci_ref_driver.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "host-controller/xhci/regs.h"

namespace hc::xhci::testing {

using namespace reg;

namespace {

bool is_error(Completion c) {
  return c != Completion::kSuccess && c != Completion::kShortPacket;
}

uint32_t floor_log2(uint32_t v) {
  uint32_t r = 0;
  while (v > 1) v >>= 1, ++r;
  return r;
}

}  // namespace

XhciRefDriver::XhciRefDriver(XhciTarget& target, Options options)
    : target_(target), options_(options), next_free_(options.ram_base) {}

uint64_t XhciRefDriver::alloc(uint64_t bytes, uint64_t align) {
  next_free_ = (next_free_ + align - 1) & ~(align - 1);
  const uint64_t at = next_free_;
  next_free_ += bytes;
  if (next_free_ > options_.ram_base + options_.ram_size)
    ADD_FAILURE() << "reference driver out of guest memory";
  // Fresh memory is zero (cycle bits 0) whatever was there before.
  if (!options_.zero_allocations) return at;
  std::vector<uint8_t> zero(std::min<uint64_t>(bytes, 64 * 1024), 0);
  for (uint64_t off = 0; off < bytes; off += zero.size()) {
    const size_t n = std::min<uint64_t>(zero.size(), bytes - off);
    EXPECT_TRUE(mem().write(at + off, std::span<const uint8_t>(zero.data(), n)));
  }
  return at;
}

DeviceContext XhciRefDriver::output(uint8_t slot) {
  DeviceContext out;
  auto it = output_contexts_.find(slot);
  if (it != output_contexts_.end()) {
    EXPECT_TRUE(mem().read_obj(it->second, out));
  }
  return out;
}

uint32_t XhciRefDriver::op(uint32_t reg) {
  return target_.read32(op_base_ + reg);
}
uint32_t XhciRefDriver::portsc(uint32_t port) {
  return target_.read32(op_base_ + kPortBase + kPortStride * (port - 1));
}

bool XhciRefDriver::start() {
  op_base_ = target_.read32(kCapLength) & 0xff;
  const uint32_t hcs1 = target_.read32(kHcsParams1);
  max_slots_ = hcs1 & 0xff;
  max_ports_ = hcs1 >> 24;
  dboff_ = target_.read32(kDbOff) & ~3u;
  rt_base_ = target_.read32(kRtsOff) & ~0x1fu;
  target_.write32(op_base_ + kUsbCmd, kCmdHcReset);
  if (!wait_for([&] { return !(op(kUsbCmd) & kCmdHcReset) && !(op(kUsbSts) & kStsCnr); },
                "controller reset"))
    return false;
  target_.write32(op_base_ + kConfig, max_slots_);
  dcbaa_ = alloc(8ull * (max_slots_ + 1));
  // Scratchpad buffers, if the controller wants any (HCSPARAMS2 31:27 | 25:21).
  const uint32_t hcs2 = target_.read32(kHcsParams2);
  const uint32_t scratch = ((hcs2 >> 27) & 0x1f) | (((hcs2 >> 21) & 0x1f) << 5);
  if (scratch) {
    const uint64_t array = alloc(8ull * scratch);
    for (uint32_t i = 0; i < scratch; ++i)
      EXPECT_TRUE(mem().write_obj(array + 8 * i, alloc(4096, 4096)));
    EXPECT_TRUE(mem().write_obj(dcbaa_, array));
  }
  target_.write32(op_base_ + kDcbaap, static_cast<uint32_t>(dcbaa_));
  target_.write32(op_base_ + kDcbaap + 4, static_cast<uint32_t>(dcbaa_ >> 32));
  events_ = alloc(16ull * options_.event_trbs);
  erst_ = alloc(sizeof(ErstEntry));
  EXPECT_TRUE(mem().write_obj(erst_, ErstEntry{events_, options_.event_trbs, 0}));
  const uint32_t ir0 = rt_base_ + kInterrupterBase;
  target_.write32(ir0 + kErstSz, 1);
  target_.write32(ir0 + kErdp, static_cast<uint32_t>(events_));
  target_.write32(ir0 + kErdp + 4, static_cast<uint32_t>(events_ >> 32));
  target_.write32(ir0 + kErstBa, static_cast<uint32_t>(erst_));
  target_.write32(ir0 + kErstBa + 4, static_cast<uint32_t>(erst_ >> 32));
  target_.write32(ir0 + kImod, 0);
  target_.write32(ir0 + kIman, kImanIe);
  commands_ = new_ring(options_.command_trbs, false);
  target_.write32(op_base_ + kCrcr, static_cast<uint32_t>(commands_.base) | kCrcrRcs);
  target_.write32(op_base_ + kCrcr + 4, static_cast<uint32_t>(commands_.base >> 32));
  target_.write32(op_base_ + kUsbCmd, kCmdRun | kCmdInte);
  return wait_for([&] { return !(op(kUsbSts) & kStsHalted); }, "controller running");
}

XhciRefDriver::TransferRing XhciRefDriver::new_ring(uint32_t trbs, bool with_buffers) {
  TransferRing r;
  r.size = trbs;
  r.base = alloc(16ull * trbs);
  if (with_buffers)
    r.buffers = alloc(uint64_t{options_.max_td_bytes} * options_.buffers_per_endpoint, 4096);
  return r;
}

uint64_t XhciRefDriver::take_buffer(TransferRing& ring) {
  const uint64_t b = ring.buffers + uint64_t{options_.max_td_bytes} * ring.next_buffer;
  ring.next_buffer = (ring.next_buffer + 1) % options_.buffers_per_endpoint;
  return b;
}

bool XhciRefDriver::room(TransferRing& ring, uint32_t trbs) {
  // One slot per lap goes to the Link TRB; keep one free so a full ring is not an empty one.
  if (ring.in_use + trbs + 2 <= ring.size) return true;
  ADD_FAILURE() << "reference driver: transfer ring full (" << ring.in_use << " of " << ring.size
                << " TRBs in use, " << trbs << " more asked)";
  return false;
}

uint64_t XhciRefDriver::enqueue(TransferRing& ring, Trb t, bool chain_link) {
  if (ring.index == ring.size - 1) {
    Trb link = make(TrbType::kLink, 0, ring.base, (1u << 1) | (chain_link ? 1u << 4 : 0u));
    link.set_cycle(ring.cycle);
    EXPECT_TRUE(mem().write_obj(ring.base + 16ull * ring.index, link));
    ring.index = 0;
    ring.cycle = !ring.cycle;
  }
  t.set_cycle(ring.cycle);
  const uint64_t at = ring.base + 16ull * ring.index++;
  EXPECT_TRUE(mem().write_obj(at, t));
  return at;
}

Trb XhciRefDriver::make(TrbType type, uint8_t slot, uint64_t parameter, uint32_t flags) {
  Trb t;
  t.parameter = parameter;
  t.control = (uint32_t{slot} << 24) | flags;
  t.set_type(type);
  return t;
}

Trb XhciRefDriver::command(Trb cmd) {
  const uint64_t at = enqueue(commands_, cmd);
  command_waits_.push_back({at, std::nullopt});
  target_.write32(dboff_, 0);
  auto& entry = command_waits_.back();
  Trb result;
  if (!wait_for(
          [&] { return command_waits_.front().second.has_value() || entry.second.has_value(); },
          "command completion")) {
    command_waits_.clear();
    return make(TrbType::kCommandCompletionEvent);  // completion code 0: "none"
  }
  // Completions come in command order; take ours.
  while (!command_waits_.empty() && command_waits_.front().second) {
    const bool ours = command_waits_.front().first == at;
    if (ours) result = *command_waits_.front().second;
    command_waits_.pop_front();
    if (ours) return result;
  }
  return result;
}

std::optional<uint8_t> XhciRefDriver::enable_slot() {
  const Trb ev = command(make(TrbType::kEnableSlot));
  if (ev.completion_code() != Completion::kSuccess) return std::nullopt;
  const uint8_t slot = ev.slot_id();
  output_contexts_[slot] = alloc(sizeof(DeviceContext), 64);
  EXPECT_TRUE(mem().write_obj(dcbaa_ + 8ull * slot, output_contexts_[slot]));
  return slot;
}

Completion XhciRefDriver::address_device(uint8_t slot, uint32_t port, uint32_t speed, uint32_t mps0,
                                         bool bsr) {
  if (!input_) input_ = alloc(sizeof(InputContext), 64);
  EndpointState& ep0 = endpoints_[(uint16_t{slot} << 8) | 1];
  if (!ep0.ring.base) ep0.ring = new_ring(options_.transfer_trbs, true);
  InputContext in;
  in.control.dw[1] = 3;  // A0 (slot), A1 (EP0)
  in.slot.dw[0] = (1u << 27) | (speed << 20);
  in.slot.dw[1] = port << 16;
  in.endpoints[0].dw[1] =
      (mps0 << 16) | (static_cast<uint32_t>(EndpointType::kControl) << 3) | (3u << 1);
  in.endpoints[0].dw[4] = 8;  // average TRB length
  in.endpoints[0].set_dequeue(ep0.ring.base + 16ull * ep0.ring.index, ep0.ring.cycle);
  EXPECT_TRUE(mem().write_obj(input_, in));
  return command(make(TrbType::kAddressDevice, slot, input_, bsr ? 1u << 9 : 0u)).completion_code();
}

Completion XhciRefDriver::evaluate_ep0(uint8_t slot, uint32_t mps0) {
  InputContext in;
  in.control.dw[1] = 2;
  in.endpoints[0].dw[1] =
      (mps0 << 16) | (static_cast<uint32_t>(EndpointType::kControl) << 3) | (3u << 1);
  EXPECT_TRUE(mem().write_obj(input_, in));
  return command(make(TrbType::kEvaluateContext, slot, input_)).completion_code();
}

Completion XhciRefDriver::configure(uint8_t slot, const std::vector<usb::EndpointDescriptor>& add,
                                    const std::vector<uint8_t>& drop) {
  if (!input_) input_ = alloc(sizeof(InputContext), 64);
  InputContext in;
  DeviceContext out;
  EXPECT_TRUE(mem().read_obj(output_contexts_[slot], out));
  in.slot = out.slot;
  in.slot.dw[3] = 0;
  in.control.dw[1] = 1;  // the slot context (Context Entries)
  uint32_t last = 1;
  for (uint8_t dci = 2; dci <= 31; ++dci)
    if (out.endpoints[dci - 1].state() != xhci::EndpointState::kDisabled) last = dci;
  for (uint8_t d : drop) in.control.dw[0] |= 1u << d;
  const uint32_t speed = out.slot.speed();
  for (const auto& e : add) {
    const uint8_t dci = dci_of(e.address);
    in.control.dw[1] |= 1u << dci;
    last = std::max<uint32_t>(last, dci);
    const bool dir_in = e.address & 0x80;
    const uint8_t kind = e.attributes & 3;
    EndpointType type = EndpointType::kBulkOut;
    if (kind == 1) type = dir_in ? EndpointType::kIsochIn : EndpointType::kIsochOut;
    if (kind == 2) type = dir_in ? EndpointType::kBulkIn : EndpointType::kBulkOut;
    if (kind == 3) type = dir_in ? EndpointType::kInterruptIn : EndpointType::kInterruptOut;
    const uint32_t mps = e.max_packet_size & 0x7ff;
    uint32_t burst = 0, mult = 0, interval = 0;
    if (speed >= kSpeedSuper && e.ss_companion) {
      burst = e.ss_companion->max_burst;
      if (kind == 1) mult = e.ss_companion->attributes & 3;
    } else if (speed == kSpeedHigh && (kind == 1 || kind == 3)) {
      burst = (e.max_packet_size >> 11) & 3;
    }
    if (kind == 1 || kind == 3) {
      if (speed == kSpeedHigh || speed >= kSpeedSuper)
        interval = std::clamp<uint32_t>(e.interval, 1, 16) - 1;
      else if (kind == 1)
        interval = std::clamp<uint32_t>(e.interval, 1, 16) + 2;  // FS iso: 2^(b-1) frames
      else
        interval = floor_log2(std::max<uint32_t>(e.interval, 1) * 8);
    }
    const uint32_t esit = (kind == 1 || kind == 3) ? mps * (burst + 1) * (mult + 1) : 0;
    EndpointState& st = endpoints_[(uint16_t{slot} << 8) | dci];
    st = EndpointState{};
    st.ring = new_ring(options_.transfer_trbs, true);
    EndpointContext& c = in.endpoints[dci - 1];
    c.dw[0] = (mult << 8) | (interval << 16) | ((esit >> 16) << 24);
    c.dw[1] = (mps << 16) | (burst << 8) | (static_cast<uint32_t>(type) << 3) |
              ((kind == 1 ? 0u : 3u) << 1);
    c.set_dequeue(st.ring.base, true);
    c.dw[4] = ((esit & 0xffff) << 16) | (kind == 2 ? 3072u : 1024u);
  }
  in.slot.set_context_entries(last);
  EXPECT_TRUE(mem().write_obj(input_, in));
  return command(make(TrbType::kConfigureEndpoint, slot, input_)).completion_code();
}

Completion XhciRefDriver::stop_endpoint(uint8_t slot, uint8_t dci) {
  return command(make(TrbType::kStopEndpoint, slot, 0, uint32_t{dci} << 16)).completion_code();
}

Completion XhciRefDriver::reset_endpoint(uint8_t slot, uint8_t dci) {
  return command(make(TrbType::kResetEndpoint, slot, 0, uint32_t{dci} << 16)).completion_code();
}

Completion XhciRefDriver::skip_queued(uint8_t slot, uint8_t dci) {
  EndpointState* ep = endpoint(slot, dci);
  if (!ep) return Completion::kInvalid;
  TransferRing& r = ep->ring;
  if (r.index == r.size - 1) {  // the next TRB goes after the Link: point past it
    Trb link = make(TrbType::kLink, 0, r.base, 1u << 1);
    link.set_cycle(r.cycle);
    EXPECT_TRUE(mem().write_obj(r.base + 16ull * r.index, link));
    r.index = 0;
    r.cycle = !r.cycle;
  }
  const uint64_t deq = (r.base + 16ull * r.index) | (r.cycle ? 1u : 0u);
  const Completion c =
      command(make(TrbType::kSetTrDequeue, slot, deq, uint32_t{dci} << 16)).completion_code();
  if (c == Completion::kSuccess) {
    for (auto& td : ep->pending) td->done = true;  // given back, never run (code kInvalid)
    ep->pending.clear();
    ep->ring.in_use = 0;
  }
  return c;
}

Completion XhciRefDriver::recover_halt(uint8_t slot, uint8_t dci) {
  const Completion r = reset_endpoint(slot, dci);
  if (r != Completion::kSuccess) return r;
  EndpointState* ep = endpoint(slot, dci);
  if (!ep) return Completion::kInvalid;
  if (ep->pending.empty()) return skip_queued(slot, dci);
  const Td& next = ep->pending.front();
  const uint64_t deq = next->first_trb | (next->first_cycle ? 1u : 0u);
  const Completion c =
      command(make(TrbType::kSetTrDequeue, slot, deq, uint32_t{dci} << 16)).completion_code();
  if (c == Completion::kSuccess) doorbell(slot, dci);
  return c;
}

XhciRefDriver::EndpointState* XhciRefDriver::endpoint(uint8_t slot, uint8_t dci) {
  auto it = endpoints_.find((uint16_t{slot} << 8) | dci);
  return it == endpoints_.end() ? nullptr : &it->second;
}

void XhciRefDriver::doorbell(uint8_t slot, uint8_t dci) {
  target_.write32(db_offset(slot), dci);
}

Td XhciRefDriver::control(uint8_t slot, const usb::SetupPacket& setup, std::span<const uint8_t> out,
                          bool ring) {
  EndpointState* ep = endpoint(slot, 1);
  auto td = std::make_shared<TdResult>();
  td->slot = slot;
  td->dci = 1;
  td->control = true;
  td->in = setup.direction() == usb::Direction::kIn;
  td->length = std::min<uint32_t>(setup.length, options_.max_td_bytes);
  if (!ep) {
    ADD_FAILURE() << "control on slot " << int{slot} << " without EP0";
    td->done = true;
    return td;
  }
  if (!room(ep->ring, 3)) {
    td->done = true;
    return td;
  }
  td->buffer = take_buffer(ep->ring);
  if (!td->in && !out.empty()) {
    EXPECT_TRUE(mem().write(td->buffer, out.first(std::min<size_t>(out.size(), td->length))));
  }
  Trb s;
  const auto b = setup.to_bytes();
  std::memcpy(&s.parameter, b.data(), 8);
  s.status = 8;
  s.control = (1u << 6) | ((td->length ? (td->in ? 3u : 2u) : 0u) << 16);
  s.set_type(TrbType::kSetupStage);
  td->first_trb = enqueue(ep->ring, s, true);
  td->first_cycle = ep->ring.cycle;
  td->trbs.push_back(td->first_trb);
  td->trb_offsets.push_back(0);
  if (td->length) {
    Trb d;
    d.parameter = td->buffer;
    d.status = td->length;
    d.control = (td->in ? 1u << 16 : 0u) | (1u << 2);  // DIR, ISP
    d.set_type(TrbType::kDataStage);
    td->data_trb = enqueue(ep->ring, d, true);
    td->trbs.push_back(td->data_trb);
    td->trb_offsets.push_back(0);
  }
  Trb st;
  st.control = (1u << 5) | ((td->in && td->length) ? 0u : 1u << 16);  // IOC, DIR
  st.set_type(TrbType::kStatusStage);
  td->last_trb = enqueue(ep->ring, st, true);
  td->trbs.push_back(td->last_trb);
  td->trb_offsets.push_back(td->length);
  ep->ring.in_use += static_cast<uint32_t>(td->trbs.size());
  ep->pending.push_back(td);
  if (ring) doorbell(slot, 1);
  return td;
}

Td XhciRefDriver::queue_data_td(uint8_t slot, uint8_t dci, TrbType first, uint32_t length,
                                std::span<const uint8_t> out, bool ring, uint32_t trb_bytes,
                                bool in) {
  EndpointState* ep = endpoint(slot, dci);
  auto td = std::make_shared<TdResult>();
  td->slot = slot;
  td->dci = dci;
  td->in = in;
  td->length = std::min(length, options_.max_td_bytes);
  if (!ep) {
    ADD_FAILURE() << "TD on slot " << int{slot} << " DCI " << int{dci} << ", not configured";
    td->done = true;
    return td;
  }
  trb_bytes = std::max<uint32_t>(trb_bytes, 1);
  if (!room(ep->ring, std::max<uint32_t>(1, (td->length + trb_bytes - 1) / trb_bytes))) {
    td->done = true;
    return td;
  }
  td->buffer = take_buffer(ep->ring);
  if (!in && !out.empty()) {
    EXPECT_TRUE(mem().write(td->buffer, out.first(std::min<size_t>(out.size(), td->length))));
  }
  uint32_t off = 0;
  do {
    const uint32_t n = std::min(trb_bytes, td->length - off);
    const bool last = off + n >= td->length;
    Trb t;
    t.parameter = td->buffer + off;
    t.status = n;
    t.control = (1u << 2) | (last ? 1u << 5 : 1u << 4);  // ISP; IOC on the last, else chain
    if (first == TrbType::kIsoch && off == 0) t.control |= 1u << 31;  // SIA
    t.set_type(off == 0 ? first : TrbType::kNormal);
    const uint64_t at = enqueue(ep->ring, t, !last);
    if (off == 0) td->first_trb = at, td->first_cycle = ep->ring.cycle;
    td->trbs.push_back(at);
    td->trb_offsets.push_back(off);
    if (last) td->last_trb = at;
    off += n;
  } while (off < td->length);
  ep->ring.in_use += static_cast<uint32_t>(td->trbs.size());
  ep->pending.push_back(td);
  if (ring) doorbell(slot, dci);
  return td;
}

Td XhciRefDriver::normal(uint8_t slot, uint8_t dci, uint32_t length, std::span<const uint8_t> out,
                         bool ring, uint32_t trb_bytes) {
  return queue_data_td(slot, dci, TrbType::kNormal, length, out, ring, trb_bytes, dci & 1);
}

Td XhciRefDriver::isoch(uint8_t slot, uint8_t dci, uint32_t length, std::span<const uint8_t> out,
                        bool ring) {
  return queue_data_td(slot, dci, TrbType::kIsoch, length, out, ring, length ? length : 1, dci & 1);
}

bool XhciRefDriver::poll_events() {
  bool any = false;
  for (uint32_t n = 0; n < options_.event_trbs; ++n) {
    Trb t;
    if (!mem().read_obj(events_ + 16ull * ev_index_, t) || t.cycle() != ev_cycle_) break;
    any = true;
    ++events_seen_;
    if (++ev_index_ == options_.event_trbs) ev_index_ = 0, ev_cycle_ = !ev_cycle_;
    dispatch(t);
  }
  if (any) {
    const uint32_t ir0 = rt_base_ + kInterrupterBase;
    const uint64_t erdp = (events_ + 16ull * ev_index_) | kErdpEhb;
    target_.write32(ir0 + kIman, kImanIe | kImanIp);  // acknowledge, as the IRQ handler does
    target_.write32(op_base_ + kUsbSts, kStsEint);
    target_.write32(ir0 + kErdp, static_cast<uint32_t>(erdp));
    target_.write32(ir0 + kErdp + 4, static_cast<uint32_t>(erdp >> 32));
  }
  return any;
}

void XhciRefDriver::dispatch(const Trb& ev) {
  if (ev.type() == TrbType::kCommandCompletionEvent) {
    for (auto& w : command_waits_)
      if (w.first == ev.parameter && !w.second) {
        w.second = ev;
        return;
      }
    other_.push_back(ev);
    return;
  }
  if (ev.type() != TrbType::kTransferEvent) {
    other_.push_back(ev);
    return;
  }
  const uint8_t slot = ev.slot_id(), dci = ev.endpoint_id();
  EndpointState* ep = endpoint(slot, dci);
  const bool event_data = ev.control & (1u << 2);
  if (!ep) {
    other_.push_back(ev);
    return;
  }
  // The TD whose TRB the event names (Event Data events name no TRB: the oldest pending TD).
  Td td;
  size_t trb_index = 0;
  auto find_in = [&](std::deque<Td>& q) {
    for (auto& x : q)
      for (size_t i = 0; i < x->trbs.size(); ++i)
        if (x->trbs[i] == ev.parameter) {
          td = x;
          trb_index = i;
          return;
        }
  };
  if (event_data && !ep->pending.empty()) {
    td = ep->pending.front();
  } else {
    find_in(ep->pending);
    if (!td) find_in(ep->recent);
  }
  if (!td) {
    other_.push_back(ev);
    return;
  }
  td->events.push_back(ev);
  if (td->done || event_data) return;
  const Completion c = ev.completion_code();
  const uint32_t residual = ev.event_residual();
  const uint64_t trb = ev.parameter;
  auto finish = [&](Completion code, uint32_t actual) {
    td->done = true;
    td->code = code;
    td->actual = std::min(actual, td->length);
    if (td->in && td->actual && (options_.copy_in_data || td->control)) {
      td->data.resize(td->actual);
      EXPECT_TRUE(mem().read(td->buffer, td->data));
    }
  };
  const uint32_t trb_start = td->trb_offsets[trb_index];
  const uint32_t trb_len =
      (trb_index + 1 < td->trbs.size() ? td->trb_offsets[trb_index + 1] : td->length) - trb_start;
  if (td->control) {
    if (trb == td->data_trb && c == Completion::kShortPacket) {
      td->code = Completion::kShortPacket;
      td->actual = td->length - std::min(residual, td->length);
    } else if (trb == td->last_trb && !is_error(c)) {
      finish(td->code == Completion::kShortPacket ? Completion::kShortPacket : c,
             td->code == Completion::kShortPacket ? td->actual : td->length);
    } else if (is_error(c)) {
      finish(c, trb == td->data_trb ? td->length - std::min(residual, td->length) : 0);
    }
  } else if (c == Completion::kShortPacket || is_error(c)) {
    // Where the data stopped: this TRB's start plus what it moved.
    finish(c, trb_start + trb_len - std::min(residual, trb_len));
  } else if (trb == td->last_trb) {
    finish(c, td->length);
  }
  if (td->done) {
    // Done TDs leave from the front; keep the last few for late events.
    while (!ep->pending.empty() && ep->pending.front()->done) {
      ep->ring.in_use -= static_cast<uint32_t>(ep->pending.front()->trbs.size());
      ep->recent.push_back(ep->pending.front());
      ep->pending.pop_front();
      if (ep->recent.size() > 16) ep->recent.pop_front();
    }
  }
}

bool XhciRefDriver::wait_for(const std::function<bool()>& done, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  for (;;) {
    poll_events();
    if (done()) return true;
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "reference driver: timed out waiting for " << what;
      return false;
    }
    target_.idle();
  }
}

bool XhciRefDriver::wait(const Td& td) {
  return wait_for([&] { return td->done; }, "a transfer");
}

bool XhciRefDriver::wait_all(const std::vector<Td>& tds) {
  return wait_for(
      [&] { return std::all_of(tds.begin(), tds.end(), [](const Td& t) { return t->done; }); },
      "transfers");
}

std::pair<Completion, std::vector<uint8_t>> XhciRefDriver::control_sync(
    uint8_t slot, const usb::SetupPacket& setup, std::span<const uint8_t> out) {
  Td td = control(slot, setup, out);
  if (!wait(td)) return {Completion::kInvalid, {}};
  return {td->code, td->data};
}

std::optional<uint32_t> XhciRefDriver::reset_port(uint32_t port) {
  const uint32_t reg = op_base_ + kPortBase + kPortStride * (port - 1);
  if (!wait_for([&] { return (target_.read32(reg) & kPortCcs) != 0; }, "a connection"))
    return std::nullopt;
  // Acknowledge the connect change; USB 2 ports need a reset to be enabled, USB 3 ports
  // enable themselves (a warm reset is not needed here).
  target_.write32(reg, kPortPp | kPortCsc);
  if (!(target_.read32(reg) & kPortPed)) {
    target_.write32(reg, kPortPp | kPortPr);
    if (!wait_for(
            [&] { return (target_.read32(reg) & (kPortPrc | kPortPed)) == (kPortPrc | kPortPed); },
            "a port reset"))
      return std::nullopt;
    target_.write32(reg, kPortPp | kPortPrc);
  }
  return (target_.read32(reg) & kPortSpeedMask) >> kPortSpeedShift;
}

std::optional<XhciRefDriver::Enumerated> XhciRefDriver::enumerate(uint32_t port) {
  auto speed = reset_port(port);
  if (!speed) return std::nullopt;
  auto slot = enable_slot();
  if (!slot) {
    ADD_FAILURE() << "Enable Slot failed";
    return std::nullopt;
  }
  const uint32_t mps0 = *speed >= kSpeedSuper ? 512 : (*speed == kSpeedHigh ? 64 : 8);
  if (auto c = address_device(*slot, port, *speed, mps0); c != Completion::kSuccess) {
    ADD_FAILURE() << "Address Device: completion " << static_cast<int>(c);
    return std::nullopt;
  }
  auto [c8, head] = control_sync(*slot, {0x80, 6, 0x0100, 0, 8});
  if (c8 != Completion::kSuccess || head.size() < 8) {
    ADD_FAILURE() << "GET_DESCRIPTOR(device, 8): completion " << static_cast<int>(c8);
    return std::nullopt;
  }
  const uint32_t real_mps0 = *speed >= kSpeedSuper ? (1u << head[7]) : head[7];
  if (real_mps0 != mps0) {
    EXPECT_EQ(evaluate_ep0(*slot, real_mps0), Completion::kSuccess);
  }
  auto [c18, dev] = control_sync(*slot, {0x80, 6, 0x0100, 0, 18});
  auto device = usb::DeviceDescriptor::parse(dev);
  if (c18 != Completion::kSuccess || !device) {
    ADD_FAILURE() << "GET_DESCRIPTOR(device): completion " << static_cast<int>(c18);
    return std::nullopt;
  }
  auto [c9, head9] = control_sync(*slot, {0x80, 6, 0x0200, 0, 9});
  if (is_error(c9) || head9.size() < 4) {
    ADD_FAILURE() << "GET_DESCRIPTOR(configuration, 9): completion " << static_cast<int>(c9);
    return std::nullopt;
  }
  const uint16_t total = static_cast<uint16_t>(head9[2] | (head9[3] << 8));
  auto [cc, config] = control_sync(*slot, {0x80, 6, 0x0200, 0, total});
  if (is_error(cc) || config.size() != total) {
    ADD_FAILURE() << "GET_DESCRIPTOR(configuration): completion " << static_cast<int>(cc);
    return std::nullopt;
  }
  return Enumerated{*slot, *speed, *device, std::move(config)};
}

std::vector<usb::EndpointDescriptor> XhciRefDriver::endpoints_of(std::span<const uint8_t> config,
                                                                 uint8_t interface, uint8_t alt) {
  std::vector<usb::EndpointDescriptor> out;
  auto parsed = usb::ConfigurationDescriptor::parse(config);
  if (!parsed) return out;
  for (const auto& i : parsed->interfaces)
    if (i.number == interface && i.alternate == alt) return i.endpoints;
  return out;
}

}  // namespace hc::xhci::testing
