#include "host-controller/xhci/ring.h"

namespace hc::xhci {

std::expected<Ring::Fetched, Ring::Stop> Ring::peek(const GuestMemory& mem) {
  for (int links = 0; links <= kMaxLinks; ++links) {
    Trb t;
    if (!mem.read_obj(dequeue_, t)) return std::unexpected(Stop::kBadPointer);
    if (t.cycle() != cycle_) return std::unexpected(Stop::kEmpty);
    if (t.type() != TrbType::kLink) return Fetched{t, dequeue_};
    // 4.11.5.1: a Link TRB moves the dequeue pointer; Toggle Cycle flips the consumer's state.
    dequeue_ = t.link_target();
    if (t.ent_or_toggle()) cycle_ = !cycle_;
  }
  return std::unexpected(Stop::kLinkLoop);
}

std::expected<Ring::Fetched, Ring::Stop> Ring::pop(const GuestMemory& mem) {
  auto f = peek(mem);
  if (f) dequeue_ += sizeof(Trb);
  return f;
}

std::expected<std::vector<Ring::Fetched>, Ring::Stop> Ring::pop_td(const GuestMemory& mem) {
  const uint64_t start = dequeue_;
  const bool start_cycle = cycle_;
  std::vector<Fetched> td;
  while (td.size() < kMaxTdTrbs) {
    auto f = pop(mem);
    if (!f) {
      // Half a TD (the producer is still writing) or a broken ring: consume nothing.
      dequeue_ = start;
      cycle_ = start_cycle;
      return std::unexpected(f.error());
    }
    td.push_back(*f);
    if (!f->trb.chain()) return td;
  }
  dequeue_ = start;
  cycle_ = start_cycle;
  return std::unexpected(Stop::kTdTooLong);
}

}  // namespace hc::xhci
