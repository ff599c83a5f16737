// Claim: the owner of a device's say in who may use it. An export table asks it before it hands
// the device to an importer (try_acquire) and tells it when the importer lets go (release).
// vusbd's DeviceView implements it — a device in exclusive mode is offered to several VMs but
// held by one at a time — and any VM adapter that hands a device to a guest takes the claim the
// same way. Called on the loop the device lives on.
#pragma once

namespace usb {

class Claim {
 public:
  virtual ~Claim() = default;
  // True when the caller may use the device now; then release() follows exactly once.
  virtual bool try_acquire() = 0;
  virtual void release() = 0;
};

}  // namespace usb
