#include "devices/libusb/libusb_provider.h"

#include <libusb.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>
#include <thread>

#include "devices/libusb/libusb_convert.h"

namespace devices {

struct ProviderSink {
  LibusbProvider* provider = nullptr;  // loop only; null once the provider is being destroyed
};

namespace {

// After a hotplug arrival udev may still be fixing the node's permissions: retry a little.
constexpr int kOpenAttempts = 5;
constexpr auto kOpenRetryDelay = std::chrono::milliseconds(200);
constexpr int kMaxPorts = 7;

DeviceIdentity identify(libusb_device* dev) {
  DeviceIdentity id;
  libusb_device_descriptor dd{};
  if (libusb_get_device_descriptor(dev, &dd) == LIBUSB_SUCCESS) {
    id.vendor_id = dd.idVendor;
    id.product_id = dd.idProduct;
    id.device_class = dd.bDeviceClass;
  }
  uint8_t ports[kMaxPorts];
  int depth = libusb_get_port_numbers(dev, ports, kMaxPorts);
  id.busid =
      format_busid(libusb_get_bus_number(dev), {ports, depth > 0 ? static_cast<size_t>(depth) : 0});
  return id;
}

}  // namespace

usb::Result<std::unique_ptr<LibusbProvider>> LibusbProvider::create(usb::Executor& loop,
                                                                    Options options) {
  auto context = LibusbContext::create(loop, options.context);
  if (!context) return std::unexpected(context.error());
  std::unique_ptr<LibusbProvider> p(
      new LibusbProvider(loop, std::move(*context), std::move(options)));
  p->start();
  return p;
}

LibusbProvider::LibusbProvider(usb::Executor& loop, std::unique_ptr<LibusbContext> context,
                               Options options)
    : loop_(loop),
      context_(std::move(context)),
      options_(std::move(options)),
      sink_(std::make_shared<ProviderSink>()),
      worker_("vusb-usb-open") {
  sink_->provider = this;
}

void LibusbProvider::start() {
  loop_checker_.check();
  std::string filters;
  for (const DeviceFilter& f : options_.filters)
    filters += (filters.empty() ? "" : ",") + f.to_string();
  if (options_.use_hotplug && libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG)) {
    // ENUMERATE: the callback also runs, right here, for every device already present.
    int r = libusb_hotplug_register_callback(
        context_->get(),
        static_cast<libusb_hotplug_event>(LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED |
                                          LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT),
        LIBUSB_HOTPLUG_ENUMERATE, LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY,
        LIBUSB_HOTPLUG_MATCH_ANY,
        [](libusb_context* ctx, libusb_device* dev, libusb_hotplug_event event, void* self) {
          return hotplug_callback(ctx, dev, event, self);
        },
        this, &hotplug_handle_);
    if (r == LIBUSB_SUCCESS) {
      hotplug_registered_ = true;
    } else {
      spdlog::warn("libusb: hotplug registration failed ({}); rescanning instead",
                   libusb_error_text(r));
    }
  }
  spdlog::info("libusb: watching for [{}] ({})", filters,
               hotplug_registered_ ? "hotplug" : "rescan");
  if (!hotplug_registered_) {
    worker_.post([this] { rescan_on_worker(); });
    schedule_rescan();
  }
  // FIFO: runs after the opens queued by the initial enumeration, and its post to the loop
  // comes after theirs.
  worker_.post([this] {
    loop_.post([sink = sink_] {
      LibusbProvider* p = sink->provider;
      if (!p) return;
      p->drain_arrivals();
      if (auto done = std::move(p->options_.on_initial_scan_done)) done(p->devices_.size());
    });
  });
}

LibusbProvider::~LibusbProvider() {
  loop_checker_.check();
  sink_->provider = nullptr;  // queued tasks and timers become no-ops
  if (hotplug_registered_) libusb_hotplug_deregister_callback(context_->get(), hotplug_handle_);
  worker_.stop();  // an open in progress finishes; queued arrivals are dropped (unref)
  known_.clear();
  std::vector<std::unique_ptr<LibusbDevice>> unannounced;
  {
    std::lock_guard lock(arrivals_mu_);
    unannounced.swap(arrivals_);
  }
  unannounced.clear();
  std::vector<std::unique_ptr<LibusbDevice>> devices;
  devices.swap(devices_);
  for (auto& d : devices) {
    d->shutdown();  // in-flight transfers complete with kNoDevice first (DeviceProvider contract)
    notify_removed(*d);
  }
  devices.clear();  // release interfaces, re-attach kernel drivers, close
  // No libusb callback can run after this; a hotplug callback racing the deregistration above
  // only touched worker_, which is still alive.
  context_->stop();
}

