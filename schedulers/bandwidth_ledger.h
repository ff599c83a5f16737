// BandwidthLedger: the periodic (isochronous and interrupt) bandwidth of one bus, per
// (micro)frame, as a host controller budgets it before it accepts a configuration or alternate
// setting (USB 2.0 5.6.4 / 5.7.4; USB 3.2 for SuperSpeed):
//   full / low speed: 90% of a 1 ms frame (900 µs of bus time);
//   high speed: 80% of a 125 µs microframe (100 µs);
//   SuperSpeed: 90% of a 125 µs bus interval's 62500 payload bytes (5 Gb/s after 8b/10b).
// An endpoint's cost per service is its bus time for one (micro)frame's worth of transactions
// (wMaxPacketSize × the high-bandwidth multiplier, with worst-case bit stuffing and each
// transaction's protocol overhead, USB 2.0 5.11.3) — bytes (max packet × burst × mult, or
// wBytesPerInterval) for SuperSpeed. Its service interval comes from bInterval.
//
// The schedule is one period of slots: 8 microframes for high speed and SuperSpeed, 1 frame for
// full and low speed. An endpoint serviced every `interval` slots takes every interval-th slot
// from the phase whose fullest slot is emptiest; one serviced less often than once per period is
// budgeted as if it were serviced once per period — conservative: the ledger never over-commits
// a slot, and may refuse what a controller with a 1024-frame schedule would still place.
// Reservations are all-or-nothing per key (a VM's alternate setting). Pure logic, no I/O.
// Owned by whoever models the bus (vusbd's shared devices, the host-controller models).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "usb/core/descriptors.h"
#include "usb/core/error.h"
#include "usb/core/types.h"

namespace sched {

class BandwidthLedger {
 public:
  using Key = uint64_t;
  struct Cost {
    uint32_t per_service = 0;     // ns of bus time (FS/LS/HS) or bytes (SuperSpeed)
    uint32_t interval_slots = 1;  // service every this many slots (≥ 1, ≤ slots())
  };
  struct Placement {
    uint8_t endpoint = 0;
    Cost cost;
    uint32_t phase = 0;  // first slot
  };

  // `bus` is the bus's speed; low-speed devices share a full-speed ledger.
  explicit BandwidthLedger(usb::Speed bus);

  // What `ep` costs on a bus of this ledger's speed (bulk and control cost nothing periodic).
  Cost cost(const usb::EndpointDescriptor& ep, usb::Speed device_speed) const;

  // Admits the periodic endpoints of `eps` as one reservation under `key` (replacing what `key`
  // held), or changes nothing and says which endpoint did not fit and by how much.
  usb::Result<std::vector<Placement>> reserve(Key key, std::span<const usb::EndpointDescriptor> eps,
                                              usb::Speed device_speed);
  void release(Key key);

  uint32_t budget() const { return budget_; }  // per slot
  size_t slots() const { return load_.size(); }
  uint32_t load(size_t slot) const { return load_[slot]; }
  // Room left in the fullest slot: what one more every-slot endpoint could take.
  uint32_t headroom() const;
  const std::vector<Placement>* reservation(Key key) const;
  // "ns" or "bytes".
  const char* unit() const { return bytes_ ? "bytes" : "ns"; }

 private:
  void apply(const std::vector<Placement>& placements, int sign);

  usb::Speed bus_;
  bool bytes_ = false;
  uint32_t budget_ = 0;
  std::vector<uint32_t> load_;
  std::map<Key, std::vector<Placement>> reservations_;
};

}  // namespace sched
