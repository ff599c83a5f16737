#include "host-controller/xhci/event_ring.h"

namespace hc::xhci {

bool EventRing::configure(const GuestMemory& mem, uint64_t erstba, uint32_t erstsz) {
  reset();
  if (erstsz == 0 || erstsz > 16) return false;  // HCSPARAMS2.ERST Max = 4: at most 16 entries
  std::vector<Segment> segs;
  for (uint32_t i = 0; i < erstsz; ++i) {
    ErstEntry e;
    if (!mem.read_obj((erstba & ~uint64_t{0x3f}) + 16ull * i, e)) return false;
    const uint32_t size = e.size & 0xffff;
    const uint64_t base = e.base & ~uint64_t{0x3f};
    uint8_t probe[16];
    if (size < 16 || size > 4096 || !mem.read(base, probe) ||
        !mem.read(base + 16ull * (size - 1), probe))
      return false;
    segs.push_back({base, size});
  }
  segments_ = std::move(segs);
  dequeue_ = segments_[0].base;
  return true;
}

void EventRing::reset() {
  segments_.clear();
  segment_ = 0;
  index_ = 0;
  cycle_ = true;
  dequeue_ = 0;
  full_ = false;
}

EventRing::Push EventRing::push(GuestMemory& mem, Trb event) {
  if (segments_.empty()) {
    ++dropped_;
    return Push::kUnconfigured;
  }
  if (full_) {
    ++dropped_;
    return Push::kFull;
  }
  // The slot after this one: if it is the guest's dequeue position, this is the last free slot
  // — it gets Event Ring Full instead, and the ring waits for the guest.
  size_t next_segment = segment_;
  uint32_t next_index = index_ + 1;
  bool next_cycle = cycle_;
  if (next_index == segments_[segment_].size) {
    next_index = 0;
    if (++next_segment == segments_.size()) {
      next_segment = 0;
      next_cycle = !next_cycle;
    }
  }
  const bool last = segments_[next_segment].base + 16ull * next_index == dequeue_;
  Trb written = last ? Trb::host_controller_event(Completion::kEventRingFull) : event;
  written.set_cycle(cycle_);
  if (!mem.write_obj(enqueue_address(), written)) {
    ++dropped_;
    return Push::kMemoryError;
  }
  segment_ = next_segment;
  index_ = next_index;
  cycle_ = next_cycle;
  if (!last) return Push::kOk;
  full_ = true;
  ++dropped_;
  return Push::kFull;
}

}  // namespace hc::xhci
