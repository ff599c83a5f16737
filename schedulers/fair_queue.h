// FairQueue: deficit round robin (Shreedhar & Varghese) across flows — one flow per VM on a
// shared device or bus — in bytes, weighted. Each backlogged flow gets `quantum × weight` bytes of
// credit per round, so its share of the bytes served is its weight over the sum of the weights
// of the backlogged flows, and a flow with queued work waits at most one round for its turn.
// O(1) per decision (amortized: an item larger than a flow's credit waits a round or more).
// Queues are bounded per flow: push() refuses when that flow's queue is full, so one VM pushes
// back on itself and never grows memory for the others. Pure logic, no clock, no I/O.
// Owned by whatever it decides for (a shared device, a controller's bus); lives on its loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

namespace sched {

template <typename Item>
class FairQueue {
 public:
  using FlowId = uint32_t;
  struct Options {
    uint32_t quantum = 16 * 1024;      // bytes of credit per round for weight 1
    size_t max_queued_per_flow = 256;  // items
  };
  struct FlowStats {
    uint64_t served_items = 0;
    uint64_t served_bytes = 0;
    uint64_t refused = 0;  // push() found the queue full
  };

  FairQueue() = default;
  explicit FairQueue(Options options) : options_(options) {}

  // A new flow with weight ≥ 1 (0 is taken as 1).
  FlowId add_flow(uint32_t weight = 1) {
    FlowId id;
    if (!free_.empty()) {
      id = free_.back();
      free_.pop_back();
      flows_[id] = Flow{};
    } else {
      id = static_cast<FlowId>(flows_.size());
      flows_.emplace_back();
    }
    flows_[id].weight = weight ? weight : 1;
    flows_[id].live = true;
    return id;
  }

  // Drops the flow and what it had queued (returned, in order, for the caller to fail).
  std::vector<Item> remove_flow(FlowId id) {
    std::vector<Item> out;
    Flow& f = flows_[id];
    for (auto& e : f.queue) out.push_back(std::move(e.item));
    if (!f.queue.empty()) std::erase(active_, id);
    if (last_idled_ && last_idled_->first == id) last_idled_.reset();
    f = Flow{};
    free_.push_back(id);
    return out;
  }

  void set_weight(FlowId id, uint32_t weight) { flows_[id].weight = weight ? weight : 1; }

  // Takes the first queued item of flow `id` that `pred` accepts out of the queue (a cancelled
  // request); linear in that flow's queue, which is bounded.
  template <typename Pred>
  std::optional<Item> take_if(FlowId id, Pred pred) {
    Flow& f = flows_[id];
    for (auto it = f.queue.begin(); it != f.queue.end(); ++it) {
      if (!pred(it->item)) continue;
      Item out = std::move(it->item);
      f.queue.erase(it);
      --queued_;
      if (f.queue.empty()) {
        std::erase(active_, id);
        f.deficit = 0;
        f.credited = false;
      }
      return out;
    }
    return std::nullopt;
  }

  // Queues `item` of `bytes` for flow `id`; false when that flow's queue is full.
  bool push(FlowId id, Item item, uint32_t bytes) {
    Flow& f = flows_[id];
    if (f.queue.size() >= options_.max_queued_per_flow) {
      ++f.stats.refused;
      return false;
    }
    if (f.queue.empty()) active_.push_back(id);
    f.queue.push_back({std::move(item), bytes});
    ++queued_;
    return true;
  }

  // Queues `item` for a flow whose queue the last pop() emptied, as if it had never emptied: the
  // flow keeps its place at the head of the round and its remaining credit. For work that
  // serving the last item made ready at once (a controller's next TD on a ring whose device
  // completed the previous one inline) — the flow was backlogged all along. Otherwise a plain
  // push().
  bool push_continuing(FlowId id, Item item, uint32_t bytes) {
    Flow& f = flows_[id];
    if (!last_idled_ || last_idled_->first != id || !f.queue.empty())
      return push(id, std::move(item), bytes);
    f.deficit = last_idled_->second;
    f.credited = true;
    last_idled_.reset();
    f.queue.push_back({std::move(item), bytes});
    ++queued_;
    active_.push_front(id);
    return true;
  }

  // The next item to serve and its flow; nullopt when nothing is queued.
  std::optional<std::pair<FlowId, Item>> pop() {
    while (!active_.empty()) {
      const FlowId id = active_.front();
      Flow& f = flows_[id];
      if (!f.credited) {  // its turn in this round begins
        f.deficit += uint64_t{options_.quantum} * f.weight;
        f.credited = true;
      }
      Entry& head = f.queue.front();
      if (head.bytes <= f.deficit) {
        f.deficit -= head.bytes;
        ++f.stats.served_items;
        f.stats.served_bytes += head.bytes;
        std::pair<FlowId, Item> out{id, std::move(head.item)};
        f.queue.pop_front();
        --queued_;
        last_idled_.reset();
        if (f.queue.empty()) {  // an idle flow keeps no credit
          last_idled_.emplace(id, f.deficit);
          f.deficit = 0;
          f.credited = false;
          active_.pop_front();
        }
        return out;
      }
      // Not enough credit left: its turn ends, the credit carries over to the next round.
      f.credited = false;
      active_.pop_front();
      active_.push_back(id);
    }
    return std::nullopt;
  }

  size_t queued() const { return queued_; }
  size_t queued(FlowId id) const { return flows_[id].queue.size(); }
  const FlowStats& stats(FlowId id) const { return flows_[id].stats; }

 private:
  struct Entry {
    Item item;
    uint32_t bytes;
  };
  struct Flow {
    std::deque<Entry> queue;
    uint64_t deficit = 0;
    uint32_t weight = 1;
    bool credited = false;
    bool live = false;
    FlowStats stats;
  };

  Options options_;
  std::vector<Flow> flows_;
  std::optional<std::pair<FlowId, uint64_t>> last_idled_;  // emptied by the last pop(): credit
  std::vector<FlowId> free_;
  std::deque<FlowId> active_;  // flows with queued items, in round order
  size_t queued_ = 0;
};

}  // namespace sched
