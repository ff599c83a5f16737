// ViewState: what one VM believes about the device that the device itself does not hold for it —
// its endpoint halts and, where they differ from the device's, its alternate settings.
//
// A halt is kept per VM: SET_FEATURE(ENDPOINT_HALT) from one VM halts that VM's view of the
// endpoint only (kVirtual); a stall the device itself reports is remembered (kDevice) so that
// the VM's CLEAR_FEATURE reaches the device. An alternate setting is recorded here while the VM
// uses one the device is not in (ConfigArbiter grants those when the VM's endpoints exist in the
// device's setting).
//
// Owned by its DeviceView (a member); read and changed by SharedDevice's parts on vusbd's loop.
#pragma once

#include <cstdint>
#include <map>
#include <optional>

namespace vusbd {

class ViewState {
 public:
  enum class Halt : uint8_t { kNone, kVirtual, kDevice };

  Halt halt(uint8_t endpoint) const;
  bool halted(uint8_t endpoint) const { return halt(endpoint) != Halt::kNone; }
  const std::map<uint8_t, Halt>& halts() const { return halts_; }
  // SET_FEATURE(ENDPOINT_HALT) from the VM: its view of the endpoint only.
  void set_virtual_halt(uint8_t endpoint) { halts_[endpoint] = Halt::kVirtual; }
  // The device completed one of this VM's transfers with a stall: the device halted the
  // endpoint itself (a halt the VM set stays virtual).
  void device_stalled(uint8_t endpoint);
  // CLEAR_FEATURE(ENDPOINT_HALT): the halt is gone; returns what it was.
  Halt clear_halt(uint8_t endpoint);
  void clear_halts() { halts_.clear(); }

  // The VM's own alternate setting of `interface`, when it differs from the device's.
  std::optional<uint8_t> alternate(uint8_t interface) const;
  bool has_alternate(uint8_t interface) const { return alts_.contains(interface); }
  void set_alternate(uint8_t interface, uint8_t alternate) { alts_[interface] = alternate; }
  // The VM follows the device's setting of `interface` again.
  void follow_device(uint8_t interface) { alts_.erase(interface); }
  void clear_alternates() { alts_.clear(); }

 private:
  std::map<uint8_t, Halt> halts_;
  std::map<uint8_t, uint8_t> alts_;  // only where they differ from the device's
};

}  // namespace vusbd
