#include "schedulers/bus_reservations.h"

#include <algorithm>

namespace sched {

namespace {

bool periodic(const usb::EndpointDescriptor& ep) {
  return ep.type() == usb::TransferType::kIsochronous || ep.type() == usb::TransferType::kInterrupt;
}

bool same_endpoint(const usb::EndpointDescriptor& a, const usb::EndpointDescriptor& b) {
  return a.address == b.address && a.attributes == b.attributes &&
         a.max_packet_size == b.max_packet_size && a.interval == b.interval;
}

usb::Speed ledger_speed(usb::Speed device) {
  switch (device) {
    case usb::Speed::kSuper:
    case usb::Speed::kSuperPlus:
      return usb::Speed::kSuper;
    case usb::Speed::kFull:
    case usb::Speed::kLow:
      return usb::Speed::kFull;
    default:
      return usb::Speed::kHigh;
  }
}

}  // namespace

uint32_t BusReservations::Holding::peak() const {
  std::map<uint32_t, uint32_t> per_slot;
  for (const auto& p : placements)
    for (uint32_t s = p.phase; s < 8; s += p.cost.interval_slots) per_slot[s] += p.cost.per_service;
  uint32_t out = 0;
  for (const auto& [_, v] : per_slot) out = std::max(out, v);
  return out;
}

std::string BusReservations::ledger_name(const std::string& bus, usb::Speed speed) {
  return bus + " (" + std::string(usb::to_string(ledger_speed(speed))) + ")";
}

usb::Result<void> BusReservations::use(const std::string& vm, const std::string& bus,
                                       const std::string& device, uint8_t interface,
                                       uint8_t alternate,
                                       std::span<const usb::EndpointDescriptor> eps,
                                       usb::Speed speed) {
  std::vector<usb::EndpointDescriptor> wanted;
  for (const auto& e : eps)
    if (periodic(e)) wanted.push_back(e);
  const Slot slot{device, interface};
  auto it = holdings_.find(slot);
  if (wanted.empty()) {
    leave(vm, device, interface);
    return {};
  }
  if (it != holdings_.end()) {
    // What is already reserved there covers this VM's endpoints: it shares the reservation.
    const bool covered = std::ranges::all_of(wanted, [&](const usb::EndpointDescriptor& e) {
      return std::ranges::any_of(it->second.endpoints,
                                 [&](const auto& x) { return same_endpoint(x, e); });
    });
    if (covered) {
      if (it->second.vms.insert(vm).second) changed();
      return {};
    }
  }
  const std::string name = ledger_name(bus, speed);
  BandwidthLedger& ledger =
      ledgers_.try_emplace(name, Ledger{bus, BandwidthLedger(ledger_speed(speed))})
          .first->second.ledger;
  auto& key = keys_[slot];
  if (!key) key = next_key_++;
  auto placed = ledger.reserve(key, wanted, speed);
  if (!placed) {
    if (it == holdings_.end()) keys_.erase(slot);
    return usb::Error::make(usb::Error::Code::kBusy, "bus " + name + " cannot take interface " +
                                                         std::to_string(interface) + " alternate " +
                                                         std::to_string(alternate) + " of " +
                                                         device + ": " + placed.error().message);
  }
  Holding& h = holdings_[slot];
  h.bus = bus;
  h.device = device;
  h.interface = interface;
  h.alternate = alternate;
  h.speed = speed;
  h.endpoints = std::move(wanted);
  h.placements = std::move(*placed);
  h.vms.insert(vm);
  changed();
  return {};
}

void BusReservations::leave(const std::string& vm, const std::string& device,
                            std::optional<uint8_t> interface) {
  bool any = false;
  for (auto it = holdings_.begin(); it != holdings_.end();) {
    auto next = std::next(it);
    if (it->first.first == device && (!interface || it->first.second == *interface) &&
        it->second.vms.erase(vm)) {
      any = true;
      if (it->second.vms.empty()) erase(it);
    }
    it = next;
  }
  if (any) changed();
}

void BusReservations::remove_device(const std::string& device) {
  bool any = false;
  for (auto it = holdings_.begin(); it != holdings_.end();) {
    auto next = std::next(it);
    if (it->first.first == device) erase(it), any = true;
    it = next;
  }
  if (any) changed();
}

void BusReservations::erase(std::map<Slot, Holding>::iterator it) {
  const auto name = ledger_name(it->second.bus, it->second.speed);
  if (auto l = ledgers_.find(name); l != ledgers_.end()) l->second.ledger.release(keys_[it->first]);
  keys_.erase(it->first);
  holdings_.erase(it);
}

std::vector<const BusReservations::Holding*> BusReservations::holdings() const {
  std::vector<const Holding*> out;
  for (const auto& [_, h] : holdings_) out.push_back(&h);
  return out;
}

std::vector<BusReservations::BusLoad> BusReservations::buses() const {
  std::vector<BusLoad> out;
  for (const auto& [name, l] : ledgers_) out.push_back({l.bus, name, &l.ledger});
  return out;
}

void BusReservations::changed() {
  if (on_change_) on_change_();
}

}  // namespace sched
