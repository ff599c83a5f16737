// hc::xhci::EventRing: the producer side of one interrupter's event ring (xHCI 1.2 section 4.9.4):
// the Event Ring Segment Table the guest set up (ERSTSZ/ERSTBA), the enqueue position and the
// producer cycle state. The controller writes events here; the guest consumes them and reports
// its progress through ERDP. The ring never overwrites what the guest has not consumed: when the
// next slot is the guest's dequeue position the event is dropped and counted (the model then
// reports Event Ring Full, 4.9.4.2). Segment table entries are read from guest memory and checked
// (size 16..4096, inside guest memory).
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

  // The guest's dequeue pointer (ERDP, bits 63:4).
  void set_dequeue(uint64_t erdp) { dequeue_ = erdp & ~uint64_t{0xf}; }
  // Writes `event` with the producer cycle bit; false when the ring is full or unconfigured.
  bool push(GuestMemory& mem, Trb event);
  // Whether the guest has consumed everything written.
  bool empty() const { return enqueue_address() == dequeue_; }
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
};

}  // namespace hc::xhci
