// hc::xhci::Ring: the controller's (consumer's) side of one xHCI ring — the command ring or a
// transfer ring (xHCI 1.2 section 4.9): a dequeue pointer and the consumer cycle state. It reads
// TRBs the guest produced (cycle bit equal to the consumer cycle state), follows Link TRBs
// (toggling the cycle state when their Toggle Cycle bit is set) and gathers a TD (TRBs chained
// with CH). Every walk is bounded: a ring of nothing but links, a chain longer than a TD may be, or
// a pointer outside guest memory stops the walk with a reason the caller turns into TRB Error /
// Host System Error, never a hang or an out-of-bounds access.
// Owned by the slot/endpoint (or command) state that walks it; lives on the controller's loop.
#pragma once

#include <cstdint>
#include <expected>
#include <vector>

#include "host-controller/common/guest_memory.h"
#include "host-controller/xhci/trb.h"

namespace hc::xhci {

class Ring {
 public:
  // Links followed in a row before the ring counts as a loop; TRBs a TD may chain.
  static constexpr int kMaxLinks = 64;
  static constexpr size_t kMaxTdTrbs = 256;

  enum class Stop : uint8_t {
    kEmpty,       // the next TRB still belongs to the producer (or a TD is only half written)
    kBadPointer,  // a TRB outside guest memory: Host System Error / TRB Error
    kLinkLoop,    // only Link TRBs: TRB Error
    kTdTooLong,   // a chain without end within kMaxTdTrbs: TRB Error
  };
  struct Fetched {
    Trb trb;
    uint64_t address = 0;  // where it was (Transfer Events point here)
  };

  Ring() = default;
  Ring(uint64_t dequeue, bool cycle) { set_dequeue(dequeue, cycle); }

  // Set TR Dequeue Pointer / CRCR / Address Device: a new position (bits 3:0 are not address).
  void set_dequeue(uint64_t dequeue, bool cycle) {
    dequeue_ = dequeue & ~uint64_t{0xf};
    cycle_ = cycle;
  }
  uint64_t dequeue() const { return dequeue_; }
  bool cycle() const { return cycle_; }

  // The next TRB the controller owns, links followed; the position stays on it.
  std::expected<Fetched, Stop> peek(const GuestMemory& mem);
  // peek() and step past it.
  std::expected<Fetched, Stop> pop(const GuestMemory& mem);
  // A whole TD: TRBs up to and including the first without CH (Event Data TRBs included). If the
  // TD is not fully written yet, nothing is consumed and kEmpty is returned.
  std::expected<std::vector<Fetched>, Stop> pop_td(const GuestMemory& mem);

 private:
  uint64_t dequeue_ = 0;
  bool cycle_ = true;
};

}  // namespace hc::xhci
