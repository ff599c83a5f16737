// LibusbDevice: a real USB device reached through libusb (usbfs on Linux), as a usb::Device.
//
// Owned by a LibusbProvider (or a tool that opened it); it must be destroyed before its
// LibusbContext. Lives on the context's loop: every method is called there and every callback
// runs there. Three other threads touch it, each only through a narrow door:
//  - libusb's event handling (the context's event thread, or a worker inside a synchronous
//    libusb call) runs on_libusb_done(), which only counts the URB back and posts to the loop;
//  - the device's BlockingWorker runs the blocking libusb calls (reset, set_configuration,
//    set_interface, clear_halt, set_halt, interface claiming) and posts results to the loop;
//  - open() itself blocks (GET_DESCRIPTOR control transfers) and runs on the caller's worker.
//
// Interfaces: kernel drivers are detached and every interface of the active configuration is
// claimed at open, after set_configuration and after reset; on close they are released and the
// detached kernel drivers re-attached. Standard SET_CONFIGURATION / SET_INTERFACE /
// CLEAR_FEATURE(ENDPOINT_HALT) submitted as control transfers are routed to the matching
// operation (as the Linux usbip host driver does), so the kernel's view stays right.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "devices/libusb/blocking_worker.h"
#include "devices/libusb/libusb_context.h"
#include "usb/core/device.h"
#include "usb/core/loop_checker.h"

struct libusb_transfer;

namespace devices {

class Urb;
struct UrbSink;

class LibusbDevice final : public usb::Device {
 public:
  struct Options {
    // Detach kernel drivers from and claim every interface of the active configuration.
    bool claim_interfaces = true;
    // On close, hand interfaces we detached back to their kernel drivers.
    bool reattach_kernel_drivers = true;
    // Descriptor reads at open and the synchronous standard requests (set_halt).
    std::chrono::milliseconds control_timeout{1000};
  };

  // Opens `device` and reads its descriptors: device (libusb's cache), every configuration (raw
  // GET_DESCRIPTOR, else rebuilt from libusb's parsed copy), BOS (USB >= 2.01) and strings (best
  // effort). BLOCKS: call it on a worker, never on the loop or from a libusb callback.
  // Errors: kAccess-style failures are kIo with the libusb error in the message; a vanished
  // device is kClosed.
  static usb::Result<std::unique_ptr<LibusbDevice>> open(LibusbContext& context,
                                                         libusb_device* device);
  static usb::Result<std::unique_ptr<LibusbDevice>> open(LibusbContext& context,
                                                         libusb_device* device, Options options);
  ~LibusbDevice() override;  // shutdown(), release interfaces, re-attach drivers, close

  // --- usb::Device ---
  const usb::DescriptorSet& descriptors() const override { return descriptors_; }
  usb::Speed speed() const override { return speed_; }
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

  // --- For the owner (loop) ---
  // The libusb_device this handle belongs to (identity for hotplug "left" events).
  libusb_device* libusb_dev() const { return device_.get(); }
  // The device is gone (hotplug or rescan said so): connected() becomes false and in-flight
  // transfers are cancelled; they complete with kNoDevice.
  void mark_disconnected();
  // Runs (posted, on the loop) once the device is disconnected — told, or seen through a
  // LIBUSB_TRANSFER_NO_DEVICE — every transfer it had in flight has completed and no blocking
  // call (a reset, a SET_CONFIGURATION) is still running on its worker: the owner may then tell
  // observers and destroy the device without the destructor waiting for anything. Runs at most
  // once.
  void set_on_gone(std::move_only_function<void()> on_gone);
  // Ends all activity: stops the worker (a blocking call in progress finishes), cancels every
  // URB, waits until libusb has given each one back (bounded; normally a few ms, usbfs discards
  // URBs synchronously) and completes the transfers with kNoDevice. Idempotent; the destructor
  // calls it. This is the one place the loop waits, and only at teardown.
  void shutdown();

 private:
  // libusb transfer callback, on whichever thread handles libusb events: counts the URB back and
  // posts on_urb_done to the loop.
  static void on_libusb_done(libusb_transfer* transfer);

  // Interfaces claimed and kernel drivers detached. Touched only by worker jobs, open() and the
  // destructor (after the worker has stopped), never concurrently.
  struct Claims {
    bool detach_kernel_drivers = true;
    std::set<uint8_t> claimed;
    std::set<uint8_t> detached;
    void claim(libusb_device_handle* handle, const std::vector<uint8_t>& interfaces);
    void release_all(libusb_device_handle* handle);
  };

  LibusbDevice(LibusbContext& context, LibusbDeviceRef device, LibusbHandle handle,
               usb::DescriptorSet descriptors, usb::Speed speed, usb::DeviceLocation location,
               Options options);

  std::vector<uint8_t> interfaces_of(uint8_t configuration) const;
  // Runs `work` on the worker with the handle, then `done` with its libusb result on the loop
  // (dropped if the device is destroyed first).
  void run_blocking(std::move_only_function<int(libusb_device_handle*, Claims&)> work,
                    std::move_only_function<void(int)> done);
  bool intercept(usb::Transfer& transfer);
  void finish_intercepted(usb::Transfer& transfer, usb::Status status);
  void on_urb_done(Urb* urb);
  void lost();  // connected_ = false, cancel URBs
  void check_gone();
  void fire_gone();

  LibusbContext& context_;
  const Options options_;
  LibusbDeviceRef device_;
  LibusbHandle handle_;
  const usb::DescriptorSet descriptors_;
  const usb::Speed speed_;
  const usb::DeviceLocation location_;
  Claims claims_;
  // Shared with URBs in flight and posted tasks; its `device` is cleared at shutdown.
  std::shared_ptr<UrbSink> sink_;
  BlockingWorker worker_;

  // Loop state.
  bool connected_ = true;
  bool shut_down_ = false;
  bool gone_posted_ = false;
  size_t blocking_jobs_ = 0;  // run_blocking jobs whose result has not come back yet
  uint8_t active_config_ = 0;
  std::map<uint8_t, uint8_t> alt_settings_;
  std::unordered_map<usb::Transfer*, std::unique_ptr<Urb>> in_flight_;
  std::unordered_set<usb::Transfer*> intercepted_;  // control requests routed to an operation
  std::move_only_function<void()> on_gone_;
  usb::LoopChecker loop_;
};

}  // namespace devices
