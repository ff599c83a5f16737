// devices::EmulatedDevice: a chapter-9 engine for devices that live inside vusb. It serves the
// standard requests on endpoint 0 from descriptor tables (USB 2.0 ch. 9.4, USB 3.2 ch. 9.4), keeps
// the device state a host can observe (address, configuration, alternate settings, per-endpoint
// halt, remote wakeup) and hands everything else to a subclass through a few hooks.
//
// Ownership and threading: owned by whoever exports it (the usb-stub emulated source, vusbd's
// emulated backend, or a test). Single-threaded: every method, hook and completion runs on the
// owning daemon's loop (asserted with usb::LoopChecker in debug builds).
//
// Completion model:
//  - Completion may run inline, before submit() returns. Completions are funnelled through one
//    trampoline: a submit() made from inside a completion is completed after that completion
//    returns, so a completion that resubmits does not recurse without bound. Order stays FIFO.
//  - A subclass may keep a transfer pending (simply not call finish() from on_transfer()); the
//    engine keeps it in a per-endpoint FIFO. cancel() completes a pending transfer with
//    kCancelled exactly once; disconnect() completes every pending transfer with kNoDevice.
//  - Do not destroy the device from inside one of its completions.
//
// Choices a host can see (documented here because they differ between real devices):
//  - A non-control transfer to an endpoint that is not in the active configuration/alternate
//    setting completes with kStall (-EPIPE). Linux never submits such URBs itself (usbcore
//    rejects them with -ENOENT before they reach an HCD), so only a misbehaving peer sees this;
//    EPIPE keeps the peer's error path simple. A transfer whose type disagrees with the endpoint
//    descriptor completes with kInvalid (-EINVAL, what usb_submit_urb() reports for that).
//  - A short IN transfer (control, bulk, interrupt) with flags.short_not_ok completes with
//    kShortPacket; the data that did arrive is still returned.
//  - SET_ADDRESS is accepted and remembered, but requests are not refused in the default state:
//    USB/IP clients never forward SET_ADDRESS.
//  - Endpoints going away (SET_CONFIGURATION, SET_INTERFACE, reset) complete their pending
//    transfers with kNoDevice (-ESHUTDOWN, Linux's "endpoint disabled").
//  - Halt on endpoint 0 is accepted and ignored (USB 2.0 9.4.5: not recommended for ep0).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "usb/core/descriptors.h"
#include "usb/core/device.h"
#include "usb/core/loop_checker.h"
#include "usb/core/setup.h"
#include "usb/core/status.h"
#include "usb/core/transfer.h"
#include "usb/core/types.h"

namespace devices {

// Descriptor tables of an emulated device, one per speed it can run at. The set matching the
// speed the device runs at is served; for a high-speed device the full-speed set (derived from the
// high-speed one when absent) answers DEVICE_QUALIFIER and OTHER_SPEED_CONFIGURATION.
struct SpeedDescriptors {
  std::optional<usb::DescriptorSet> full_speed;
  std::optional<usb::DescriptorSet> high_speed;
  std::optional<usb::DescriptorSet> super_speed;  // also used for SuperSpeedPlus
};

// The descriptor set most emulated USB 2.0 devices start from: bcdUSB 2.00, a 64-byte EP0,
// bcdDevice 1.00, one configuration to add, strings 1 manufacturer, 2 product, 3 serial.
usb::DescriptorSet usb2_descriptor_set(uint16_t vendor_id, uint16_t product_id,
                                       std::string manufacturer, std::string product,
                                       std::string serial);

class EmulatedDevice : public usb::Device {
 public:
  EmulatedDevice(SpeedDescriptors descriptors, usb::Speed speed, usb::DeviceLocation location);
  ~EmulatedDevice() override;

  EmulatedDevice(const EmulatedDevice&) = delete;
  EmulatedDevice& operator=(const EmulatedDevice&) = delete;

  // --- usb::Device ---
  const usb::DescriptorSet& descriptors() const override { return *active_set_; }
  usb::Speed speed() const override { return speed_; }
  const usb::DeviceLocation& location() const override { return location_; }
  uint8_t active_configuration() const override { return configuration_; }
  uint8_t alternate_setting(uint8_t interface) const override;
  bool connected() const override { return connected_; }
  void submit(usb::Transfer& transfer) override;
  void cancel(usb::Transfer& transfer) override;
  void reset(usb::StatusCallback done) override;
  void set_configuration(uint8_t value, usb::StatusCallback done) override;
  void set_interface(uint8_t interface, uint8_t alternate, usb::StatusCallback done) override;
  void clear_halt(uint8_t endpoint, usb::StatusCallback done) override;
  void set_halt(uint8_t endpoint, usb::StatusCallback done) override;

  // Unplug: every pending transfer completes with kNoDevice, connected() turns false and every
  // later submit() completes with kNoDevice. Idempotent.
  void disconnect();

  // --- Observable state (tests, stats, the conformance runner) ---
  uint8_t address() const { return address_; }
  bool remote_wakeup_enabled() const { return remote_wakeup_; }
  // Halt state of an endpoint of the active alternate settings (false for unknown endpoints).
  bool endpoint_halted(uint8_t address) const;
  // How often the endpoint's data toggle / sequence number was reset (CLEAR_FEATURE(HALT),
  // SET_INTERFACE, SET_CONFIGURATION). Survives configuration changes.
  uint32_t toggle_resets(uint8_t address) const;
  // Transfers the device holds (accepted, not yet completed), over all endpoints.
  size_t pending_count() const;

