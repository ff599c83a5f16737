// SharedDevice: one backend usb::Device used by several VMs (ARCHITECTURE "SharedDevice").
// Each VM gets a DeviceView — a usb::Device of its own — that its VM adapter exports:
//  - fast path: standard requests a cache can answer (device and configuration descriptors,
//    GET_STATUS, GET_CONFIGURATION, GET_INTERFACE) are answered without a round trip to the
//    backend and counted as cache hits;
//  - arbitration: SET_CONFIGURATION to the value in force succeeds; a change while another VM
//    holds the device is refused with a stall (what a real device's refusal looks like to the
//    guest) and logged with both VMs' names. Alternate settings are kept per view: the device is
//    switched when every other VM's endpoints exist in the new setting; otherwise the request is
//    granted to this VM alone when its endpoints already exist in the device's setting (Gadget
//    Zero's alt 1 is alt 0 plus iso endpoints); otherwise it is refused like a configuration;
//  - each view's control pipe is serial, as a device's is: its ep0 requests complete in the
//    order they were submitted, cached answers included (usbtest case 10 checks FIFO order);
//  - halt state is kept per view: SET_FEATURE(ENDPOINT_HALT) from one VM halts that VM's view of
//    the endpoint only; a stall the device itself reports is remembered per view and cleared on
//    the device when that VM clears it;
//  - class / vendor control requests are serialized per VM transaction: a VM's class/vendor OUT
//    opens a transaction that its next class/vendor IN closes (command / response pairs such as
//    Gadget Zero's 0x5b / 0x5c); other VMs' class/vendor requests wait, not fail, meanwhile. A
//    transaction with no IN closes after `control_lock_timeout`;
//  - bulk, interrupt and isochronous OUT transfers go to the backend as they are (zero copy);
//    each completion returns to the VM that submitted it, and per-view stats count it. At most
//    `device_queue_depth` of them are at the device at once (32 while one VM sends, 4 while
//    several do); beyond that they wait in a weighted fair queue (sched::FairQueue, deficit round
//    robin in bytes, per-VM weights), so each busy VM gets its weight's share of the device's
//    bytes and one VM's deep queue cannot starve another's; a VM whose own queue is full (1024
//    URBs) gets -ENOMEM;
//  - periodic bandwidth (set_bandwidth): a configuration or alternate setting whose interrupt and
//    isochronous endpoints the bus cannot take is refused with -ENOSPC, what Linux's EHCI driver
//    answers an over-committing periodic URB (a VM's own xHCI driver would refuse the
//    SET_INTERFACE before sending it; over USB/IP the request reaches vusbd, which answers);
//  - isochronous IN is fanned out (IsoFanOut): one VM's URBs drive the device and every VM that
//    streams the endpoint receives every packet;
//  - cameras (UVC VideoStreaming interfaces): while one VM streams, other VMs' probe / commit
//    requests are answered by vusbd and steer them to the stream in force (UvcSharing); a
//    follower of a camera's stream joins at a frame start.
// Modes: kShared (all views at once), kExclusive (one VM holds it; others get "busy"),
// kTimeslice (all VMs import it and each believes it has the device to itself: their data
// transfers and class/vendor control requests take turns, sched::TimeSlicer decides whose turn it
// is; the others' URBs are held — not failed — until their turn; a switch waits for the holder's
// in-flight URBs, cancelling what is still out after 100 ms. Each VM has its own configuration,
// alternate settings and halts: SET_CONFIGURATION / SET_INTERFACE outside its turn are recorded,
// not refused. When a turn begins the device is brought to that VM's state — the outgoing VM's
// class state (usb::Device::save_class_state, e.g. Gadget Zero's control buffer) is saved, its
// device-side halts cleared, the incoming VM's configuration and alternate settings set and its
// class state restored — before its held URBs go out).
//
// Owned by vusbd's device registry; views are owned by the SharedDevice and outlive their
// exports. Lives on vusbd's loop; timers come from the injected Timer.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "schedulers/bus_reservations.h"
#include "schedulers/fair_queue.h"
#include "schedulers/timeslice.h"
#include "usb/core/claim.h"
#include "usb/core/device.h"
#include "usb/core/loop_checker.h"
#include "vmm-frontend/sharing/iso_fanout.h"
#include "vmm-frontend/sharing/uvc_sharing.h"

