// SharedDevice: one backend usb::Device used by several VMs (ARCHITECTURE "SharedDevice").
// Each VM gets a DeviceView — a usb::Device of its own — that its VM adapter exports. This class
// is the façade: it owns the views and the parts that each decide one concern:
//  - ConfigArbiter: which VM's SET_CONFIGURATION / SET_INTERFACE reaches the device (per-view
//    alternate settings, refusals);
//  - ControlLock: class / vendor control transactions serialized per VM (OUT ... IN);
//  - FairAdmission: data URBs to the device in weighted fair shares;
//  - BandwidthAdmission: periodic bandwidth reserved on the device's bus (-ENOSPC refusals);
//  - TimeSlicePolicy: timeslice mode's turns, with each VM's device state saved and restored;
//  - IsoFanOut: isochronous IN fanned out — one VM's URBs drive the device and every VM that
//    streams the endpoint receives every packet;
//  - UvcSharing: cameras (UVC VideoStreaming interfaces) — while one VM streams, other VMs'
//    probe / commit requests are answered by vusbd and steer them to the stream in force; a
//    follower of a camera's stream joins at a frame start.
// A view's halts are its own (ViewState): SET_FEATURE(ENDPOINT_HALT) from one VM halts that VM's
// view of the endpoint only; a stall the device itself reports is remembered per view and cleared
// on the device when that VM clears it.
// Modes: kShared (all views at once), kExclusive (one VM holds it; others get "busy"),
// kTimeslice (all VMs import it and take turns; see TimeSlicePolicy).
//
// Owned by vusbd's device registry; views are owned by the SharedDevice and outlive their
// exports. Lives on vusbd's loop; timers come from the injected Timer, time from the injected
// Clock.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "schedulers/bus_reservations.h"
#include "usb/core/device.h"
#include "usb/core/loop_checker.h"
#include "vmm-frontend/sharing/bandwidth_admission.h"
#include "vmm-frontend/sharing/config_arbiter.h"
#include "vmm-frontend/sharing/control_lock.h"
#include "vmm-frontend/sharing/device_view.h"
#include "vmm-frontend/sharing/fair_admission.h"
#include "vmm-frontend/sharing/iso_fanout.h"
#include "vmm-frontend/sharing/timeslice_policy.h"
#include "vmm-frontend/sharing/uvc_sharing.h"

namespace vusbd {

class SharedDevice {
 public:
  enum class Mode { kExclusive, kShared, kTimeslice };
  using Timer = std::function<void(std::chrono::milliseconds, std::move_only_function<void()>)>;
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  SharedDevice(
      std::string name, Mode mode, Timer timer,
      std::chrono::milliseconds control_lock_timeout = std::chrono::milliseconds(200),
      std::chrono::milliseconds slice = std::chrono::milliseconds(100),
      Clock clock = [] { return std::chrono::steady_clock::now(); });
  ~SharedDevice();

