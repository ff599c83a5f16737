// XhciFunction: the command ring and its commands (xHCI 1.2 sections 4.6 and 6.4.3).
#include <spdlog/spdlog.h>

#include "host-controller/xhci/regs.h"
#include "host-controller/xhci/xhci_function.h"

namespace hc::xhci {

using namespace reg;

namespace {

// The endpoint descriptor a context describes (for bandwidth admission): the address from the
// DCI, the type, wMaxPacketSize with the high-bandwidth multiplier (Max Burst for high speed),
// and bInterval from the context's exponent (2^Interval × 125 µs).
usb::EndpointDescriptor descriptor_of(uint8_t dci, const EndpointContext& c, uint32_t speed) {
  usb::EndpointDescriptor d;
  d.address = endpoint_address_of(dci);
  switch (c.type()) {
    case EndpointType::kIsochIn:
    case EndpointType::kIsochOut:
      d.attributes = 1;
      break;
    case EndpointType::kInterruptIn:
    case EndpointType::kInterruptOut:
      d.attributes = 3;
      break;
    default:
      d.attributes = 2;
      break;
  }
  const bool high = speed == kSpeedHigh;
  d.max_packet_size = static_cast<uint16_t>(
      (c.max_packet_size() & 0x7ff) | (high ? (std::min<uint32_t>(c.max_burst(), 2) << 11) : 0));
  d.interval = static_cast<uint8_t>(std::min<uint32_t>(c.interval() + 1, 16));
  if (speed >= kSpeedSuper)
    d.ss_companion = usb::SsEndpointCompanion{
        .max_burst = static_cast<uint8_t>(c.max_burst()),
        .attributes = static_cast<uint8_t>(c.mult()),
        .bytes_per_interval =
            static_cast<uint16_t>(std::min<uint32_t>(c.max_esit_payload(), 0xffff))};
  return d;
}

}  // namespace

void XhciFunction::doorbell(uint32_t index, uint32_t value) {
  if (!running()) return;
  const uint8_t target = value & 0xff;
  if (index == 0) {
    if (target != 0) return;  // the command doorbell's target must be 0
    command_ring_running_ = true;
    return run_commands();
  }
  if (index > kMaxSlots || target < 1 || target > 31 || !slots_[index].enabled) return;
  Endpoint& ep = slots_[index].eps[target];
  if (ep.state == EndpointState::kStopped) {  // a doorbell restarts a stopped endpoint
    ep.state = EndpointState::kRunning;
    set_endpoint_state(static_cast<uint8_t>(index), target, EndpointState::kRunning);
  }
  run_endpoint(static_cast<uint8_t>(index), target);
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
  const uint8_t s = trb.slot_id();
  const bool slot_ok = s >= 1 && s <= kMaxSlots && slots_[s].enabled;
  switch (trb.type()) {
    case TrbType::kNoOpCommand:
      slot = 0;
      return Completion::kSuccess;
    case TrbType::kEnableSlot:
      return enable_slot(slot);
    case TrbType::kDisableSlot:
      return disable_slot(s);
    case TrbType::kAddressDevice:
      return slot_ok ? address_device(trb) : Completion::kSlotNotEnabled;
    case TrbType::kConfigureEndpoint:
      return slot_ok ? configure_endpoint(trb) : Completion::kSlotNotEnabled;
    case TrbType::kEvaluateContext:
      return slot_ok ? evaluate_context(trb) : Completion::kSlotNotEnabled;
    case TrbType::kResetEndpoint:
      return slot_ok ? reset_endpoint(trb) : Completion::kSlotNotEnabled;
    case TrbType::kStopEndpoint:
      return slot_ok ? stop_endpoint(trb) : Completion::kSlotNotEnabled;
    case TrbType::kSetTrDequeue:
      return slot_ok ? set_tr_dequeue(trb) : Completion::kSlotNotEnabled;
    case TrbType::kResetDevice:
      return slot_ok ? reset_device(trb) : Completion::kSlotNotEnabled;
    default:
      spdlog::debug("xhci: command type {} not supported", static_cast<int>(trb.type()));
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
  abandon_slot(slot);
  slots_[slot] = Slot{};
  uint64_t out = 0;
  if (device_context_address(slot, out)) {
    SlotContext cleared;
    (void)mem_.write_obj(out, cleared);
  }
  return Completion::kSuccess;
}

bool XhciFunction::device_context_address(uint8_t slot, uint64_t& out) const {
  if (!mem_.read_obj(dcbaap_ + 8ull * slot, out)) return false;
  out &= ~uint64_t{0x3f};
  return true;
}

bool XhciFunction::read_output(uint8_t slot, DeviceContext& out, uint64_t& address) const {
  return device_context_address(slot, address) && mem_.read_obj(address, out);
}

void XhciFunction::write_back(uint8_t slot, const DeviceContext& out) {
  uint64_t address = 0;
  if (!device_context_address(slot, address) || !mem_.write_obj(address, out))
    spdlog::warn("xhci: slot {}: output device context outside guest memory", slot);
}

Completion XhciFunction::address_device(const Trb& trb) {
  const uint8_t slot = trb.slot_id();
  Slot& sl = slots_[slot];
  InputContext in;
  if (!mem_.read_obj(trb.context_pointer(), in)) return Completion::kParameterError;
  // 4.6.5: the slot and EP0 are added, nothing dropped.
  if ((in.control.add_flags() & 3u) != 3u || in.control.drop_flags() != 0)
    return Completion::kParameterError;
  uint64_t out_addr = 0;
  DeviceContext out;
  if (!read_output(slot, out, out_addr)) return Completion::kParameterError;
  // Valid in Enabled (either BSR) and in Default (BSR = 0 only).
  if (sl.state == SlotState::kAddressed || sl.state == SlotState::kConfigured ||
      (sl.state == SlotState::kDefault && trb.bsr()))
    return Completion::kContextStateError;
  const uint32_t port = in.slot.root_hub_port();
  if (port < 1 || port > kPorts || !ports_[port - 1].device ||
      !(ports_[port - 1].portsc & kPortPed))
    return Completion::kParameterError;  // no enabled device behind that port
  if (in.endpoints[0].type() != EndpointType::kControl || in.endpoints[0].max_packet_size() == 0)
    return Completion::kParameterError;
  sl.state = trb.bsr() ? SlotState::kDefault : SlotState::kAddressed;
  out.slot = in.slot;
  out.slot.set_context_entries(1);
  out.slot.set_state(sl.state);
  out.slot.set_usb_address(trb.bsr() ? 0 : slot);  // the address "sent" is the slot id
  out.endpoints[0] = in.endpoints[0];
  out.endpoints[0].set_state(EndpointState::kRunning);
  if (!mem_.write_obj(out_addr, out)) return Completion::kParameterError;
  sl.port = port;
  Endpoint& ep0 = sl.eps[1];
  ep0.state = EndpointState::kRunning;
  ep0.type = EndpointType::kControl;
  ep0.ring.set_dequeue(in.endpoints[0].dequeue_pointer(), in.endpoints[0].dequeue_cycle());
  return Completion::kSuccess;
}

Completion XhciFunction::configure_endpoint(const Trb& trb) {
  const uint8_t slot = trb.slot_id();
  Slot& sl = slots_[slot];
  if (sl.state != SlotState::kAddressed && sl.state != SlotState::kConfigured)
    return Completion::kContextStateError;
  uint64_t out_addr = 0;
  DeviceContext out;
  if (!read_output(slot, out, out_addr)) return Completion::kParameterError;
  // The slot is Configured while an endpoint besides EP0 is enabled, Addressed otherwise.
  auto finish = [&] {
    uint32_t last = 1;
    for (uint8_t dci = 2; dci <= 31; ++dci)
      if (sl.eps[dci].state != EndpointState::kDisabled) last = dci;
    sl.state = last > 1 ? SlotState::kConfigured : SlotState::kAddressed;
    out.slot.set_state(sl.state);
    out.slot.set_context_entries(last);
    write_back(slot, out);
    return Completion::kSuccess;
  };
  if (trb.deconfigure()) {  // DC: every endpoint but EP0 goes
    for (uint8_t dci = 2; dci <= 31; ++dci) drop_endpoint(sl, dci, out);
    if (admit_) (void)admit_(sl.port, {});
    return finish();
  }
  InputContext in;
  if (!mem_.read_obj(trb.context_pointer(), in)) return Completion::kParameterError;
  const uint32_t drop = in.control.drop_flags(), add = in.control.add_flags();
  if ((drop & 3u) || (add & 2u)) return Completion::kParameterError;  // D0, D1, A1 reserved
  // Decide first: every added endpoint valid, and the bus can take the result.
  std::vector<usb::EndpointDescriptor> after;
  for (uint8_t dci = 2; dci <= 31; ++dci) {
    const bool added = add & (1u << dci), dropped = drop & (1u << dci);
    if (added) {
      const EndpointContext& c = in.endpoints[dci - 1];
      const bool in_dir = dci & 1;
      const auto t = c.type();
      const bool type_ok = t != EndpointType::kNotValid && t != EndpointType::kControl &&
                           (in_dir == (t == EndpointType::kIsochIn || t == EndpointType::kBulkIn ||
                                       t == EndpointType::kInterruptIn));
      if (!type_ok || c.max_packet_size() == 0 || c.dequeue_pointer() == 0)
        return Completion::kParameterError;
      after.push_back(descriptor_of(dci, c, out.slot.speed()));
    } else if (!dropped && sl.eps[dci].state != EndpointState::kDisabled) {
      after.push_back(descriptor_of(dci, out.endpoints[dci - 1], out.slot.speed()));
    }
  }
  if (admit_ && !admit_(sl.port, after)) return Completion::kBandwidthError;
  for (uint8_t dci = 2; dci <= 31; ++dci) {
    if (drop & (1u << dci)) drop_endpoint(sl, dci, out);
    if (add & (1u << dci)) {
      Endpoint& ep = sl.eps[dci];
      abandon(ep, device_of(sl));
      ep = Endpoint{};
      const EndpointContext& c = in.endpoints[dci - 1];
      ep.state = EndpointState::kRunning;
      ep.type = c.type();
      ep.ring.set_dequeue(c.dequeue_pointer(), c.dequeue_cycle());
      out.endpoints[dci - 1] = c;
      out.endpoints[dci - 1].set_state(EndpointState::kRunning);
    }
  }
  return finish();
}

void XhciFunction::drop_endpoint(Slot& slot, uint8_t dci, DeviceContext& out) {
  abandon(slot.eps[dci], device_of(slot));
  slot.eps[dci] = Endpoint{};
  out.endpoints[dci - 1].set_state(EndpointState::kDisabled);
}

Completion XhciFunction::evaluate_context(const Trb& trb) {
  const uint8_t slot = trb.slot_id();
  if (slots_[slot].state == SlotState::kDisabledEnabled) return Completion::kContextStateError;
  InputContext in;
  uint64_t out_addr = 0;
  DeviceContext out;
  if (!mem_.read_obj(trb.context_pointer(), in) || !read_output(slot, out, out_addr))
    return Completion::kParameterError;
  const uint32_t add = in.control.add_flags();
  if (add & ~3u) return Completion::kParameterError;  // only the slot and EP0 are evaluated
  if (add & 1u) {                                     // Max Exit Latency and Interrupter Target
    out.slot.dw[1] = (out.slot.dw[1] & ~0xffffu) | (in.slot.dw[1] & 0xffffu);
    out.slot.dw[2] = (out.slot.dw[2] & 0x3fffffu) | (in.slot.dw[2] & ~0x3fffffu);
  }
  if (add & 2u) {  // EP0's Max Packet Size
    if (in.endpoints[0].max_packet_size() == 0) return Completion::kParameterError;
    out.endpoints[0].dw[1] =
        (out.endpoints[0].dw[1] & 0xffffu) | (in.endpoints[0].dw[1] & ~0xffffu);
  }
  write_back(slot, out);
  return Completion::kSuccess;
}

Completion XhciFunction::reset_endpoint(const Trb& trb) {
  const uint8_t slot = trb.slot_id(), dci = trb.endpoint_id();
  if (dci < 1) return Completion::kTrbError;
  Endpoint& ep = slots_[slot].eps[dci];
  if (ep.state != EndpointState::kHalted) return Completion::kContextStateError;
  ep.state = EndpointState::kStopped;
  set_endpoint_state(slot, dci, EndpointState::kStopped);
  return Completion::kSuccess;
}

Completion XhciFunction::stop_endpoint(const Trb& trb) {
  const uint8_t slot = trb.slot_id(), dci = trb.endpoint_id();
  if (dci < 1) return Completion::kTrbError;
  Slot& sl = slots_[slot];
  Endpoint& ep = sl.eps[dci];
  if (ep.state != EndpointState::kRunning) return Completion::kContextStateError;
  if (ep.inflight) {
    // The TD at the device is given up and handed back: the ring's dequeue points at it again,
    // and the driver learns where the endpoint stopped (Stopped, 4.6.9).
    abandon(ep, device_of(sl));
    post(Trb::transfer_event(ep.td_start, 0, Completion::kStopped, slot, dci));
    ep.ring.set_dequeue(ep.td_start, ep.td_cycle);
  }
  ep.state = EndpointState::kStopped;
  set_endpoint_state(slot, dci, EndpointState::kStopped);
  return Completion::kSuccess;
}

Completion XhciFunction::set_tr_dequeue(const Trb& trb) {
  const uint8_t slot = trb.slot_id(), dci = trb.endpoint_id();
  if (dci < 1) return Completion::kTrbError;
  Endpoint& ep = slots_[slot].eps[dci];
  if (ep.state != EndpointState::kStopped && ep.state != EndpointState::kError)
    return Completion::kContextStateError;
  if (trb.dequeue_pointer() == 0) return Completion::kParameterError;
  ep.ring.set_dequeue(trb.dequeue_pointer(), trb.dequeue_cycle());
  uint64_t out_addr = 0;
  DeviceContext out;
  if (read_output(slot, out, out_addr)) {
    out.endpoints[dci - 1].set_dequeue(trb.dequeue_pointer(), trb.dequeue_cycle());
    write_back(slot, out);
  }
  return Completion::kSuccess;
}

Completion XhciFunction::reset_device(const Trb& trb) {
  const uint8_t slot = trb.slot_id();
  Slot& sl = slots_[slot];
  if (sl.state != SlotState::kAddressed && sl.state != SlotState::kConfigured)
    return Completion::kContextStateError;
  uint64_t out_addr = 0;
  DeviceContext out;
  if (!read_output(slot, out, out_addr)) return Completion::kParameterError;
  for (uint8_t dci = 2; dci <= 31; ++dci) drop_endpoint(sl, dci, out);
  sl.state = SlotState::kDefault;
  out.slot.set_state(SlotState::kDefault);
  out.slot.set_usb_address(0);
  out.slot.set_context_entries(1);
  write_back(slot, out);
  if (usb::Device* dev = device_of(sl)) dev->reset([](usb::Status) {});
  return Completion::kSuccess;
}

}  // namespace hc::xhci
