#include "vmm-frontend/sharing/fair_admission.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd {

using usb::Status;
using usb::Transfer;

FairAdmission::FairAdmission(SharedDevice& shared) : shared_(shared) {}

void FairAdmission::add(DeviceView& view) {
  view.flow_.id = queue_.add_flow(1);
}

void FairAdmission::set_weight(DeviceView& view, uint32_t weight) {
  queue_.set_weight(view.flow_.id, weight);
}

size_t FairAdmission::queued(const DeviceView& view) const {
  return queue_.queued(view.flow_.id);
}

size_t FairAdmission::window() const {
  size_t busy = 0;
  for (const auto& [_, v] : shared_.views_)
    busy += (v->flow_.inflight || queue_.queued(v->flow_.id)) ? 1 : 0;
  return busy > 1 ? contended_inflight_ : max_inflight_;
}

void FairAdmission::submit(DeviceView& view, Transfer& t) {
  // Fast path: the device has room and nobody waits.
  if (queue_.queued() == 0 &&
      inflight_ < (view.flow_.inflight == inflight_ ? max_inflight_ : contended_inflight_))
    return send(view, t);
  t.park(&view);
  // A URB costs at least one packet's worth: zero-length URBs are not free (they would never
  // use up a flow's credit, and one VM's flood of them would starve the others).
  const size_t cost = std::clamp<size_t>(t.length(), kMinUrbCost, UINT32_MAX);
  if (!queue_.push(view.flow_.id, {&view, &t, shared_.now()}, static_cast<uint32_t>(cost))) {
    if (view.stats_.queue_full++ % 1000 == 0)
      spdlog::warn("vusbd: {}: {} has {} URBs waiting for the device; refusing more (-ENOMEM)",
                   shared_.name(), view.vm(), queue_.queued(view.flow_.id));
    return view.complete_here(t, Status::kNoMemory, 0);
  }
}

void FairAdmission::send(DeviceView& view, Transfer& t) {
  ++inflight_;
  ++view.flow_.inflight;
  t.add_completion_epilogue([this, &view, alive = shared_.alive_] {
    if (!*alive) return;
    --inflight_;
    --view.flow_.inflight;
    drain();
  });
  view.forward(t);
}

void FairAdmission::drain() {
  while (queue_.queued() && inflight_ < window()) {
    auto next = queue_.pop();
    if (!next) return;
    Queued q = next->second;
    q.view->stats_.queue_wait += shared_.now() - q.since;
    q.transfer->unpark();
    send(*q.view, *q.transfer);
  }
}

bool FairAdmission::cancel(DeviceView& view, Transfer& t) {
  if (!queue_.take_if(view.flow_.id, [&](const Queued& q) { return q.transfer == &t; }))
    return false;
  view.complete_here(t, Status::kCancelled, 0);
  return true;
}

void FairAdmission::flush(DeviceView& view, Status status) {
  while (auto q = queue_.take_if(view.flow_.id, [](const Queued&) { return true; }))
    view.complete_here(*q->transfer, status, 0);
}

}  // namespace vusbd
