#include "devices/libusb/libusb_context.h"

#include <libusb.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/time.h>

#include <chrono>

#include "devices/libusb/libusb_convert.h"

namespace devices {
namespace {

// libusb_interrupt_event_handler is what wakes the thread on stop(); the timeout only bounds
// how long a lost wakeup could delay shutdown.
constexpr timeval kEventTimeout{1, 0};

}  // namespace

void LibusbUnrefDevice::operator()(libusb_device* device) const {
  libusb_unref_device(device);
}

LibusbDeviceRef ref_libusb_device(libusb_device* device) {
  return LibusbDeviceRef(device ? libusb_ref_device(device) : nullptr);
}

void LibusbCloseHandle::operator()(libusb_device_handle* handle) const {
  libusb_close(handle);
}

usb::Result<std::unique_ptr<LibusbContext>> LibusbContext::create(usb::Executor& loop) {
  return create(loop, Options{});
}

usb::Result<std::unique_ptr<LibusbContext>> LibusbContext::create(usb::Executor& loop,
                                                                  Options options) {
  libusb_context* ctx = nullptr;
  int r = libusb_init(&ctx);
  if (r != LIBUSB_SUCCESS)
    return usb::Error::make(usb::Error::Code::kIo, "libusb_init: " + libusb_error_text(r));
  if (options.log_level > 0) libusb_set_option(ctx, LIBUSB_OPTION_LOG_LEVEL, options.log_level);
  std::unique_ptr<LibusbContext> c(new LibusbContext(loop, ctx));
  c->thread_ = std::thread([p = c.get()] { p->run(); });
  return c;
}

LibusbContext::LibusbContext(usb::Executor& loop, libusb_context* ctx) : loop_(loop), ctx_(ctx) {}

LibusbContext::~LibusbContext() {
  stop();
  libusb_exit(ctx_);
}

void LibusbContext::stop() {
  if (!thread_.joinable()) return;
  stopping_.store(true, std::memory_order_release);
  // If the thread is between two libusb_handle_events calls, the interrupt stays pending in
  // libusb's event flags and makes the next call return at once, so the wakeup cannot be lost.
  libusb_interrupt_event_handler(ctx_);
  thread_.join();
}

void LibusbContext::run() {
  pthread_setname_np(pthread_self(), "vusb-libusb-ev");
  while (!stopping_.load(std::memory_order_acquire)) {
    timeval tv = kEventTimeout;
    int r = libusb_handle_events_timeout_completed(ctx_, &tv, nullptr);
    iterations_.fetch_add(1, std::memory_order_relaxed);
    if (r != LIBUSB_SUCCESS && r != LIBUSB_ERROR_INTERRUPTED && r != LIBUSB_ERROR_TIMEOUT) {
      spdlog::warn("libusb: event handling failed: {}", libusb_error_text(r));
      // Do not spin on a persistent error.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

}  // namespace devices
