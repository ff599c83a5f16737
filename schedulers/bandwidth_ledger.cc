#include "schedulers/bandwidth_ledger.h"

#include <algorithm>

namespace sched {

namespace {

// Worst-case bit stuffing: one stuffed bit per six (USB 2.0 7.1.9).
uint64_t bit_time(uint64_t bytes) {
  return 7 * 8 * bytes / 6;
}

// Bus time of one transaction of `bytes` payload, in ns (USB 2.0 5.11.3: token, data and
// handshake packets, inter-packet delays, host delay).
uint32_t transaction_ns(usb::Speed speed, bool iso, bool in, uint32_t bytes) {
  const uint64_t b = bit_time(bytes);
  switch (speed) {
    case usb::Speed::kHigh:  // 2.083 ns per bit, 5 ns host delay
      return static_cast<uint32_t>(((iso ? 38 : 55) * 8 * 2083 + 2083 * (3 + b)) / 1000 + 5);
    case usb::Speed::kFull:  // 83.54 ns per bit, 1 µs host delay
      return static_cast<uint32_t>((iso ? (in ? 7268 : 6265) : 9107) + 1000 +
                                   83954 * (3 + b) / 1000);
    case usb::Speed::kLow:  // 667 ns per bit, through a hub: two low-speed setup delays
      return static_cast<uint32_t>((in ? 64060 : 64107) + 2 * 333 + 1000 + 676670 * (3 + b) / 1000);
    default:
      return 0;
  }
}

bool super(usb::Speed s) {
  return s == usb::Speed::kSuper || s == usb::Speed::kSuperPlus;
}

}  // namespace

BandwidthLedger::BandwidthLedger(usb::Speed bus) : bus_(bus) {
  if (super(bus)) {
    bytes_ = true;
    budget_ = 62500 * 9 / 10;
    load_.assign(8, 0);
  } else if (bus == usb::Speed::kHigh) {
    budget_ = 125000 * 8 / 10;
    load_.assign(8, 0);
  } else {
    bus_ = usb::Speed::kFull;  // low-speed devices share the full-speed frame
    budget_ = 1000000 * 9 / 10;
    load_.assign(1, 0);
  }
}

BandwidthLedger::Cost BandwidthLedger::cost(const usb::EndpointDescriptor& ep,
                                            usb::Speed device_speed) const {
  const auto type = ep.type();
  if (type != usb::TransferType::kIsochronous && type != usb::TransferType::kInterrupt) return {};
  const bool iso = type == usb::TransferType::kIsochronous;
  const bool in = ep.direction() == usb::Direction::kIn;
  Cost c;
  const uint32_t b_interval = std::max<uint32_t>(ep.interval, 1);
  if (bytes_) {
    uint32_t per = 0;
    if (ep.ss_companion && ep.ss_companion->bytes_per_interval)
      per = ep.ss_companion->bytes_per_interval;
    else {
      const uint32_t burst = ep.ss_companion ? ep.ss_companion->max_burst + 1u : 1u;
      const uint32_t mult = (iso && ep.ss_companion) ? (ep.ss_companion->attributes & 3) + 1u : 1u;
      per = uint32_t{ep.max_packet()} * burst * mult;
    }
    c.per_service = per;
    c.interval_slots = 1u << std::min<uint32_t>(b_interval - 1, 15);
  } else if (bus_ == usb::Speed::kHigh) {
    c.per_service =
        transaction_ns(usb::Speed::kHigh, iso, in, ep.max_packet()) * ep.hs_transactions();
    c.interval_slots = 1u << std::min<uint32_t>(b_interval - 1, 15);
  } else {
    const usb::Speed s = device_speed == usb::Speed::kLow ? usb::Speed::kLow : usb::Speed::kFull;
    c.per_service = transaction_ns(s, iso, in, ep.max_packet());
    c.interval_slots = 1;  // one slot per period: every frame (conservative, see the header)
  }
  c.interval_slots = std::clamp<uint32_t>(c.interval_slots, 1, static_cast<uint32_t>(slots()));
  return c;
}

usb::Result<std::vector<BandwidthLedger::Placement>> BandwidthLedger::reserve(
    Key key, std::span<const usb::EndpointDescriptor> eps, usb::Speed device_speed) {
  const bool fits_bus = bytes_ ? super(device_speed)
                               : (bus_ == usb::Speed::kHigh ? device_speed == usb::Speed::kHigh
                                                            : device_speed == usb::Speed::kFull ||
                                                                  device_speed == usb::Speed::kLow);
  if (!fits_bus)
    return usb::Error::make(usb::Error::Code::kUnsupported,
                            std::string("a ") + std::string(usb::to_string(device_speed)) +
                                "-speed device does not belong on a " +
                                std::string(usb::to_string(bus_)) + "-speed ledger");
  // Plan against the load without this key's old reservation; commit only if all fit.
  std::vector<uint32_t> load = load_;
  if (auto it = reservations_.find(key); it != reservations_.end())
    for (const auto& p : it->second)
      for (size_t s = p.phase; s < load.size(); s += p.cost.interval_slots)
        load[s] -= p.cost.per_service;
  std::vector<Placement> plan;
  for (const auto& ep : eps) {
    const Cost c = cost(ep, device_speed);
    if (c.per_service == 0) continue;
    uint32_t best_phase = 0;
    uint64_t best_peak = UINT64_MAX;
    for (uint32_t phase = 0; phase < c.interval_slots; ++phase) {
      uint64_t peak = 0;
      for (size_t s = phase; s < load.size(); s += c.interval_slots)
        peak = std::max<uint64_t>(peak, uint64_t{load[s]} + c.per_service);
      if (peak < best_peak) best_peak = peak, best_phase = phase;
    }
    if (best_peak > budget_)
      return usb::Error::make(
          usb::Error::Code::kBusy,
          "endpoint " + std::to_string(ep.address) + " needs " + std::to_string(c.per_service) +
              " " + unit() + " every " + std::to_string(c.interval_slots) + " slot(s); the " +
              "fullest slot it could use has " +
              std::to_string(budget_ - std::min<uint64_t>(budget_, best_peak - c.per_service)) +
              " of " + std::to_string(budget_) + " left");
    for (size_t s = best_phase; s < load.size(); s += c.interval_slots) load[s] += c.per_service;
    plan.push_back({ep.address, c, best_phase});
  }
  release(key);
  apply(plan, +1);
  reservations_[key] = plan;
  return plan;
}

void BandwidthLedger::release(Key key) {
  auto it = reservations_.find(key);
  if (it == reservations_.end()) return;
  apply(it->second, -1);
  reservations_.erase(it);
}

void BandwidthLedger::apply(const std::vector<Placement>& placements, int sign) {
  for (const auto& p : placements)
    for (size_t s = p.phase; s < load_.size(); s += p.cost.interval_slots)
      load_[s] = sign > 0 ? load_[s] + p.cost.per_service : load_[s] - p.cost.per_service;
}

uint32_t BandwidthLedger::headroom() const {
  return budget_ - *std::max_element(load_.begin(), load_.end());
}

const std::vector<BandwidthLedger::Placement>* BandwidthLedger::reservation(Key key) const {
  auto it = reservations_.find(key);
  return it == reservations_.end() ? nullptr : &it->second;
}

}  // namespace sched
