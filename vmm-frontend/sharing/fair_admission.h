// FairAdmission: which VM's data URB (bulk, interrupt, isochronous OUT) goes to a SharedDevice
// next. At most `depth` URBs are at the device at once (32 while one VM sends, `contended` — 4 —
// while several do: few, so this queue and not the order URBs reach the device decides whose
// turn it is); beyond that they wait in a weighted fair queue (sched::FairQueue: deficit round
// robin in bytes, per-VM weights), so each busy VM gets its weight's share of the device's bytes
// and one VM's deep queue cannot starve another's. A VM whose own queue is full (1024 URBs) gets
// -ENOMEM (kNoMemory); the others are not affected.
//
// Owned by SharedDevice (shared and exclusive modes; timeslice turns use TimeSlicePolicy); lives
// on vusbd's loop.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "schedulers/fair_queue.h"
#include "usb/core/transfer.h"

namespace vusbd {

class DeviceView;
class SharedDevice;

class FairAdmission {
 public:
  // What the queue charges a URB shorter than this (a zero-length one included).
  static constexpr size_t kMinUrbCost = 512;

  // One VM's share: its flow in the queue and its URBs at the device (a DeviceView member).
  struct Flow {
    uint32_t id = 0;
    size_t inflight = 0;
  };

  explicit FairAdmission(SharedDevice& shared);

  // A new view: its flow, weight 1.
  void add(DeviceView& view);
  void set_weight(DeviceView& view, uint32_t weight);
  void set_depth(size_t depth, size_t contended) {
    max_inflight_ = depth ? depth : 1;
    contended_inflight_ = std::min(max_inflight_, contended ? contended : 1);
  }
  size_t queued(const DeviceView& view) const;
  // A data URB of `view`: to the device now, or queued (parked, cancellable).
  void submit(DeviceView& view, usb::Transfer& t);
  // `t` was queued: it completes with kCancelled. False when it is not queued here.
  bool cancel(DeviceView& view, usb::Transfer& t);
  // Every queued URB of `view` completes with `status` (its VM left, the device went away).
  void flush(DeviceView& view, usb::Status status);

 private:
  struct Queued {
    DeviceView* view;
    usb::Transfer* transfer;
    std::chrono::steady_clock::time_point since;
  };
  void send(DeviceView& view, usb::Transfer& t);
  void drain();
  // URBs the device may hold now: fewer while several VMs are busy.
  size_t window() const;

  SharedDevice& shared_;
  sched::FairQueue<Queued> queue_{{.quantum = 16 * 1024, .max_queued_per_flow = 1024}};
  size_t inflight_ = 0;
  size_t max_inflight_ = 32;
  size_t contended_inflight_ = 4;
};

}  // namespace vusbd
