#include "vmm-frontend/sharing/iso_fanout.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "usb/uvc/uvc_abi.h"
#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd {

using usb::Status;
using usb::Transfer;

namespace {
constexpr uint32_t kIdleRoundsBeforeInactive = 64;
constexpr size_t kMinCapacity = 64;
}  // namespace

IsoFanOut::IsoFanOut(uint8_t endpoint, Forward forward)
    : endpoint_(endpoint), forward_(std::move(forward)) {}

IsoFanOut::~IsoFanOut() {
  *alive_ = false;
  clear(Status::kNoDevice);
}

void IsoFanOut::complete_parked(Transfer& t, Status status) {
  t.unpark();
  t.complete(status, 0);
}

void IsoFanOut::submit(DeviceView& view, Transfer& t) {
  if (leader_ == nullptr || leader_ == &view || leader_inflight_ == 0) {
    if (leader_ != &view) {
      if (leader_)
        spdlog::info("vusbd: iso IN {:#04x}: {} leads the stream (was {})", endpoint_, view.vm(),
                     leader_->vm());
      leader_ = &view;
      leader_synced_ = continues_stream(view);
      // A view that leads is no follower: its parked URBs go to the device first.
      hand_over(view, /*then_promote=*/false);
    }
    return lead(view, t);
  }
  Follower& f = followers_[&view];
  if (f.parked.empty()) f.waiting_since = ++order_;
  if (!f.active) f.synced = false;  // it missed copies: join again at a frame start
  f.active = true;
  f.idle_rounds = 0;
  f.capacity = std::max(kMinCapacity, 4 * t.iso_packets.size());
  t.park(&view);
  f.parked.push_back(&t);
  fill(view);
}

void IsoFanOut::lead(DeviceView& view, Transfer& t) {
  ++leader_inflight_;
  t.add_completion_observer([this, alive = alive_](Transfer& x) {
    if (!*alive) return;
    if (x.status() == Status::kOk)
      on_leader_packets(x);
    else
      payloads_lost();
  });
  t.add_completion_epilogue([this, alive = alive_] {
    if (!*alive) return;
    --leader_inflight_;
    if (leader_inflight_ == 0 && !handing_over_) promote();
  });
  forward_(view, t);
}

void IsoFanOut::stream_restarted() {
  last_fid_.reset();
  boundary_ = true;
}

void IsoFanOut::payloads_lost() {
  if (!uvc_) return;
  last_fid_.reset();
  boundary_ = false;
  leader_synced_ = false;
}

bool IsoFanOut::continues_stream(const DeviceView& view) const {
  // A follower that received every copy so far continues the stream where its copies end.
  auto it = followers_.find(const_cast<DeviceView*>(&view));
  return it != followers_.end() && it->second.active && it->second.synced &&
         stats(view).dropped_packets == 0;
}

void IsoFanOut::on_leader_packets(Transfer& t) {
  const auto buffer = t.buffer();
  auto bytes_of = [&](const usb::IsoPacket& p) -> std::span<const uint8_t> {
    const size_t n = std::min<size_t>(p.actual_length, p.length);
    if (p.offset > buffer.size() || n > buffer.size() - p.offset) return {};
    return buffer.subspan(p.offset, n);
  };
  // Camera streams: which packets start a frame. UVC payload header (2.4.3.3): bHeaderLength,
  // then bmHeaderInfo with FID (bit 0) and EOF (bit 1). Tracked even while nobody follows, so a
  // VM that joins is compared with the stream's real state.
  std::vector<bool> starts;
  std::optional<size_t> first_start;
  if (uvc_) {
    starts.assign(t.iso_packets.size(), false);
    for (size_t i = 0; i < t.iso_packets.size(); ++i) {
      const auto d = bytes_of(t.iso_packets[i]);
      if (d.size() < 2 || d[0] < 2 || d[0] > d.size()) continue;
      const bool fid = (d[1] & usb::uvc::header::kFid) != 0;
      starts[i] = boundary_ || (last_fid_ && *last_fid_ != fid);
      last_fid_ = fid;
      boundary_ = (d[1] & usb::uvc::header::kEof) != 0;
      if (starts[i] && !first_start) first_start = i;
    }
  }
  // The followers get every packet (each finds its own frame start); copied before the leader's
  // own packets are withheld.
  std::vector<Packet> packets;
  if (!followers_.empty()) {
    packets.reserve(t.iso_packets.size());
    for (size_t i = 0; i < t.iso_packets.size(); ++i) {
      const auto d = bytes_of(t.iso_packets[i]);
      packets.push_back({.data = {d.begin(), d.end()},
                         .status = t.iso_packets[i].status,
                         .frame_start = uvc_ && starts[i]});
    }
  }
  if (uvc_ && !leader_synced_) {
    const size_t skip = first_start.value_or(t.iso_packets.size());
    t.withhold_iso_packets(skip);
    if (leader_) stats_[leader_].skipped_packets += skip;
    leader_synced_ = first_start.has_value();
  }
  if (followers_.empty()) return;
  // Completing a follower's URB runs its VM adapter's code: look each follower up again.
  std::vector<DeviceView*> views;
  for (auto& [view, _] : followers_) views.push_back(view);
  for (DeviceView* view : views) {
    if (view == leader_) continue;  // being handed the stream: its URBs go to the device
    auto it = followers_.find(view);
    if (it == followers_.end()) continue;
    Follower& f = it->second;
    if (!f.active) continue;
    if (f.parked.empty() && ++f.idle_rounds > kIdleRoundsBeforeInactive) {
      f.active = false;
      stats_[view].dropped_packets += f.fifo.size();
      f.fifo.clear();
      continue;
    }
    auto from = packets.begin();
    if (uvc_ && !f.synced) {
      from = std::find_if(packets.begin(), packets.end(),
                          [](const Packet& p) { return p.frame_start; });
      stats_[view].skipped_packets += static_cast<uint64_t>(from - packets.begin());
      f.synced = from != packets.end();
    }
    f.fifo.insert(f.fifo.end(), from, packets.end());
    fill(*view);
    it = followers_.find(view);
    if (it == followers_.end()) continue;
    while (it->second.parked.empty() && it->second.fifo.size() > it->second.capacity) {
      it->second.fifo.pop_front();
      ++stats_[view].dropped_packets;
    }
  }
}

