// IsoFanOut: one isochronous IN stream of a shared device delivered to every VM that streams it
// (the webcam in two VMs). The leader VM's URBs go to the device as they are (zero copy); each
// packet they bring back is also copied into every follower's packet queue, and followers' URBs —
// parked here, never sent to the device — complete as soon as their packets are in. So the device
// produces one stream at its own rate and every VM receives all of it.
//
// Leadership: the first VM to stream leads. When the leader has no URB left in flight (it
// stopped, or unplugged), the follower that has waited longest becomes the leader and its parked
// URBs go to the device; the old leader, if it streams again, follows. A follower that stops
// submitting keeps at most a few URBs' worth of packets (then loses the oldest, counted, as a
// late reader of an iso stream would); after 64 leader URBs without a URB of its own it stops
// receiving copies until it submits again.
//
// A camera's stream (set_uvc_payloads): every packet is a UVC payload, and a follower that joins
// (or comes back after it stopped receiving copies) starts at the first payload of a frame — one
// whose frame id (FID) differs from the stream's previous one — so its first buffer holds a whole
// frame, as it would had it started the camera itself. A frame starts where the FID toggles, after
// a payload with EOF, and at the first payload after the device (re)started the stream. The leader
// is held to the same rule whenever its stream may have lost payloads — it took over a running
// stream it had not followed, or one of its URBs ended without data (unlinked) — so it too starts
// at a frame: the packets before it reach the VM empty (Transfer::withhold_iso_packets). A
// follower promoted to leader after following every packet continues its frame. The packets
// skipped meanwhile are counted.
//
// Owned by SharedDevice, one per isochronous IN endpoint; lives on vusbd's loop.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "usb/core/transfer.h"

namespace vusbd {

class DeviceView;

class IsoFanOut {
 public:
  // Sends a leader URB to the device (the view unparks and submits it to the backend).
  using Forward = std::function<void(DeviceView&, usb::Transfer&)>;

  struct FollowerStats {
    uint64_t copied_packets = 0;   // packets received as copies of the leader's stream
    uint64_t dropped_packets = 0;  // packets lost because the follower fell behind
    uint64_t skipped_packets = 0;  // camera streams: packets before the first frame start
  };

  IsoFanOut(uint8_t endpoint, Forward forward);
  ~IsoFanOut();

  // A view's isochronous IN URB on this endpoint (state kIdle).
  void submit(DeviceView& view, usb::Transfer& t);
  // A parked follower URB: completes it with kCancelled and returns true.
  bool cancel(usb::Transfer& t);
  // The view stops streaming (release, unplug): its parked URBs complete with `status`.
  void drop_view(DeviceView& view, usb::Status status);
  // Every parked URB completes with `status` (the backend went away).
  void clear(usb::Status status);

  void set_uvc_payloads(bool on) { uvc_ = on; }
  // The device (re)started the stream (a SET_INTERFACE reached it): its next payload starts a
  // frame.
  void stream_restarted();
  const DeviceView* leader() const { return leader_; }
  size_t leader_in_flight() const { return leader_inflight_; }
  FollowerStats stats(const DeviceView& view) const;

 private:
  struct Packet {
    std::vector<uint8_t> data;
    usb::Status status = usb::Status::kOk;
    bool frame_start = false;  // camera streams: the first payload of a frame
  };
  struct Follower {
    std::deque<usb::Transfer*> parked;
    std::deque<Packet> fifo;
    uint64_t waiting_since = 0;  // order of the oldest parked URB (for promotion)
    size_t capacity = 64;        // packets kept while it has no URB parked
    uint32_t idle_rounds = 0;    // leader URBs completed while it had nothing parked
    bool active = true;
    bool synced = false;  // camera streams: it has seen a frame start
  };

  void lead(DeviceView& view, usb::Transfer& t);
  // A leader URB completed: its packets update the stream's frame state, are copied to the
  // followers and, while the leader is not in sync, withheld up to the first frame start.
  void on_leader_packets(usb::Transfer& t);
  // A leader URB ended without its data: where the stream stands is unknown.
  void payloads_lost();
  void fill(DeviceView& view);
  // Completes `t` with packets from the front of `fifo`, one per iso packet (packets beyond what
  // the fifo holds stay empty).
  static void deliver(usb::Transfer& t, std::deque<Packet>& fifo, FollowerStats& st);
  bool continues_stream(const DeviceView& view) const;
  void promote();
  void hand_over(DeviceView& view, bool then_promote);
  static void complete_parked(usb::Transfer& t, usb::Status status);

  uint8_t endpoint_;
  Forward forward_;
  DeviceView* leader_ = nullptr;
  size_t leader_inflight_ = 0;
  bool handing_over_ = false;
  uint64_t order_ = 0;
  std::map<DeviceView*, Follower> followers_;
  bool uvc_ = false;
  // Camera streams: the FID of the last payload seen (unknown after payloads were lost), whether
  // the next payload starts a frame (after EOF or a restart), and whether the leader's URBs are
  // in step with frame starts.
  std::optional<bool> last_fid_;
  bool boundary_ = true;
  bool leader_synced_ = false;
  std::map<const DeviceView*, FollowerStats> stats_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace vusbd
