// hc::OrphanStore: transfers a controller function gave up on — an endpoint stopped, a slot
// disabled, a queue head unlinked, a device unplugged — while a device or a sharing layer may
// still hold them. The store owns them until they complete; every transfer's completion holds a
// reference to the store, so an orphan outlives even the function that abandoned it.
// Owned (shared) by one function and its transfers' completions; used on the controller's loop.
#pragma once

#include <algorithm>
#include <memory>
#include <vector>

#include "usb/core/transfer.h"

namespace hc {

class OrphanStore {
 public:
  // Takes `t` and asks whoever holds it to give it back (Transfer::cancel reaches the parking
  // holder or the device; either may complete it at once). A completed transfer is dropped.
  static void adopt(const std::shared_ptr<OrphanStore>& store, std::unique_ptr<usb::Transfer> t) {
    if (!t || t->state() == usb::Transfer::State::kCompleted) return;
    usb::Transfer& ref = *t;
    store->list_.push_back(std::move(t));
    ref.cancel();
  }
  // Every completion asks first: true, and the transfer is destroyed, when it was an orphan
  // (Transfer::complete has moved the completion out, so that is allowed).
  bool release(usb::Transfer& t) {
    auto it =
        std::find_if(list_.begin(), list_.end(), [&](const auto& p) { return p.get() == &t; });
    if (it == list_.end()) return false;
    list_.erase(it);
    return true;
  }
  size_t size() const { return list_.size(); }

 private:
  std::vector<std::unique_ptr<usb::Transfer>> list_;
};

}  // namespace hc