void IsoFanOut::fill(DeviceView& view) {
  // A completion runs the VM adapter's code, which may submit again or drop the view: look the
  // follower up afresh for every URB.
  for (;;) {
    auto it = followers_.find(&view);
    if (it == followers_.end()) return;
    Follower& f = it->second;
    if (f.parked.empty() || f.fifo.size() < f.parked.front()->iso_packets.size()) return;
    Transfer& t = *f.parked.front();
    f.parked.pop_front();
    if (!f.parked.empty()) f.waiting_since = ++order_;
    deliver(t, f.fifo, stats_[&view]);
  }
}

void IsoFanOut::deliver(Transfer& t, std::deque<Packet>& fifo, FollowerStats& st) {
  auto buffer = t.buffer();
  size_t total = 0;
  for (usb::IsoPacket& p : t.iso_packets) {
    p.actual_length = 0;
    p.status = Status::kOk;
    if (fifo.empty()) continue;  // nothing was sent in this interval
    Packet packet = std::move(fifo.front());
    fifo.pop_front();
    ++st.copied_packets;
    if (p.offset > buffer.size() || p.length > buffer.size() - p.offset) {
      p.status = Status::kInvalid;
      continue;
    }
    const size_t n = std::min<size_t>(packet.data.size(), p.length);
    if (n) std::memcpy(buffer.data() + p.offset, packet.data.data(), n);
    p.actual_length = static_cast<uint32_t>(n);
    // A packet longer than this VM's slot is what a device babbling into it would give.
    p.status = packet.data.size() > p.length ? Status::kBabble : packet.status;
    total += n;
  }
  // Per-packet statuses carry any failure, as for any iso URB.
  t.unpark();
  t.complete(Status::kOk, total);
}

void IsoFanOut::promote() {
  Follower* next = nullptr;
  DeviceView* view = nullptr;
  for (auto& [v, f] : followers_)
    if (!f.parked.empty() && (!next || f.waiting_since < next->waiting_since)) next = &f, view = v;
  if (!next) return;
  spdlog::info("vusbd: iso IN {:#04x}: {} stopped streaming; {} leads now", endpoint_,
               leader_ ? leader_->vm() : std::string("nobody"), view->vm());
  leader_ = view;
  leader_synced_ = continues_stream(*view);
  hand_over(*view, /*then_promote=*/true);
}

void IsoFanOut::hand_over(DeviceView& view, bool then_promote) {
  // One URB at a time from the follower's own queue, so a cancel meanwhile still finds the rest
  // there; no promotion while handing over, even if a URB completes at once.
  const bool outer = !handing_over_;
  handing_over_ = true;
  // Copies it received but could not use yet (too few for its next URB) are not thrown away: its
  // oldest parked URB takes them, the rest of its packets empty, as when a device sent nothing.
  if (auto it = followers_.find(&view);
      it != followers_.end() && !it->second.fifo.empty() && !it->second.parked.empty()) {
    Transfer* t = it->second.parked.front();
    it->second.parked.pop_front();
    auto fifo = std::move(it->second.fifo);
    it->second.fifo.clear();
    FollowerStats& st = stats_[&view];
    const size_t take = std::min(fifo.size(), t->iso_packets.size());
    st.dropped_packets += fifo.size() - take;
    fifo.resize(take);
    deliver(*t, fifo, st);
  }
  for (;;) {
    auto it = followers_.find(&view);
    if (it == followers_.end() || it->second.parked.empty()) break;
    Transfer* t = it->second.parked.front();
    it->second.parked.pop_front();
    lead(view, *t);
  }
  if (auto it = followers_.find(&view); it != followers_.end()) {
    stats_[&view].dropped_packets += it->second.fifo.size();  // of no use to a leader
    followers_.erase(it);
  }
  if (!outer) return;
  handing_over_ = false;
  if (then_promote && leader_inflight_ == 0) promote();
}

bool IsoFanOut::cancel(Transfer& t) {
  for (auto& [view, f] : followers_) {
    auto it = std::find(f.parked.begin(), f.parked.end(), &t);
    if (it == f.parked.end()) continue;
    f.parked.erase(it);
    complete_parked(t, Status::kCancelled);
    return true;
  }
  return false;
}

void IsoFanOut::drop_view(DeviceView& view, Status status) {
  if (auto it = followers_.find(&view); it != followers_.end()) {
    auto parked = std::move(it->second.parked);
    followers_.erase(it);
    for (Transfer* t : parked) complete_parked(*t, status);
  }
  if (leader_ == &view && leader_inflight_ == 0) leader_ = nullptr;
}

void IsoFanOut::clear(Status status) {
  stream_restarted();  // the next stream is another one
  auto followers = std::move(followers_);
  followers_.clear();
  for (auto& [view, f] : followers)
    for (Transfer* t : f.parked) complete_parked(*t, status);
  if (leader_inflight_ == 0) leader_ = nullptr;
}

IsoFanOut::FollowerStats IsoFanOut::stats(const DeviceView& view) const {
  auto it = stats_.find(&view);
  return it == stats_.end() ? FollowerStats{} : it->second;
}

}  // namespace vusbd