std::vector<usb::Device*> LibusbProvider::devices() const {
  loop_checker_.check();
  std::vector<usb::Device*> out;
  for (const auto& d : devices_) out.push_back(d.get());
  return out;
}

int LibusbProvider::hotplug_callback(libusb_context*, libusb_device* device, int event,
                                     void* user_data) {
  // On the event thread (or on the loop, inside registration): queue and return.
  auto* self = static_cast<LibusbProvider*>(user_data);
  if (event == LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED) {
    self->worker_.post(
        [self, ref = ref_libusb_device(device)] { self->arrived_on_worker(ref.get()); });
  } else if (event == LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT) {
    // Through the worker so a "left" is never handled before the open of the same device.
    self->worker_.post([self, device] { self->left_on_worker(device); });
  }
  return 0;  // stay registered
}

void LibusbProvider::arrived_on_worker(libusb_device* device) {
  const DeviceIdentity id = identify(device);
  const bool wanted = std::any_of(options_.filters.begin(), options_.filters.end(),
                                  [&](const DeviceFilter& f) { return f.matches(id); });
  if (!wanted) {
    spdlog::debug("libusb: {} {:04x}:{:04x} not selected", id.busid, id.vendor_id, id.product_id);
    return;
  }
  usb::Result<std::unique_ptr<LibusbDevice>> opened =
      usb::Error::make(usb::Error::Code::kIo, "not tried");
  for (int attempt = 1; attempt <= kOpenAttempts; ++attempt) {
    opened = LibusbDevice::open(*context_, device, options_.device);
    if (opened || opened.error().code != usb::Error::Code::kIo || attempt == kOpenAttempts) break;
    std::this_thread::sleep_for(kOpenRetryDelay);
  }
  if (!opened) {
    spdlog::warn("libusb: {} {:04x}:{:04x} not exported: {}", id.busid, id.vendor_id, id.product_id,
                 opened.error().message);
    return;
  }
  {
    std::lock_guard lock(arrivals_mu_);
    arrivals_.push_back(std::move(*opened));
  }
  loop_.post([sink = sink_] {
    if (sink->provider) sink->provider->drain_arrivals();
  });
}

void LibusbProvider::left_on_worker(libusb_device* device) {
  // `device` is only compared, never dereferenced: our open devices hold a reference, so a
  // match is the very device that left.
  loop_.post([sink = sink_, device] {
    if (sink->provider) sink->provider->on_left(device);
  });
}

void LibusbProvider::rescan_on_worker() {
  libusb_device** list = nullptr;
  const ssize_t n = libusb_get_device_list(context_->get(), &list);
  if (n < 0) {
    spdlog::warn("libusb: device list: {}", libusb_error_text(static_cast<int>(n)));
    return;
  }
  std::set<libusb_device*> present(list, list + n);
  for (ssize_t i = 0; i < n; ++i) {
    if (known_.contains(list[i])) continue;
    known_.emplace(list[i], ref_libusb_device(list[i]));
    arrived_on_worker(list[i]);
  }
  for (auto it = known_.begin(); it != known_.end();) {
    if (present.contains(it->first)) {
      ++it;
      continue;
    }
    left_on_worker(it->first);
    it = known_.erase(it);
  }
  libusb_free_device_list(list, 1);
}

void LibusbProvider::schedule_rescan() {
  if (!options_.timer) return;
  options_.timer(options_.rescan_interval, [sink = sink_] {
    LibusbProvider* p = sink->provider;
    if (!p) return;
    p->worker_.post([p] { p->rescan_on_worker(); });
    p->schedule_rescan();
  });
}

void LibusbProvider::drain_arrivals() {
  loop_checker_.check();
  std::vector<std::unique_ptr<LibusbDevice>> fresh;
  {
    std::lock_guard lock(arrivals_mu_);
    fresh.swap(arrivals_);
  }
  for (auto& owned : fresh) {
    LibusbDevice* d = owned.get();
    devices_.push_back(std::move(owned));
    d->set_on_gone([this, d] { remove(d); });
    notify_added(*d);
  }
}

void LibusbProvider::on_left(libusb_device* device) {
  loop_checker_.check();
  for (auto& d : devices_) {
    if (d->libusb_dev() == device) d->mark_disconnected();
  }
}

void LibusbProvider::remove(LibusbDevice* device) {
  loop_checker_.check();
  auto it = std::find_if(devices_.begin(), devices_.end(),
                         [&](const auto& d) { return d.get() == device; });
  if (it == devices_.end()) return;
  std::unique_ptr<LibusbDevice> owned = std::move(*it);
  devices_.erase(it);
  spdlog::info("libusb: {} removed", owned->location().busid);
  notify_removed(*owned);
  // owned is destroyed here: interfaces released, handle closed.
}

}  // namespace devices
