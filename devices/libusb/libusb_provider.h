// LibusbProvider: the real USB devices of this host that match a filter, as a
// usb::DeviceProvider. vusb-stub makes one from `--libusb VID:PID|BUSID` (repeatable) or
// `--libusb-all`; vusbd uses it for local passthrough.
//
// Owns its LibusbContext (event thread), its LibusbDevices (unique_ptr) and one BlockingWorker
// that opens devices (libusb_open and descriptor reads block). Lives on the loop given to
// create(): observers are told there, devices live there. Discovery:
//  - libusb hotplug when the platform has it (Linux: udev or netlink): the callback, on the event
//    thread, only queues the libusb_device to the worker;
//  - otherwise a rescan every `rescan_interval` through the caller's Timer (no Asio here).
// Removal: hotplug "left", a rescan that misses the device, or a transfer that reports
// NO_DEVICE marks it disconnected; once its in-flight transfers have completed with kNoDevice
// the provider calls on_device_removed() and destroys it. Hubs are never taken.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "devices/libusb/blocking_worker.h"
#include "devices/libusb/device_filter.h"
#include "devices/libusb/libusb_context.h"
#include "devices/libusb/libusb_device.h"
#include "usb/core/device_provider.h"
#include "usb/core/loop_checker.h"

namespace devices {

struct ProviderSink;

class LibusbProvider final : public usb::DeviceProvider {
 public:
  // Schedules `fn` on the loop after `delay` (the daemon wraps an asio::steady_timer). `fn` may
  // run after the provider is gone; it then does nothing.
  using Timer = std::move_only_function<void(std::chrono::milliseconds delay,
                                             std::move_only_function<void()> fn)>;

  struct Options {
    // A device is taken when any filter matches it. Empty: nothing is taken.
    std::vector<DeviceFilter> filters;
    // Use libusb hotplug when available; false forces rescans (tests, odd platforms).
    bool use_hotplug = true;
    // For rescans without hotplug; without a timer there is only the initial scan.
    Timer timer;
    std::chrono::milliseconds rescan_interval{1000};
    // Runs on the loop once the initial enumeration has finished (every matching device opened
    // or given up on) with the number of devices then provided.
    std::move_only_function<void(size_t device_count)> on_initial_scan_done;
    LibusbDevice::Options device;
    LibusbContext::Options context;
  };

  // Creates the context and starts discovery. Fails only if libusb cannot initialise.
  static usb::Result<std::unique_ptr<LibusbProvider>> create(usb::Executor& loop, Options options);
  // Tells observers about every device (on_device_removed), closes the devices, stops the event
  // thread. On the loop.
  ~LibusbProvider() override;

  std::vector<usb::Device*> devices() const override;
  bool uses_hotplug() const { return hotplug_registered_; }
  LibusbContext& context() const { return *context_; }

 private:
  LibusbProvider(usb::Executor& loop, std::unique_ptr<LibusbContext> context, Options options);
  void start();

  static int hotplug_callback(libusb_context* ctx, libusb_device* device, int event,
                              void* user_data);
  // Worker.
  void arrived_on_worker(libusb_device* device);
  void left_on_worker(libusb_device* device);
  void rescan_on_worker();
  // Loop.
  void drain_arrivals();
  void on_left(libusb_device* device);
  void remove(LibusbDevice* device);
  void schedule_rescan();

  usb::Executor& loop_;
  std::unique_ptr<LibusbContext> context_;  // first member: destroyed last (libusb_exit)
  Options options_;
  std::shared_ptr<ProviderSink> sink_;  // posted tasks and timers reach the provider through it
  BlockingWorker worker_;
  bool hotplug_registered_ = false;
  int hotplug_handle_ = 0;

  // Worker only (rescan mode): every device seen, referenced so pointers stay unique.
  std::map<libusb_device*, LibusbDeviceRef> known_;
  // Opened on the worker, not yet handed to the loop.
  std::mutex arrivals_mu_;
  std::vector<std::unique_ptr<LibusbDevice>> arrivals_;  // guarded by arrivals_mu_
  // Loop.
  std::vector<std::unique_ptr<LibusbDevice>> devices_;
  usb::LoopChecker loop_checker_;
};

}  // namespace devices
