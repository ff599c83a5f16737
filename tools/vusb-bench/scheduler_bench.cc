// vusb-bench schedulers: the cost of one fair-scheduling decision (sched::FairQueue, deficit
// round robin) with 2 to 1024 VMs all backlogged, and Jain's fairness index of the bytes each VM
// got, equal weights, random sizes 512 B .. 64 KiB. Baseline in the same run: a plain FIFO
// (std::deque push + pop) — what any queue costs without fairness.
#include <benchmark/benchmark.h>

#include <deque>
#include <numeric>
#include <random>
#include <vector>

#include "schedulers/fair_queue.h"

namespace {

std::vector<uint32_t> sizes(size_t n) {
  std::mt19937 rng(42);
  std::uniform_int_distribution<uint32_t> d(512, 65536);
  std::vector<uint32_t> out(n);
  for (auto& s : out) s = d(rng);
  return out;
}

void BM_FairQueueDecision(benchmark::State& state) {
  const auto vms = static_cast<uint32_t>(state.range(0));
  sched::FairQueue<uint32_t> q;
  std::vector<uint32_t> flows;
  for (uint32_t i = 0; i < vms; ++i) flows.push_back(q.add_flow(1));
  const auto sz = sizes(4096);
  size_t k = 0;
  for (uint32_t f : flows)
    for (int i = 0; i < 4; ++i) q.push(f, f, sz[k++ % sz.size()]);
  for (auto _ : state) {
    // One decision, then the served VM submits again (it stays backlogged).
    auto next = q.pop();
    benchmark::DoNotOptimize(next);
    q.push(next->first, next->second, sz[k++ % sz.size()]);
  }
  std::vector<double> bytes;
  for (uint32_t f : flows) bytes.push_back(double(q.stats(f).served_bytes));
  const double sum = std::accumulate(bytes.begin(), bytes.end(), 0.0);
  double sq = 0;
  for (double b : bytes) sq += b * b;
  state.counters["jain"] = sq > 0 ? sum * sum / (double(bytes.size()) * sq) : 0;
  state.SetItemsProcessed(int64_t(state.iterations()));
}

void BM_FifoBaseline(benchmark::State& state) {
  std::deque<std::pair<uint32_t, uint32_t>> q;
  const auto sz = sizes(4096);
  size_t k = 0;
  for (int i = 0; i < 4 * state.range(0); ++i) q.emplace_back(i, sz[k++ % sz.size()]);
  for (auto _ : state) {
    auto next = q.front();
    q.pop_front();
    benchmark::DoNotOptimize(next);
    q.emplace_back(next.first, sz[k++ % sz.size()]);
  }
  state.SetItemsProcessed(int64_t(state.iterations()));
}

}  // namespace

BENCHMARK(BM_FairQueueDecision)->RangeMultiplier(4)->Range(2, 1024)->ArgName("vms");
BENCHMARK(BM_FifoBaseline)->Arg(2)->Arg(1024)->ArgName("vms");
