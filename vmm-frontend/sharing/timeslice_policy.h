// TimeSlicePolicy: a SharedDevice's timeslice mode. Every VM imports the device and believes it
// has it to itself: their data transfers and class/vendor control requests take turns,
// sched::TimeSlicer decides whose turn it is, and the others' URBs are held — not failed — until
// their turn. Each VM has its own configuration, alternate settings and halts: SET_CONFIGURATION
// / SET_INTERFACE outside its turn are recorded, not refused.
//
// The policy's state:
//   kOff         not in timeslice mode (no TimeSlicer);
//   kServing     a turn is being served (or nobody's: the next URB takes the device);
//   kQuiescing   the holder's turn is over: its URBs at the device are waited for, and what is
//                still out after 100 ms is cancelled (the VM sees it unlinked);
//   kRestoring   a turn begins: the device is brought to the incoming VM's state — the outgoing
//                VM's class state (usb::Device::save_class_state, e.g. Gadget Zero's control
//                buffer) is saved, its device-side halts cleared, the incoming VM's configuration
//                and alternate settings set and its class state restored;
//   kHandingOver the incoming VM's held URBs go out (their completions must not start another
//                switch meanwhile).
// Every change goes through transition(), which refuses (and logs) one the table does not allow.
// A class/vendor OUT keeps the turn until its IN (for up to the control lock timeout), because a
// device whose class state vusbd cannot save (a remote one) would answer another VM's IN.
//
// Owned by SharedDevice; lives on vusbd's loop; timers and clock are SharedDevice's.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "schedulers/timeslice.h"
#include "usb/core/device.h"

namespace vusbd {

class DeviceView;
class SharedDevice;

class TimeSlicePolicy {
 public:
  enum class State : uint8_t { kOff, kServing, kQuiescing, kRestoring, kHandingOver };

  // One VM's timeslice state (a DeviceView member).
  struct Turn {
    struct Held {
      usb::Transfer* transfer;
      std::chrono::steady_clock::time_point since;
    };
    // Its own device state (configuration unset: it follows the device).
    std::optional<uint8_t> config;
    std::map<uint8_t, uint8_t> alts;
    std::vector<uint8_t> class_state;  // saved when its turn ended
    bool has_class_state = false;
    std::deque<Held> waiting;                           // data URBs waiting for its turn
    std::vector<usb::Transfer*> at_device;              // its URBs at the device now
    std::chrono::steady_clock::time_point txn_until{};  // an open class/vendor transaction
    void forget_device_state() {
      config.reset();
      alts.clear();
      has_class_state = false;
    }
  };

  TimeSlicePolicy(SharedDevice& shared, std::chrono::milliseconds slice, bool on);

  State state() const { return state_; }
  // Whether the table allows `from` → `to`.
  static bool allowed(State from, State to);
  // Moves to `to` when allowed (logged at debug); otherwise logs an error and stays.
  bool transition(State to);

  // Entering / leaving timeslice mode (SharedDevice::set_mode). Leaving sends every held URB on.
  void start();
  void stop();
  std::string holder() const;
  uint64_t switches() const { return slicer_ ? slicer_->switches() : 0; }

  // A data URB or class/vendor request of `view`: sent in its turn, or held.
  void submit(DeviceView& view, usb::Transfer& t);
  // `t` was held: it completes with kCancelled. False when it is not held here.
  bool cancel(DeviceView& view, usb::Transfer& t);
  // SET_CONFIGURATION / SET_INTERFACE: recorded for the VM, applied to the device when its state
  // is the device's (now, or when its turn begins).
  void set_configuration(DeviceView& view, uint8_t value, usb::StatusCallback done);
  void set_interface(DeviceView& view, uint8_t interface, uint8_t alternate,
                     usb::StatusCallback done);
  // Whether `view`'s state is the device's now (its SET_* requests go to the device at once).
  bool state_in_device(const DeviceView& view) const {
    return state_ != State::kRestoring && (state_owner_ == &view || state_owner_ == nullptr);
  }

  // The device appeared: its class state is what a VM that never had a turn finds.
  void device_appeared(usb::Device& device) { initial_class_state_ = device.save_class_state(); }
  // The device went away: turns start afresh, a restore under way is abandoned.
  void device_gone();
  // Every VM's own device state is forgotten (the mode changes).
  void forget_device_states();
  // `view`'s VM let the device go: its device state is forgotten.
  void forget(DeviceView& view);
  // `view`'s VM let the device go: its held URBs are cancelled and, if it had the turn, the next
  // VM's turn begins at once.
  void leave(DeviceView& view);
  // Every held URB completes with `status`.
  void release_all_held(usb::Status status);

 private:
  void send_in_turn(DeviceView& view, usb::Transfer& t);
  void consider_switch();
  void finish_switch();
  void arm_slice_timer();
  DeviceView* turn_view() const;  // the view whose turn it is, if any
  // A turn begins: bring the device to `view`'s state, then send what it holds.
  void begin_turn(DeviceView& view);
  void restore_state(DeviceView& in, std::move_only_function<void()> done);

  SharedDevice& shared_;
  std::chrono::milliseconds slice_;
  State state_ = State::kOff;
  std::unique_ptr<sched::TimeSlicer> slicer_;  // set unless kOff
  DeviceView* state_owner_ = nullptr;          // whose state the device is in
  std::vector<uint8_t> initial_class_state_;   // the device's, when it appeared
  std::chrono::steady_clock::time_point armed_for_{};
  // Bumped to abandon a restore, a quiesce's grace timer, a slice or transaction timer.
  uint64_t restore_generation_ = 0;
  uint64_t switch_generation_ = 0;
  uint64_t timer_generation_ = 0;
  uint64_t txn_timer_generation_ = 0;
};

const char* to_string(TimeSlicePolicy::State state);

}  // namespace vusbd
