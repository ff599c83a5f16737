// LibusbContext: owns one libusb_context (RAII) and the ONE thread that runs libusb's event
// handling for it. libusb invokes transfer and hotplug callbacks on whichever thread handles
// events — normally this event thread, sometimes a worker inside a synchronous libusb call — so
// every callback in devices/libusb only records what happened and posts to the loop executor;
// nothing above devices/libusb ever runs on the event thread.
//
// Owned by whoever owns the LibusbDevices using it (a LibusbProvider, or a tool); it must
// outlive them and the loop executor must outlive it. Created and destroyed on the loop.
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "usb/core/error.h"
#include "usb/core/executor.h"

struct libusb_context;
struct libusb_device;
struct libusb_device_handle;

namespace devices {

// RAII for libusb handles: a reference on a libusb_device, an open device handle.
struct LibusbUnrefDevice {
  void operator()(libusb_device* device) const;
};
using LibusbDeviceRef = std::unique_ptr<libusb_device, LibusbUnrefDevice>;
// Takes a new reference on `device`.
LibusbDeviceRef ref_libusb_device(libusb_device* device);

struct LibusbCloseHandle {
  void operator()(libusb_device_handle* handle) const;
};
using LibusbHandle = std::unique_ptr<libusb_device_handle, LibusbCloseHandle>;

class LibusbContext {
 public:
  struct Options {
    // LIBUSB_LOG_LEVEL_*; libusb's LIBUSB_DEBUG environment variable still overrides it.
    int log_level = 0;
  };

  // libusb_init plus the event thread. Fails (kIo) only if libusb cannot initialise; a host
  // without any USB bus still gets a working, empty context.
  static usb::Result<std::unique_ptr<LibusbContext>> create(usb::Executor& loop);
  static usb::Result<std::unique_ptr<LibusbContext>> create(usb::Executor& loop, Options options);
  ~LibusbContext();  // stop(), then libusb_exit

  LibusbContext(const LibusbContext&) = delete;
  LibusbContext& operator=(const LibusbContext&) = delete;

  libusb_context* get() const { return ctx_; }
  // The loop every callback is posted to.
  usb::Executor& loop() const { return loop_; }

  // Stops the event thread: sets the stop flag, wakes libusb_handle_events with
  // libusb_interrupt_event_handler and joins. Idempotent. Call it only after every device of
  // this context has been closed (their cancelled transfers need event handling to come back).
  void stop();
  bool running() const { return thread_.joinable(); }
  // Event-handling passes so far (tests use it to see the thread is alive).
  uint64_t iterations() const { return iterations_.load(std::memory_order_relaxed); }

 private:
  LibusbContext(usb::Executor& loop, libusb_context* ctx);
  void run();

  usb::Executor& loop_;
  libusb_context* ctx_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> iterations_{0};
  std::thread thread_;  // started by create(), joined by stop()
};

}  // namespace devices