  const std::string& name() const { return name_; }
  Mode mode() const { return mode_; }
  // A change applies to the next import: VMs that hold the device keep it. Leaving timeslice
  // mode sends every held URB on.
  void set_mode(Mode mode);
  // Timeslice mode: whose turn it is ("" when nobody's) and how many switches there were.
  std::string turn_holder() const { return timeslice_.holder(); }
  uint64_t turn_switches() const { return timeslice_.switches(); }
  TimeSlicePolicy::State timeslice_state() const { return timeslice_.state(); }
  // A VM's share of the device when it is busy (fair queue weight, ≥ 1).
  void set_weight(const std::string& vm, uint32_t weight);
  // URBs the device may hold at once before the fair queue decides who goes next: `depth` while
  // one VM sends, `contended` while several do (few, so the fair queue — not the order URBs
  // reach the device — decides whose turn it is).
  void set_device_queue_depth(size_t depth, size_t contended = 4) {
    fair_.set_depth(depth, contended);
  }
  // Periodic bandwidth admission: the configuration and alternate settings VMs select are
  // reserved on `bus` in `book` (vusbd's); one that would over-commit the bus is refused with
  // kNoBandwidth (-ENOSPC reaches the guest driver) and logged. nullptr: no admission.
  void set_bandwidth(sched::BusReservations* book, std::string bus) {
    bandwidth_.set_book(book, std::move(bus));
  }
  const std::string& bus() const { return bandwidth_.bus(); }
  // A host controller's admission before it configures endpoints (xHCI Configure Endpoint): the
  // endpoints `view`'s device would have. The interfaces and alternate settings they belong to
  // are reserved for the VM (as SET_CONFIGURATION / SET_INTERFACE would); kNoBandwidth (and
  // nothing changed) when the bus cannot take them.
  usb::Status admit_endpoints(DeviceView& view, std::span<const usb::EndpointDescriptor> eps) {
    return bandwidth_.admit_endpoints(view, eps);
  }
  size_t queued(const DeviceView& view) const { return fair_.queued(view); }
  // Isochronous IN packets this view received as copies of another VM's stream, and lost.
  IsoFanOut::FollowerStats fanout_stats(const DeviceView& view) const;
  // Camera sharing (nullptr unless the backend has VideoStreaming interfaces).
  const UvcSharing* uvc() const { return uvc_.get(); }
  // Told when a VM imports (true) or releases (false) its view.
  void on_hold_change(std::function<void(DeviceView&, bool)> fn) {
    on_hold_change_ = std::move(fn);
  }
  // The backend appears (import done) or goes away (nullptr). Views report connected() from it.
  void set_backend(usb::Device* backend);
  usb::Device* backend() const { return backend_; }

  // The view of one VM (created on first call).
  DeviceView& view(const std::string& vm, usb::DeviceLocation location);
  std::vector<DeviceView*> views() const;
  // The view of `vm`, or nullptr when it has none.
  DeviceView* find_view(const std::string& vm) const;

 private:
  friend class DeviceView;
  friend class BandwidthAdmission;
  friend class ConfigArbiter;
  friend class ControlLock;
  friend class FairAdmission;
  friend class TimeSlicePolicy;

  std::chrono::steady_clock::time_point now() const { return clock_(); }
  // A camera's probe / commit request (UvcSharing decides), and who else streams `interface`.
  void uvc_request(DeviceView& view, usb::Transfer& t);
  std::string uvc_streamer(const DeviceView& view, uint8_t interface) const;
  std::string holders_except(const DeviceView& view) const;
  bool others_hold(const DeviceView& view) const;
  // Endpoint descriptors of interface `interface` at `alternate` in the active configuration
  // (`config`: in that configuration).
  std::vector<usb::EndpointDescriptor> endpoints(uint8_t interface, uint8_t alternate,
                                                 std::optional<uint8_t> config = {}) const;
  IsoFanOut& fanout(uint8_t endpoint);
  // The device switched `interface` to `alternate`: its iso IN streams start afresh.
  void stream_restarted(uint8_t interface, uint8_t alternate);

  std::string name_;
  Mode mode_;
  Timer timer_;
  Clock clock_;
  usb::Device* backend_ = nullptr;
  std::map<std::string, std::unique_ptr<DeviceView>> views_;
  std::function<void(DeviceView&, bool)> on_hold_change_;
  std::unique_ptr<UvcSharing> uvc_;                        // set while the backend is a camera
  std::map<uint8_t, std::unique_ptr<IsoFanOut>> fanouts_;  // isochronous IN endpoints
  // The parts (see the class comment); each keeps a back reference to this façade.
  BandwidthAdmission bandwidth_{*this};
  ControlLock control_;
  ConfigArbiter config_{*this};
  FairAdmission fair_{*this};
  TimeSlicePolicy timeslice_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  usb::LoopChecker loop_;
};

}  // namespace vusbd