 protected:
  // Outcome of a control request a subclass handled: kOk with the data stage length that moved,
  // or kStall to refuse (protocol stall; the device keeps answering the next SETUP).
  struct ControlReply {
    usb::Status status = usb::Status::kStall;
    size_t actual = 0;
  };
  static ControlReply ok(size_t actual = 0) { return {usb::Status::kOk, actual}; }
  static ControlReply stall() { return {usb::Status::kStall, 0}; }

  // --- Hooks (all run on the loop) ---
  // Class and vendor requests, and standard requests the engine does not implement (e.g.
  // GET_DESCRIPTOR aimed at an interface for class descriptors). `data` is the data stage: the
  // host's bytes for OUT, the buffer to fill for IN (already bounded by wLength). Synchronous.
  // Default: stall.
  virtual ControlReply on_control_request(const usb::SetupPacket& setup, std::span<uint8_t> data);
  // A transfer to an endpoint of the active alternate settings that is not halted. The transfer
  // has begun and sits in the endpoint's pending FIFO; complete it with finish(), now or later.
  // Default: completes with kStall.
  virtual void on_transfer(usb::Transfer& transfer, const usb::EndpointDescriptor& endpoint);
  // The engine is about to complete a pending transfer on its own (cancel, halt, disconnect,
  // endpoint disabled). Forget any per-transfer state; return how many bytes already moved.
  virtual size_t on_transfer_aborted(usb::Transfer& transfer);
  // After SET_CONFIGURATION / reset (value 0 = unconfigured) and after SET_INTERFACE.
  virtual void on_configuration_changed(uint8_t value);
  virtual void on_interface_changed(uint8_t interface, uint8_t alternate);
  // After the data toggle / sequence state of an endpoint was reset.
  virtual void on_toggle_reset(uint8_t address);

  // --- Helpers for subclasses ---
  // Completes a transfer the device accepted (removes it from its pending FIFO) exactly once.
  // Applies short_not_ok to IN transfers. Safe to call from inside on_transfer().
  void finish(usb::Transfer& transfer, usb::Status status, size_t actual);
  // Device-side halt (e.g. a sink that saw bad data): the endpoint stalls until the host clears
  // it; transfers pending on it complete with kStall. No-op for endpoints not active.
  void halt_endpoint(uint8_t address);
  // The endpoint's descriptor when it belongs to the active alternate settings.
  const usb::EndpointDescriptor* find_endpoint(uint8_t address) const;
  // Pending transfers on an endpoint, oldest first (empty for unknown endpoints).
  const std::deque<usb::Transfer*>& pending(uint8_t address) const;
  const usb::ConfigurationDescriptor* active_config() const;

  usb::LoopChecker loop_;

 private:
  struct EndpointState {
    const usb::EndpointDescriptor* descriptor = nullptr;
    uint8_t interface = 0;
    bool halted = false;
    std::deque<usb::Transfer*> pending;
  };
  struct Completion {
    usb::Transfer* transfer;
    usb::Status status;
    size_t actual;
  };
  // Marks an entry into the engine; the outermost exit runs queued completions (trampoline).
  class Scope;

  void build_blobs();
  void handle_control(usb::Transfer& transfer);
  ControlReply standard_request(const usb::SetupPacket& setup, std::span<uint8_t> data);
  ControlReply get_descriptor(const usb::SetupPacket& setup, std::span<uint8_t> data);
  ControlReply get_status(const usb::SetupPacket& setup, std::span<uint8_t> data);
  ControlReply feature(const usb::SetupPacket& setup, bool set);

  // State changes shared by the control requests and the Device methods. Each decides first
  // (returns kStall without touching anything when the request is invalid), then acts.
  usb::Status apply_configuration(uint8_t value);
  usb::Status apply_interface(uint8_t interface, uint8_t alternate);
  usb::Status apply_halt(uint8_t address, bool halt);
  void add_interface_endpoints(const usb::InterfaceDescriptor& interface);
  // Completes every pending transfer of one endpoint with `status` (after on_transfer_aborted).
  void abort_pending(EndpointState& endpoint, usb::Status status);
  void abort_all(usb::Status status);
  void reset_toggle(uint8_t address);
  void enqueue_completion(usb::Transfer& transfer, usb::Status status, size_t actual);
  void drain_completions();

  SpeedDescriptors sets_;
  usb::Speed speed_;
  usb::DeviceLocation location_;
  const usb::DescriptorSet* active_set_ = nullptr;
  std::optional<usb::DescriptorSet> other_speed_set_;  // HS devices: the full-speed tables

  // Prebuilt descriptor bytes.
  std::vector<uint8_t> device_blob_;
  std::vector<std::vector<uint8_t>> config_blobs_;  // by index
  std::vector<std::vector<uint8_t>> other_speed_blobs_;
  std::vector<uint8_t> qualifier_blob_;             // empty: stall
  std::vector<uint8_t> bos_blob_;                   // empty: stall
  std::vector<std::vector<uint8_t>> string_blobs_;  // [0] = LANGID table

  bool connected_ = true;
  uint8_t address_ = 0;
  uint8_t configuration_ = 0;
  bool remote_wakeup_ = false;
  uint16_t ss_device_features_ = 0;        // GET_STATUS bits 2..4: U1, U2, LTM enabled (SuperSpeed)
  std::map<uint8_t, uint8_t> alternates_;  // interface -> alternate setting
  std::map<uint8_t, EndpointState> endpoints_;  // active endpoints by address
  std::map<uint8_t, uint32_t> toggle_resets_;

  std::deque<Completion> completions_;
  int depth_ = 0;  // nesting of engine entries (Scope)
  bool draining_ = false;
};

}  // namespace devices