namespace vusbd {

struct ViewStats {
  uint64_t urbs = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t cache_hits = 0;
  uint64_t stalls = 0;      // completions with kStall (usbtest expects many)
  uint64_t errors = 0;      // completions with any other status than ok / cancelled / stall
  uint64_t refused = 0;     // arbitration refusals (stalls vusbd answered)
  uint64_t turns = 0;       // timeslice: turns this VM was given
  uint64_t queue_full = 0;  // URBs refused because this VM's fair-queue share was full
  std::chrono::nanoseconds queue_wait{0};  // time URBs waited in the fair queue
  std::chrono::nanoseconds held_time{0};   // timeslice: time URBs waited for this VM's turn
  std::chrono::nanoseconds latency_total{0};
};

class SharedDevice;

class DeviceView : public usb::Device, public usb::Claim {
 public:
  DeviceView(SharedDevice& shared, std::string vm, usb::DeviceLocation location);
  ~DeviceView() override;

  const std::string& vm() const { return vm_; }
  const ViewStats& stats() const { return stats_; }
  bool held() const { return held_; }
  // The VM-local address (from the AddressMap); changed only while the view is not exported.
  void set_location(usb::DeviceLocation location) { location_ = std::move(location); }

  // usb::Device
  const usb::DescriptorSet& descriptors() const override;
  usb::Speed speed() const override;
  const usb::DeviceLocation& location() const override { return location_; }
  uint8_t active_configuration() const override;
  uint8_t alternate_setting(uint8_t interface) const override;
  bool connected() const override;
  void submit(usb::Transfer& transfer) override;
  void cancel(usb::Transfer& transfer) override;
  void reset(usb::StatusCallback done) override;
  void set_configuration(uint8_t value, usb::StatusCallback done) override;
  void set_interface(uint8_t interface, uint8_t alternate, usb::StatusCallback done) override;
  void clear_halt(uint8_t endpoint, usb::StatusCallback done) override;
  void set_halt(uint8_t endpoint, usb::StatusCallback done) override;
  bool performs_standard_requests() const override { return true; }

  // usb::Claim: the VM imported / released this view.
  bool try_acquire() override;
  void release() override;

  // Periodic bandwidth for `eps` on the device's bus, asked by a register-level VM adapter before
  // the guest configures them (xHCI Configure Endpoint): kOk or kNoBandwidth.
  usb::Status admit_endpoints(std::span<const usb::EndpointDescriptor> eps);

 private:
  friend class SharedDevice;
  enum class Halt : uint8_t { kNone, kVirtual, kDevice };
  struct Held {
    usb::Transfer* transfer;
    std::chrono::steady_clock::time_point since;
  };

  void forward(usb::Transfer& t);
  void do_set_configuration(uint8_t value, usb::StatusCallback done);
  void do_set_interface(uint8_t interface, uint8_t alternate, usb::StatusCallback done);
  void run_control(usb::Transfer& t);
  void next_control();
  bool answer_from_cache(usb::Transfer& t);
  void complete_here(usb::Transfer& t, usb::Status status, size_t actual);
  void reply(usb::Transfer& t, std::span<const uint8_t> bytes);

