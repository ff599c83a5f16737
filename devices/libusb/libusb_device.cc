#include "devices/libusb/libusb_device.h"

#include <libusb.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>

#include "devices/libusb/device_filter.h"
#include "devices/libusb/libusb_convert.h"
#include "devices/libusb/urb.h"
#include "usb/core/setup.h"

namespace devices {

// What the libusb callback needs to hand a URB back. Shared (shared_ptr) by the device, its
// URBs and the tasks they post, because a posted task may outlive the device.
struct UrbSink {
  explicit UrbSink(usb::Executor& l) : loop(l) {}
  usb::Executor& loop;
  std::mutex mu;
  std::condition_variable cv;      // signalled when in_libusb drops while closing
  bool closing = false;            // guarded by mu: shutdown() waits instead of posting
  size_t in_libusb = 0;            // guarded by mu: submitted, callback not yet run
  LibusbDevice* device = nullptr;  // loop only; null after shutdown(): posted tasks do nothing
};

namespace {

// How long shutdown() waits for libusb to return cancelled URBs before leaking them.
constexpr auto kDrainTimeout = std::chrono::seconds(2);
// libusb_get_port_numbers fills at most this many (USB allows 7 tiers).
constexpr int kMaxPorts = 7;
constexpr uint16_t kLangEnglishUs = 0x0409;

unsigned timeout_ms(std::chrono::milliseconds t) {
  return static_cast<unsigned>(t.count());
}

usb::Error::Code error_code_for(int libusb_error) {
  switch (libusb_error) {
    case LIBUSB_ERROR_NO_DEVICE:
      return usb::Error::Code::kClosed;
    case LIBUSB_ERROR_NOT_FOUND:
      return usb::Error::Code::kNotFound;
    case LIBUSB_ERROR_BUSY:
      return usb::Error::Code::kBusy;
    case LIBUSB_ERROR_NOT_SUPPORTED:
      return usb::Error::Code::kUnsupported;
    default:
      return usb::Error::Code::kIo;
  }
}

usb::DeviceDescriptor device_descriptor_from(const libusb_device_descriptor& d) {
  usb::DeviceDescriptor out;
  out.bcd_usb = d.bcdUSB;
  out.device_class = d.bDeviceClass;
  out.device_subclass = d.bDeviceSubClass;
  out.device_protocol = d.bDeviceProtocol;
  out.max_packet_size0 = d.bMaxPacketSize0;
  out.vendor_id = d.idVendor;
  out.product_id = d.idProduct;
  out.bcd_device = d.bcdDevice;
  out.manufacturer_index = d.iManufacturer;
  out.product_index = d.iProduct;
  out.serial_index = d.iSerialNumber;
  out.num_configurations = d.bNumConfigurations;
  return out;
}

// Reads a descriptor whose header carries its total length at bytes 2..3 (configuration, BOS):
// first `header` bytes, then wTotalLength (bounded by its 16 bits).
std::optional<std::vector<uint8_t>> read_total_length_descriptor(libusb_device_handle* h,
                                                                 uint8_t type, uint8_t index,
                                                                 size_t header, unsigned tmo) {
  uint8_t head[9] = {};
  int n = libusb_control_transfer(h, LIBUSB_ENDPOINT_IN, LIBUSB_REQUEST_GET_DESCRIPTOR,
                                  static_cast<uint16_t>((type << 8) | index), 0, head,
                                  static_cast<uint16_t>(header), tmo);
  if (n < 4 || head[1] != type) return std::nullopt;
  const size_t total = static_cast<size_t>(head[2] | (head[3] << 8));
  if (total < header) return std::nullopt;
  std::vector<uint8_t> bytes(total);
  n = libusb_control_transfer(h, LIBUSB_ENDPOINT_IN, LIBUSB_REQUEST_GET_DESCRIPTOR,
                              static_cast<uint16_t>((type << 8) | index), 0, bytes.data(),
                              static_cast<uint16_t>(total), tmo);
  if (n != static_cast<int>(total)) return std::nullopt;
  return bytes;
}

std::optional<std::vector<uint8_t>> read_config(libusb_device_handle* h, libusb_device* dev,
                                                uint8_t index, unsigned tmo) {
  if (auto raw = read_total_length_descriptor(h, LIBUSB_DT_CONFIG, index, 9, tmo)) return raw;
  // The device did not answer: rebuild from the copy the OS cached at enumeration.
  libusb_config_descriptor* c = nullptr;
  if (libusb_get_config_descriptor(dev, index, &c) != LIBUSB_SUCCESS) return std::nullopt;
  std::vector<uint8_t> bytes = raw_config_from_libusb(*c);
  libusb_free_config_descriptor(c);
  return bytes;
}

// Best effort: English strings for every index the descriptors reference.
void read_strings(libusb_device_handle* h, usb::DescriptorSet& set, unsigned tmo) {
  std::vector<uint8_t> wanted = {set.device.manufacturer_index, set.device.product_index,
                                 set.device.serial_index};
  for (const auto& c : set.configurations) {
    wanted.push_back(c.string_index);
    for (const auto& i : c.interfaces) wanted.push_back(i.string_index);
  }
  const uint8_t max_index = *std::max_element(wanted.begin(), wanted.end());
  if (max_index == 0) return;

  uint8_t buf[255];
  int n = libusb_control_transfer(h, LIBUSB_ENDPOINT_IN, LIBUSB_REQUEST_GET_DESCRIPTOR,
                                  LIBUSB_DT_STRING << 8, 0, buf, sizeof buf, tmo);
  if (n < 4 || buf[1] != LIBUSB_DT_STRING) return;
  uint16_t lang = static_cast<uint16_t>(buf[2] | (buf[3] << 8));
  for (int i = 2; i + 1 < std::min<int>(n, buf[0]); i += 2) {
    if ((buf[i] | (buf[i + 1] << 8)) == kLangEnglishUs) lang = kLangEnglishUs;
  }

  set.strings.assign(max_index, std::string());
  std::sort(wanted.begin(), wanted.end());
  wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
  for (uint8_t index : wanted) {
    if (index == 0) continue;
    n = libusb_control_transfer(h, LIBUSB_ENDPOINT_IN, LIBUSB_REQUEST_GET_DESCRIPTOR,
                                static_cast<uint16_t>((LIBUSB_DT_STRING << 8) | index), lang, buf,
                                sizeof buf, tmo);
    if (n == LIBUSB_ERROR_NO_DEVICE || n == LIBUSB_ERROR_TIMEOUT) return;  // stop paying timeouts
    if (n < 2) continue;
    if (auto s = usb::parse_string_descriptor({buf, static_cast<size_t>(n)}))
      set.strings[index - 1] = std::move(*s);
  }
}

}  // namespace

// --- Claims (worker / open / destructor) ---

void LibusbDevice::Claims::claim(libusb_device_handle* h, const std::vector<uint8_t>& interfaces) {
  for (uint8_t n : interfaces) {
    if (claimed.contains(n)) continue;
    if (detach_kernel_drivers && libusb_kernel_driver_active(h, n) == 1) {
      int r = libusb_detach_kernel_driver(h, n);
      if (r == LIBUSB_SUCCESS) {
        detached.insert(n);
      } else {
        spdlog::warn("libusb: interface {}: detaching the kernel driver failed: {}", n,
                     libusb_error_text(r));
      }
    }
    int r = libusb_claim_interface(h, n);
    if (r == LIBUSB_SUCCESS) {
      claimed.insert(n);
    } else {
      spdlog::warn("libusb: interface {}: claim failed: {}", n, libusb_error_text(r));
    }
  }
}

void LibusbDevice::Claims::release_all(libusb_device_handle* h) {
  for (uint8_t n : claimed) libusb_release_interface(h, n);
  claimed.clear();
}

// --- open ---

usb::Result<std::unique_ptr<LibusbDevice>> LibusbDevice::open(LibusbContext& context,
                                                              libusb_device* device) {
  return open(context, device, Options{});
}

usb::Result<std::unique_ptr<LibusbDevice>> LibusbDevice::open(LibusbContext& context,
                                                              libusb_device* device,
                                                              Options options) {
  LibusbDeviceRef ref = ref_libusb_device(device);
  const uint8_t bus = libusb_get_bus_number(device);
  uint8_t ports[kMaxPorts];
  int depth = libusb_get_port_numbers(device, ports, kMaxPorts);
  usb::DeviceLocation location;
  location.busnum = bus;
  location.devnum = libusb_get_device_address(device);
  location.busid = format_busid(bus, {ports, depth > 0 ? static_cast<size_t>(depth) : 0});
  location.path = "/sys/bus/usb/devices/" + location.busid;

  libusb_device_handle* raw_handle = nullptr;
  int r = libusb_open(device, &raw_handle);
  if (r != LIBUSB_SUCCESS) {
    return usb::Error::make(
        error_code_for(r),
        "libusb_open " + location.busid + ": " + libusb_error_text(r) +
            (r == LIBUSB_ERROR_ACCESS ? " (no permission on /dev/bus/usb?)" : ""));
  }
  LibusbHandle handle(raw_handle);
  const unsigned tmo = timeout_ms(options.control_timeout);

  libusb_device_descriptor dd{};
  r = libusb_get_device_descriptor(device, &dd);
  if (r != LIBUSB_SUCCESS)
    return usb::Error::make(error_code_for(r),
                            "device descriptor of " + location.busid + ": " + libusb_error_text(r));
  usb::DescriptorSet set;
  set.device = device_descriptor_from(dd);
  for (uint8_t i = 0; i < dd.bNumConfigurations; ++i) {
    auto bytes = read_config(handle.get(), device, i, tmo);
    if (!bytes) {
      spdlog::warn("libusb: {}: configuration {} unreadable, skipped", location.busid, i);
      continue;
    }
    auto config = usb::ConfigurationDescriptor::parse(*bytes);
    if (!config) {
      spdlog::warn("libusb: {}: configuration {} malformed, skipped: {}", location.busid, i,
                   config.error().message);
      continue;
    }
    set.configurations.push_back(std::move(*config));
  }
  if (dd.bcdUSB >= 0x0201) {
    if (auto bytes = read_total_length_descriptor(handle.get(), LIBUSB_DT_BOS, 0, 5, tmo)) {
      if (auto bos = usb::BosDescriptor::parse(*bytes)) set.bos = std::move(*bos);
    }
  }
  read_strings(handle.get(), set, tmo);

  int active = 0;
  if (libusb_get_configuration(handle.get(), &active) != LIBUSB_SUCCESS) active = 0;
  const usb::Speed speed = speed_from_libusb(libusb_get_device_speed(device));

  std::unique_ptr<LibusbDevice> d(new LibusbDevice(context, std::move(ref), std::move(handle),
                                                   std::move(set), speed, std::move(location),
                                                   options));
  d->active_config_ = static_cast<uint8_t>(active);
  if (options.claim_interfaces)
    d->claims_.claim(d->handle_.get(), d->interfaces_of(d->active_config_));
  // Alternate settings a previous driver left selected (GET_INTERFACE, USB 2.0 9.4.4).
  if (const usb::ConfigurationDescriptor* c =
          d->descriptors_.find_configuration(d->active_config_)) {
    for (uint8_t n : d->interfaces_of(d->active_config_)) {
      if (c->alternate_count(n) < 2) continue;
      uint8_t alt = 0;
      if (libusb_control_transfer(
              d->handle_.get(),
              usb::SetupPacket::make_type(usb::Direction::kIn, usb::RequestType::kStandard,
                                          usb::Recipient::kInterface),
              LIBUSB_REQUEST_GET_INTERFACE, 0, n, &alt, 1, tmo) == 1)
        d->alt_settings_[n] = alt;
    }
  }
  spdlog::info(
      "libusb: opened {} {:04x}:{:04x} ({} speed, configuration {}, {} interface(s) claimed)",
      d->location_.busid, dd.idVendor, dd.idProduct, usb::to_string(speed), d->active_config_,
      d->claims_.claimed.size());
  return d;
}

LibusbDevice::LibusbDevice(LibusbContext& context, LibusbDeviceRef device, LibusbHandle handle,
                           usb::DescriptorSet descriptors, usb::Speed speed,
                           usb::DeviceLocation location, Options options)
    : context_(context),
      options_(options),
      device_(std::move(device)),
      handle_(std::move(handle)),
      descriptors_(std::move(descriptors)),
      speed_(speed),
      location_(std::move(location)),
      sink_(std::make_shared<UrbSink>(context.loop())),
      worker_("vusb-usb-ops") {
  claims_.detach_kernel_drivers = options.claim_interfaces;
  sink_->device = this;
}

LibusbDevice::~LibusbDevice() {
  shutdown();
  claims_.release_all(handle_.get());
  if (options_.reattach_kernel_drivers) {
    for (uint8_t n : claims_.detached) libusb_attach_kernel_driver(handle_.get(), n);
  }
  // handle_ closes, device_ unrefs.
}

std::vector<uint8_t> LibusbDevice::interfaces_of(uint8_t configuration) const {
  std::vector<uint8_t> out;
  if (const usb::ConfigurationDescriptor* c = descriptors_.find_configuration(configuration)) {
    for (const usb::InterfaceDescriptor& i : c->interfaces) out.push_back(i.number);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// --- State ---

uint8_t LibusbDevice::active_configuration() const {
  loop_.check();
  return active_config_;
}

uint8_t LibusbDevice::alternate_setting(uint8_t interface) const {
  loop_.check();
  auto it = alt_settings_.find(interface);
  return it == alt_settings_.end() ? 0 : it->second;
}

bool LibusbDevice::connected() const {
  loop_.check();
  return connected_;
}

// --- Transfers ---

void LibusbDevice::on_libusb_done(libusb_transfer* x) {
  Urb* urb = static_cast<Urb*>(x->user_data);
  std::shared_ptr<UrbSink> sink = urb->sink;  // the urb may be freed once we unlock
  std::lock_guard lock(sink->mu);
  --sink->in_libusb;
  if (sink->closing) {  // shutdown() owns the URB now and is waiting for us
    sink->cv.notify_all();
    return;
  }
  sink->loop.post([sink, urb] {
    if (sink->device) sink->device->on_urb_done(urb);
  });
}

void LibusbDevice::submit(usb::Transfer& t) {
  loop_.check();
  if (!connected_) {
    t.complete(usb::Status::kNoDevice, 0);
    return;
  }
  if (t.type() == usb::TransferType::kControl && intercept(t)) return;
  auto prepared = Urb::prepare(t, handle_.get(), &LibusbDevice::on_libusb_done);
  if (!prepared) {
    t.complete(prepared.error(), 0);
    return;
  }
  std::unique_ptr<Urb> urb = std::move(*prepared);
  urb->sink = sink_;
  if (!t.begin(this)) {
    spdlog::error("libusb: {}: transfer {} submitted twice", location_.busid, t.trace_id);
    return;
  }
  {
    std::lock_guard lock(sink_->mu);
    ++sink_->in_libusb;
  }
  const int r = libusb_submit_transfer(urb->libusb());
  if (r != LIBUSB_SUCCESS) {
    {
      std::lock_guard lock(sink_->mu);
      --sink_->in_libusb;
    }
    if (r == LIBUSB_ERROR_NO_DEVICE) lost();
    check_gone();
    t.complete(connected_ ? usb::from_libusb_error(r) : usb::Status::kNoDevice, 0);
    return;
  }
  in_flight_.emplace(&t, std::move(urb));
}

void LibusbDevice::cancel(usb::Transfer& t) {
  loop_.check();
  auto it = in_flight_.find(&t);
  // Not found: an intercepted request (its blocking call cannot be stopped; it completes when
  // it returns) or a URB whose completion is already posted. Either way it completes once.
  if (it != in_flight_.end()) libusb_cancel_transfer(it->second->libusb());
}

void LibusbDevice::on_urb_done(Urb* u) {
  loop_.check();
  auto it = in_flight_.find(&u->transfer());
  if (it == in_flight_.end() || it->second.get() != u) return;
  std::unique_ptr<Urb> urb = std::move(it->second);
  in_flight_.erase(it);
  usb::Transfer& t = urb->transfer();
  Urb::Outcome outcome = urb->finish();
  urb.reset();
  if (outcome.status == usb::Status::kNoDevice) lost();
  if (!connected_) outcome.status = usb::Status::kNoDevice;
  check_gone();
  t.complete(outcome.status, outcome.actual_length);  // may destroy t; `this` stays valid
}

void LibusbDevice::lost() {
  if (!connected_) return;
  connected_ = false;
  spdlog::info("libusb: {} disconnected ({} transfer(s) in flight)", location_.busid,
               in_flight_.size());
  // libusb also completes them with NO_DEVICE once usbfs reports the disconnect; cancelling
  // does not wait for that.
  for (auto& [t, urb] : in_flight_) libusb_cancel_transfer(urb->libusb());
}

void LibusbDevice::mark_disconnected() {
  loop_.check();
  lost();
  check_gone();
}

void LibusbDevice::set_on_gone(std::move_only_function<void()> on_gone) {
  loop_.check();
  on_gone_ = std::move(on_gone);
  check_gone();
}

void LibusbDevice::check_gone() {
  if (connected_ || gone_posted_ || !on_gone_ || !in_flight_.empty() || !intercepted_.empty() ||
      blocking_jobs_ > 0)
    return;
  gone_posted_ = true;
  // Posted, not called: we may be inside a completion of this device.
  sink_->loop.post([sink = sink_] {
    if (sink->device) sink->device->fire_gone();
  });
}

void LibusbDevice::fire_gone() {
  auto fn = std::move(on_gone_);
  on_gone_ = nullptr;
  if (fn) fn();  // may destroy this device
}

// --- Standard operations ---

void LibusbDevice::run_blocking(std::move_only_function<int(libusb_device_handle*, Claims&)> work,
                                std::move_only_function<void(int)> done) {
  if (!connected_) {
    sink_->loop.post([sink = sink_, done = std::move(done)]() mutable {
      if (sink->device) done(LIBUSB_ERROR_NO_DEVICE);
    });
    return;
  }
  // Counted until its result is back on the loop: the device is not "gone" (and its owner does
  // not destroy it, which joins the worker) while a reset or another blocking call still runs —
  // the loop never waits for one.
  ++blocking_jobs_;
  worker_.post([sink = sink_, h = handle_.get(), claims = &claims_, work = std::move(work),
                done = std::move(done)]() mutable {
    const int r = work(h, *claims);
    sink->loop.post([sink, r, done = std::move(done)]() mutable {
      if (!sink->device) return;
      LibusbDevice& d = *sink->device;
      --d.blocking_jobs_;
      done(r);
      if (sink->device == &d) d.check_gone();
    });
  });
}

void LibusbDevice::reset(usb::StatusCallback done) {
  loop_.check();
  std::vector<uint8_t> interfaces =
      options_.claim_interfaces ? interfaces_of(active_config_) : std::vector<uint8_t>{};
  run_blocking(
      [interfaces](libusb_device_handle* h, Claims& claims) {
        // libusb releases and re-claims what it had claimed (taking back interfaces a kernel
        // driver grabbed meanwhile); claim() again covers any it gave up on.
        int r = libusb_reset_device(h);
        if (r == LIBUSB_ERROR_NOT_FOUND) {
          // NOT_FOUND means "re-enumerated" but also "could not re-claim": tell them apart.
          int config = 0;
          if (libusb_get_configuration(h, &config) == LIBUSB_SUCCESS) r = LIBUSB_ERROR_IO;
        }
        if (r == LIBUSB_SUCCESS || r == LIBUSB_ERROR_IO) {
          claims.claimed.clear();
          claims.claim(h, interfaces);
        }
        return r;
      },
      [this, done = std::move(done)](int r) mutable {
        // NOT_FOUND: the device re-enumerated with other descriptors; this handle is dead and
        // the device comes back through hotplug as a new one.
        if (r == LIBUSB_ERROR_NOT_FOUND || r == LIBUSB_ERROR_NO_DEVICE) {
          mark_disconnected();
          done(usb::Status::kNoDevice);
          return;
        }
        done(usb::from_libusb_error(r));
      });
}

void LibusbDevice::set_configuration(uint8_t value, usb::StatusCallback done) {
  loop_.check();
  std::vector<uint8_t> before, after;
  if (options_.claim_interfaces) {
    before = interfaces_of(active_config_);
    after = interfaces_of(value);
  }
  run_blocking(
      [value, before, after](libusb_device_handle* h, Claims& claims) {
        // Linux refuses to change the configuration while any interface is claimed, ours too.
        claims.release_all(h);
        // libusb spells "unconfigured" -1 (some devices really have a configuration 0).
        int r = libusb_set_configuration(h, value == 0 ? -1 : value);
        claims.claim(h, r == LIBUSB_SUCCESS ? after : before);
        return r;
      },
      [this, value, done = std::move(done)](int r) mutable {
        if (r == LIBUSB_SUCCESS) {
          active_config_ = value;
          alt_settings_.clear();
        } else if (r == LIBUSB_ERROR_NO_DEVICE) {
          mark_disconnected();
        }
        done(usb::from_libusb_error(r));
      });
}

void LibusbDevice::set_interface(uint8_t interface, uint8_t alternate, usb::StatusCallback done) {
  loop_.check();
  run_blocking(
      [interface, alternate](libusb_device_handle* h, Claims&) {
        return libusb_set_interface_alt_setting(h, interface, alternate);
      },
      [this, interface, alternate, done = std::move(done)](int r) mutable {
        if (r == LIBUSB_SUCCESS) alt_settings_[interface] = alternate;
        if (r == LIBUSB_ERROR_NO_DEVICE) mark_disconnected();
        done(usb::from_libusb_error(r));
      });
}

void LibusbDevice::clear_halt(uint8_t endpoint, usb::StatusCallback done) {
  loop_.check();
  run_blocking(
      [endpoint](libusb_device_handle* h, Claims&) { return libusb_clear_halt(h, endpoint); },
      [this, done = std::move(done)](int r) mutable {
        if (r == LIBUSB_ERROR_NO_DEVICE) mark_disconnected();
        done(usb::from_libusb_error(r));
      });
}

void LibusbDevice::set_halt(uint8_t endpoint, usb::StatusCallback done) {
  loop_.check();
  const unsigned tmo = timeout_ms(options_.control_timeout);
  run_blocking(
      [endpoint, tmo](libusb_device_handle* h, Claims&) {
        // SET_FEATURE(ENDPOINT_HALT), USB 2.0 9.4.9.
        int r = libusb_control_transfer(
            h,
            usb::SetupPacket::make_type(usb::Direction::kOut, usb::RequestType::kStandard,
                                        usb::Recipient::kEndpoint),
            LIBUSB_REQUEST_SET_FEATURE, usb::feature::kEndpointHalt, endpoint, nullptr, 0, tmo);
        return r < 0 ? r : LIBUSB_SUCCESS;
      },
      [this, done = std::move(done)](int r) mutable {
        if (r == LIBUSB_ERROR_NO_DEVICE) mark_disconnected();
        done(usb::from_libusb_error(r));
      });
}

// Standard requests that change state the kernel tracks go through the matching operation
// (what the Linux usbip host driver does in stub_rx.c), not down the pipe as raw bytes.
bool LibusbDevice::intercept(usb::Transfer& t) {
  const usb::SetupPacket& s = t.setup;
  using usb::Recipient;
  namespace req = usb::request;
  const bool set_config = s.is_standard(Recipient::kDevice, req::kSetConfiguration);
  const bool set_intf = s.is_standard(Recipient::kInterface, req::kSetInterface);
  const bool clear_halt_req = s.is_standard(Recipient::kEndpoint, req::kClearFeature) &&
                              s.value == usb::feature::kEndpointHalt;
  if (s.direction() != usb::Direction::kOut || !(set_config || set_intf || clear_halt_req))
    return false;
  if (!t.begin(this)) return true;
  intercepted_.insert(&t);
  auto done = [this, &t](usb::Status status) { finish_intercepted(t, status); };
  if (set_config) {
    set_configuration(static_cast<uint8_t>(s.value), std::move(done));
  } else if (set_intf) {
    set_interface(static_cast<uint8_t>(s.index), static_cast<uint8_t>(s.value), std::move(done));
  } else {
    clear_halt(static_cast<uint8_t>(s.index), std::move(done));
  }
  return true;
}

void LibusbDevice::finish_intercepted(usb::Transfer& t, usb::Status status) {
  if (intercepted_.erase(&t) == 0) return;  // shutdown() already completed it
  if (!connected_) status = usb::Status::kNoDevice;
  check_gone();
  t.complete(status, 0);
}

// --- Teardown ---

void LibusbDevice::shutdown() {
  loop_.check();
  if (shut_down_) return;
  shut_down_ = true;
  connected_ = false;
  worker_.stop();
  {
    std::lock_guard lock(sink_->mu);
    sink_->closing = true;
  }
  for (auto& [t, urb] : in_flight_) libusb_cancel_transfer(urb->libusb());
  bool drained;
  {
    std::unique_lock lock(sink_->mu);
    drained = sink_->cv.wait_for(lock, kDrainTimeout, [&] { return sink_->in_libusb == 0; });
  }
  sink_->device = nullptr;
  auto flights = std::move(in_flight_);
  in_flight_.clear();
  auto intercepted = std::move(intercepted_);
  intercepted_.clear();
  if (!drained) {
    // libusb still holds some URBs and may write into their buffers: neither the URBs nor the
    // transfers (whose owners would free the buffers) can be let go. Leak them, loudly.
    spdlog::error("libusb: {}: {} URB(s) not returned by libusb within {}s; leaking them",
                  location_.busid, flights.size(), kDrainTimeout.count());
    for (auto& [t, urb] : flights) urb.release();
  } else {
    for (auto& [t, urb] : flights) {
      urb.reset();
      t->complete(usb::Status::kNoDevice, 0);
    }
  }
  for (usb::Transfer* t : intercepted) t->complete(usb::Status::kNoDevice, 0);
}

}  // namespace devices
