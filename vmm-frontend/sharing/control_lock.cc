#include "vmm-frontend/sharing/control_lock.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd {

using usb::Status;
using usb::Transfer;

ControlLock::ControlLock(SharedDevice& shared, std::chrono::milliseconds timeout)
    : shared_(shared), timeout_(timeout) {}

void ControlLock::submit(DeviceView& view, Transfer& t) {
  if (owner_ && owner_ != &view) {
    // Another VM is between its class/vendor OUT and IN: wait, cancellable (parked here).
    t.park(&view);
    waiting_.push_back({&view, &t});
    return;
  }
  const bool out = t.setup.direction() == usb::Direction::kOut;
  if (out && owner_ != &view) {
    owner_ = &view;
    const uint64_t gen = ++generation_;
    shared_.timer_(timeout_, [this, gen, alive = shared_.alive_] {
      if (!*alive || owner_ == nullptr || generation_ != gen) return;
      spdlog::debug("vusbd: {}: {}'s control transaction timed out; releasing", shared_.name(),
                    owner_->vm());
      release();
    });
  }
  const uint64_t gen = generation_;
  t.add_completion_observer([this, &view, gen, alive = shared_.alive_](Transfer& x) {
    if (*alive) on_done(view, x, gen);
  });
  view.forward(t);
}

void ControlLock::on_done(DeviceView& view, const Transfer& t, uint64_t generation) {
  if (owner_ != &view || generation_ != generation) return;
  // The owner's IN closes its transaction; a failed OUT never opened one the device remembers.
  if (t.setup.direction() == usb::Direction::kIn || t.status() != Status::kOk) release();
}

void ControlLock::release() {
  owner_ = nullptr;
  ++generation_;
  while (!owner_ && !waiting_.empty()) {
    Waiting w = waiting_.front();
    waiting_.pop_front();
    w.transfer->unpark();
    submit(*w.view, *w.transfer);
  }
}

bool ControlLock::cancel(Transfer& t) {
  auto it = std::find_if(waiting_.begin(), waiting_.end(),
                         [&](const Waiting& w) { return w.transfer == &t; });
  if (it == waiting_.end()) return false;
  DeviceView* view = it->view;
  waiting_.erase(it);
  view->complete_here(t, Status::kCancelled, 0);
  return true;
}

void ControlLock::drop(Status status) {
  owner_ = nullptr;
  ++generation_;
  // Parked transfers belong to the VM adapters: give them back.
  while (!waiting_.empty()) {
    Waiting w = waiting_.front();
    waiting_.pop_front();
    w.view->complete_here(*w.transfer, status, 0);
  }
}

}  // namespace vusbd