  SharedDevice& shared_;
  std::string vm_;
  usb::DeviceLocation location_;
  std::map<uint8_t, Halt> halts_;
  std::map<uint8_t, uint8_t> alts_;  // this VM's alternate settings, where they differ
  // Timeslice mode: this VM's own device state (configuration unset: it follows the device).
  std::optional<uint8_t> ts_config_;
  std::map<uint8_t, uint8_t> ts_alts_;
  std::vector<uint8_t> class_state_;  // saved when its turn ended
  bool has_class_state_ = false;
  void timeslice_set_configuration(uint8_t value, usb::StatusCallback done);
  void timeslice_set_interface(uint8_t interface, uint8_t alternate, usb::StatusCallback done);
  std::deque<usb::Transfer*> control_queue_;  // ep0 requests waiting for the one in progress
  bool control_busy_ = false;
  ViewStats stats_;
  bool held_ = false;
  // The VM's flow in the device's fair queue, and its URBs at the device.
  uint32_t flow_ = 0;
  size_t inflight_ = 0;
  // Timeslice mode: data URBs waiting for this VM's turn, and those at the device now.
  std::deque<Held> waiting_turn_;
  std::vector<usb::Transfer*> at_device_;
  std::chrono::steady_clock::time_point txn_until_{};  // an open class/vendor transaction
};

class SharedDevice {
 public:
  enum class Mode { kExclusive, kShared, kTimeslice };
  using Timer = std::function<void(std::chrono::milliseconds, std::move_only_function<void()>)>;

  SharedDevice(std::string name, Mode mode, Timer timer,
               std::chrono::milliseconds control_lock_timeout = std::chrono::milliseconds(200),
               std::chrono::milliseconds slice = std::chrono::milliseconds(100));
  ~SharedDevice();

  const std::string& name() const { return name_; }
  Mode mode() const { return mode_; }
  // A change applies to the next import: VMs that hold the device keep it. Leaving timeslice
  // mode sends every held URB on.
  void set_mode(Mode mode);
  // Timeslice mode: whose turn it is ("" when nobody's) and how many switches there were.
  std::string turn_holder() const;
  uint64_t turn_switches() const { return slicer_ ? slicer_->switches() : 0; }
  // A VM's share of the device when it is busy (fair queue weight, ≥ 1).
  void set_weight(const std::string& vm, uint32_t weight);
  // URBs the device may hold at once before the fair queue decides who goes next: `depth` while
  // one VM sends, `contended` while several do (few, so the fair queue — not the order URBs
  // reach the device — decides whose turn it is).
  void set_device_queue_depth(size_t depth, size_t contended = 4) {
    max_device_inflight_ = depth ? depth : 1;
    contended_device_inflight_ = std::min(max_device_inflight_, contended ? contended : 1);
  }
  // Periodic bandwidth admission: the configuration and alternate settings VMs select are
  // reserved on `bus` in `book` (vusbd's); one that would over-commit the bus is refused with
  // kNoBandwidth (-ENOSPC reaches the guest driver) and logged. nullptr: no admission.
  void set_bandwidth(sched::BusReservations* book, std::string bus) {
    book_ = book;
    bus_ = std::move(bus);
  }
  const std::string& bus() const { return bus_; }
  // A host controller's admission before it configures endpoints (xHCI Configure Endpoint): the
  // endpoints `view`'s device would have. The interfaces and alternate settings they belong to
  // are reserved for the VM (as SET_CONFIGURATION / SET_INTERFACE would); kNoBandwidth (and
  // nothing changed) when the bus cannot take them.
  usb::Status admit_endpoints(DeviceView& view, std::span<const usb::EndpointDescriptor> eps);
  size_t queued(const DeviceView& view) const { return fair_.queued(view.flow_); }
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
  struct Waiting {
    DeviceView* view;
    usb::Transfer* transfer;
  };

