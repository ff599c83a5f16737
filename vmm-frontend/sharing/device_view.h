// DeviceView: one VM's usb::Device for a SharedDevice — what that VM's adapter exports — and its
// usb::Claim (the VM imported / released it).
//  - fast path: standard requests a cache can answer (device and configuration descriptors,
//    GET_STATUS, GET_CONFIGURATION, GET_INTERFACE) are answered without a round trip to the
//    backend and counted as cache hits;
//  - its control pipe is serial, as a device's is: its ep0 requests complete in the order they
//    were submitted, cached answers included (usbtest case 10 checks FIFO order);
//  - halts and alternate settings are the VM's own (ViewState); SET_CONFIGURATION / SET_INTERFACE
//    go to SharedDevice's ConfigArbiter, class / vendor requests to its ControlLock (or, in
//    timeslice mode, its TimeSlicePolicy), data URBs to its FairAdmission, IsoFanOut or
//    TimeSlicePolicy; each completion returns to the VM that submitted it and is counted in
//    ViewStats.
//
// Owned by its SharedDevice; outlives its export. Lives on vusbd's loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <span>
#include <string>

#include "usb/core/claim.h"
#include "usb/core/device.h"
#include "vmm-frontend/sharing/fair_admission.h"
#include "vmm-frontend/sharing/timeslice_policy.h"
#include "vmm-frontend/sharing/view_state.h"

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
  // SharedDevice and its parts keep their per-VM state here and complete the VM's transfers.
  friend class SharedDevice;
  friend class BandwidthAdmission;
  friend class ConfigArbiter;
  friend class ControlLock;
  friend class FairAdmission;
  friend class TimeSlicePolicy;

  // To the backend as it is (zero copy).
  void forward(usb::Transfer& t);
  void run_control(usb::Transfer& t);
  void next_control();
  bool answer_from_cache(usb::Transfer& t);
  void complete_here(usb::Transfer& t, usb::Status status, size_t actual);
  void reply(usb::Transfer& t, std::span<const uint8_t> bytes);

  SharedDevice& shared_;
  std::string vm_;
  usb::DeviceLocation location_;
  ViewState state_;
  TimeSlicePolicy::Turn turn_;                // timeslice mode
  FairAdmission::Flow flow_;                  // shared and exclusive modes
  std::deque<usb::Transfer*> control_queue_;  // ep0 requests waiting for the one in progress
  bool control_busy_ = false;
  ViewStats stats_;
  bool held_ = false;
};

}  // namespace vusbd
