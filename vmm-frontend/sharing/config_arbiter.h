// ConfigArbiter: which VM's SET_CONFIGURATION / SET_INTERFACE reaches a SharedDevice.
//  - Configuration: the value in force succeeds (a cache hit); an unconfigured device takes the
//    first value asked for; a change of a configured device while another VM holds it is refused
//    with a stall — what a real device's refusal looks like to the guest — and logged with both
//    VMs' names.
//  - Alternate settings are kept per view (ViewState): the device is switched when every other
//    VM's endpoints exist in the new setting ("others fit"; the others keep the setting they
//    chose, now a virtual one); otherwise the request is granted to this VM alone when its
//    endpoints already exist in the device's setting (Gadget Zero's alt 1 is alt 0 plus iso
//    endpoints); otherwise it is refused like a configuration.
//  - Both pass BandwidthAdmission first. In timeslice mode they go to TimeSlicePolicy instead
//    (each VM has its own configuration there).
// Changes of device state run one at a time, so two VMs' decisions never race on a state that
// is still changing.
//
// Owned by SharedDevice; lives on vusbd's loop.
#pragma once

#include <deque>
#include <functional>

#include "usb/core/device.h"

namespace vusbd {

class DeviceView;
class SharedDevice;

class ConfigArbiter {
 public:
  explicit ConfigArbiter(SharedDevice& shared);

  void set_configuration(DeviceView& view, uint8_t value, usb::StatusCallback done);
  void set_interface(DeviceView& view, uint8_t interface, uint8_t alternate,
                     usb::StatusCallback done);

 private:
  // Runs `op` when the change before it is done; `op` calls op_done() once.
  void serialize(std::move_only_function<void()> op);
  void op_done();
  void configure(DeviceView& view, uint8_t value, usb::StatusCallback done);
  void select_alternate(DeviceView& view, uint8_t interface, uint8_t alternate,
                        usb::StatusCallback done);

  SharedDevice& shared_;
  std::deque<std::move_only_function<void()>> ops_;
  bool op_busy_ = false;
};

}  // namespace vusbd
