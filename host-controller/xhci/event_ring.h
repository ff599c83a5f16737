// hc::xhci::EventRing: the producer side of one interrupter's event ring (xHCI 1.2 section 4.9.4):
// the Event Ring Segment Table the guest set up (ERSTSZ/ERSTBA), the enqueue position and the
// producer cycle state. The controller writes events here; the guest consumes them and reports
// its progress through ERDP. The ring never overwrites what the guest has not consumed: when only
// one slot is left it takes a Host Controller Event with Event Ring Full Error (4.9.4, as QEMU's
// xHCI does) and every further event is dropped and counted until the guest moves its dequeue
// pointer. Segment table entries are read from guest memory and checked (size 16..4096, inside
// guest memory).
// Owned by its interrupter (XhciFunction); lives on the controller's loop.
#pragma once

#include <cstdint>
#include <vector>

#include "host-controller/common/guest_memory.h"
#include "host-controller/xhci/trb.h"

namespace hc::xhci {

class EventRing {
 public:
  // ERSTBA written (with ERSTSZ already set): reads the table and starts at its first segment
  // with cycle 1. false when the table or a segment is unusable (the guest gets no events; the
  // caller sets Host Controller Error).
  bool configure(const GuestMemory& mem, uint64_t erstba, uint32_t erstsz);
  void reset();
  bool configured() const { return !segments_.empty(); }

  // The guest's dequeue pointer (ERDP, bits 63:4). A move ends the full state.
  void set_dequeue(uint64_t erdp) {
    const uint64_t d = erdp & ~uint64_t{0xf};
    if (d != dequeue_) full_ = false;
    dequeue_ = d;
  }
  enum class Push : uint8_t { kOk, kFull, kUnconfigured, kMemoryError };
  // Writes `event` with the producer cycle bit.
  Push push(GuestMemory& mem, Trb event);
  // Whether the guest has consumed everything written.
  bool empty() const { return !full_ && enqueue_address() == dequeue_; }
  uint64_t dropped() const { return dropped_; }

 private:
  struct Segment {
    uint64_t base;
    uint32_t size;
  };
  uint64_t enqueue_address() const {
    return segments_.empty() ? 0 : segments_[segment_].base + 16ull * index_;
  }
  std::vector<Segment> segments_;
  size_t segment_ = 0;
  uint32_t index_ = 0;
  bool cycle_ = true;
  uint64_t dequeue_ = 0;
  uint64_t dropped_ = 0;
  bool full_ = false;  // Event Ring Full reported; waiting for the guest
};

}  // namespace hc::xhci