  // Class/vendor control transactions (see the class comment).
  void submit_control(DeviceView& view, usb::Transfer& t);
  // A camera's probe / commit request (UvcSharing decides), and who else streams `interface`.
  void uvc_request(DeviceView& view, usb::Transfer& t);
  std::string uvc_streamer(const DeviceView& view, uint8_t interface) const;
  std::unique_ptr<UvcSharing> uvc_;  // set while the backend is a camera
  void on_control_done(DeviceView& view, const usb::Transfer& t, uint64_t generation);
  void release_control_lock();
  bool cancel_waiting(usb::Transfer& t);
  // Changes of device state (configuration, alternate settings, reset) run one at a time, so
  // two VMs' decisions never race on a state that is still changing. `op` calls op_done() once.
  void serialize(std::move_only_function<void()> op);
  void op_done();
  std::string holders_except(const DeviceView& view) const;
  bool others_hold(const DeviceView& view) const;
  // Endpoint descriptors of interface `interface` at `alternate` in the active configuration
  // (`config`: in that configuration).
  std::vector<usb::EndpointDescriptor> endpoints(uint8_t interface, uint8_t alternate,
                                                 std::optional<uint8_t> config = {}) const;
  // Bandwidth admission (see set_bandwidth): kOk or kNoBandwidth (refusal counted and logged).
  usb::Status admit_configuration(DeviceView& view, uint8_t value);
  usb::Status admit_interface(DeviceView& view, uint8_t interface, uint8_t alternate);
  // Re-reserves what `view` uses now (after a refusal or a failed change).
  void readmit(DeviceView& view);
  sched::BusReservations* book_ = nullptr;
  std::string bus_;

  std::string name_;
  Mode mode_;
  Timer timer_;
  std::chrono::milliseconds lock_timeout_;
  usb::Device* backend_ = nullptr;
  std::map<std::string, std::unique_ptr<DeviceView>> views_;
  DeviceView* control_owner_ = nullptr;
  uint64_t lock_generation_ = 0;
  std::deque<Waiting> control_waiting_;
  std::deque<std::move_only_function<void()>> ops_;
  bool op_busy_ = false;
  std::function<void(DeviceView&, bool)> on_hold_change_;
  IsoFanOut& fanout(uint8_t endpoint);
  // The device switched `interface` to `alternate`: its iso IN streams start afresh.
  void stream_restarted(uint8_t interface, uint8_t alternate);
  // Fair scheduling of data URBs (see the class comment).
  struct Queued {
    DeviceView* view;
    usb::Transfer* transfer;
    std::chrono::steady_clock::time_point since;
  };
  void schedule(DeviceView& view, usb::Transfer& t);
  void send_scheduled(DeviceView& view, usb::Transfer& t);
  void drain_fair_queue();
  void flush_fair_queue(DeviceView& view, usb::Status status);
  sched::FairQueue<Queued> fair_{{.quantum = 16 * 1024, .max_queued_per_flow = 1024}};
  size_t device_inflight_ = 0;
  size_t max_device_inflight_ = 32;
  size_t contended_device_inflight_ = 4;
  size_t device_window() const;
  // Timeslice mode (see the class comment).
  void timeslice_submit(DeviceView& view, usb::Transfer& t);
  void send_in_turn(DeviceView& view, usb::Transfer& t);
  void consider_switch();
  void finish_switch();
  void arm_slice_timer();
  void release_all_held(usb::Status status);
  DeviceView* turn_view() const;  // the view whose turn it is, if any
  // A turn begins: bring the device to `view`'s state (see the class comment), then send what
  // it holds.
  void begin_turn(DeviceView& view);
  void restore_state(DeviceView& in, std::move_only_function<void()> done);
  // Whether `view`'s state is the device's now (its SET_* requests go to the device at once).
  bool state_in_device(const DeviceView& view) const {
    return !restoring_ && (state_owner_ == &view || state_owner_ == nullptr);
  }
  DeviceView* state_owner_ = nullptr;         // whose state the device is in (timeslice)
  std::vector<uint8_t> initial_class_state_;  // the device's, when it appeared
  bool restoring_ = false;
  uint64_t restore_generation_ = 0;
  std::unique_ptr<sched::TimeSlicer> slicer_;
  std::chrono::milliseconds slice_;
  bool switching_ = false;
  bool handing_over_ = false;
  std::chrono::steady_clock::time_point armed_for_{};
  uint64_t switch_generation_ = 0;
  uint64_t timer_generation_ = 0;
  uint64_t txn_timer_generation_ = 0;
  std::map<uint8_t, std::unique_ptr<IsoFanOut>> fanouts_;  // isochronous IN endpoints
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  usb::LoopChecker loop_;
};

}  // namespace vusbd
