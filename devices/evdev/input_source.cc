#include "devices/evdev/input_source.h"

#include <libevdev/libevdev.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <utility>

#include "devices/evdev/evdev_device.h"
#include "devices/evdev/hid_keymap.h"

namespace devices {

namespace asio = boost::asio;

namespace {

// Mouse buttons in HID order (buttons 1..5).
constexpr unsigned kButtons[] = {BTN_LEFT, BTN_RIGHT, BTN_MIDDLE, BTN_SIDE, BTN_EXTRA};

bool has_keyboard_keys(const libevdev* dev) {
  if (!libevdev_has_event_type(dev, EV_KEY)) return false;
  for (unsigned code = 1; code < BTN_MISC; ++code)
    if (libevdev_has_event_code(dev, EV_KEY, code) && hid_usage_for_key(code) != 0) return true;
  return false;
}

}  // namespace

std::set<HidInputFunction> EvdevInputSource::classify(const libevdev* dev) {
  std::set<HidInputFunction> f;
  if (libevdev_has_property(dev, INPUT_PROP_ACCELEROMETER)) return f;  // a sensor (--sensors)
  if (has_keyboard_keys(dev)) f.insert(HidInputFunction::kKeyboard);
  if (libevdev_has_event_code(dev, EV_REL, REL_X) && libevdev_has_event_code(dev, EV_REL, REL_Y))
    f.insert(HidInputFunction::kMouse);
  const bool mt = libevdev_has_event_code(dev, EV_ABS, ABS_MT_POSITION_X) &&
                  libevdev_has_event_code(dev, EV_ABS, ABS_MT_POSITION_Y) &&
                  libevdev_get_num_slots(dev) > 0;
  const bool single = libevdev_has_event_code(dev, EV_ABS, ABS_X) &&
                      libevdev_has_event_code(dev, EV_ABS, ABS_Y) &&
                      libevdev_has_event_code(dev, EV_KEY, BTN_TOUCH);
  if ((mt || single) && !libevdev_has_property(dev, INPUT_PROP_POINTER))
    f.insert(HidInputFunction::kTouch);
  return f;
}

usb::Result<std::unique_ptr<EvdevInputSource>> EvdevInputSource::open(asio::io_context& io,
                                                                      const std::string& path,
                                                                      Options options) {
  // Read-write so the host's LED changes can be written back; read-only will do otherwise.
  auto opened = open_evdev(path, /*writable=*/true);
  if (!opened) return std::unexpected(opened.error());
  libevdev* dev = opened->dev;
  auto src = std::unique_ptr<EvdevInputSource>(new EvdevInputSource(io, *opened, path));
  if (src->functions_.empty()) {
    return usb::Error::make(usb::Error::Code::kUnsupported,
                            "evdev " + path + " ('" + src->name_ +
                                "') is not a keyboard, relative pointer or touchscreen");
  }
  if (options.grab) {
    if (src->keys_down()) {
      // Grabbing now would keep the release of a key held at this moment (the Enter that
      // started vusb-stub) from its local listeners, which would repeat it forever: the grab
      // waits until every key is up.
      src->grab_pending_ = true;
      spdlog::info("evdev: {}: a key is down; grabbing once it is released", path);
    } else if (int rc = libevdev_grab(dev, LIBEVDEV_GRAB); rc < 0) {
      return usb::Error::make(usb::Error::Code::kBusy,
                              "evdev " + path + ": cannot grab it (" + std::strerror(-rc) +
                                  "); another program holds it, or pass ',nograb'");
    }
  }
  return src;
}

std::vector<std::string> EvdevInputSource::find_devices() {
  return find_evdev([](const libevdev* dev) {
    const auto f = classify(dev);
    // Only keyboards with letters: a power button or a lid switch with a key or two stays with
    // this machine unless asked for by path.
    if (f == std::set{HidInputFunction::kKeyboard})
      return libevdev_has_event_code(dev, EV_KEY, KEY_A) &&
             libevdev_has_event_code(dev, EV_KEY, KEY_Z);
    return !f.empty();
  });
}

bool EvdevInputSource::keys_down() const {
  for (unsigned code = 0; code <= KEY_MAX; ++code)
    if (libevdev_has_event_code(dev_, EV_KEY, code) && libevdev_get_event_value(dev_, EV_KEY, code))
      return true;
  return false;
}

EvdevInputSource::EvdevInputSource(asio::io_context& io, OpenedEvdev opened, std::string path)
    : reader_(std::make_unique<EvdevReader>(io, opened, path)),
      dev_(opened.dev),
      path_(std::move(path)) {
  name_ = reader_->name();
  functions_ = classify(dev_);
  multitouch_ =
      libevdev_has_event_code(dev_, EV_ABS, ABS_MT_POSITION_X) && libevdev_get_num_slots(dev_) > 0;
}

EvdevInputSource::~EvdevInputSource() {
  if (device_) device_->on_leds = nullptr;
}

HidInputOptions EvdevInputSource::device_options() const {
  HidInputOptions o;
  o.functions = functions_;
  o.product = name_.substr(0, 126);
  if (functions_.contains(HidInputFunction::kTouch)) {
    const unsigned ax = multitouch_ ? ABS_MT_POSITION_X : ABS_X;
    const unsigned ay = multitouch_ ? ABS_MT_POSITION_Y : ABS_Y;
    const input_absinfo* x = libevdev_get_abs_info(dev_, ax);
    const input_absinfo* y = libevdev_get_abs_info(dev_, ay);
    if (x && y) {
      o.touch = {.min_x = x->minimum,
                 .max_x = x->maximum,
                 .min_y = y->minimum,
                 .max_y = y->maximum,
                 .width_tenth_mm = 0,
                 .height_tenth_mm = 0};
      // Resolution is units per millimetre (linux/input.h).
      if (x->resolution > 0 && y->resolution > 0) {
        o.touch.width_tenth_mm =
            static_cast<int32_t>((int64_t{x->maximum} - x->minimum) * 10 / x->resolution);
        o.touch.height_tenth_mm =
            static_cast<int32_t>((int64_t{y->maximum} - y->minimum) * 10 / y->resolution);
      }
    }
    o.max_contacts = static_cast<uint8_t>(
        multitouch_ ? std::clamp(libevdev_get_num_slots(dev_), 1, int{HidInputDevice::kMaxContacts})
                    : 1);
  }
  return o;
}

void EvdevInputSource::start(HidInputDevice& device) {
  device_ = &device;
  device.on_leds = [this](uint8_t leds) { set_leds(leds); };
  std::string what;
  for (HidInputFunction f : functions_) {
    what += what.empty() ? "" : "+";
    what += f == HidInputFunction::kKeyboard ? "keyboard"
            : f == HidInputFunction::kMouse  ? "mouse"
                                             : "touchscreen";
  }
  spdlog::info("evdev: {} ('{}'): feeding a USB HID {}", path_, name_, what);
  reader_->on_event = [this](const input_event& ev) {
    ++events_;
    handle(ev.type, ev.code, ev.value);
  };
  reader_->on_error = [this](int error) {
    if (on_gone) on_gone(std::strerror(-error));  // may destroy this source
  };
  reader_->start();
}

void EvdevInputSource::handle(unsigned type, unsigned code, int value) {
  if (!device_) return;
  switch (type) {
    case EV_KEY: {
      for (size_t i = 0; i < std::size(kButtons); ++i) {
        if (code != kButtons[i]) continue;
        const auto bit = static_cast<uint8_t>(1u << i);
        buttons_ = value ? buttons_ | bit : buttons_ & ~bit;
        pointer_dirty_ = true;
        return;
      }
      if (code == BTN_TOUCH) {
        touch_dirty_ = true;
        return;
      }
      if (value == 2) return;  // autorepeat: the host repeats by itself
      if (const uint8_t usage = hid_usage_for_key(code); usage != 0)
        device_->key(usage, value != 0);
      return;
    }
    case EV_REL:
      switch (code) {
        case REL_X:
          dx_ += value;
          break;
        case REL_Y:
          dy_ += value;
          break;
        case REL_WHEEL:
          wheel_ += value;
          break;
        case REL_HWHEEL:
          pan_ += value;
          break;
        default:
          return;
      }
      pointer_dirty_ = true;
      return;
    case EV_ABS:
      touch_dirty_ = true;  // libevdev keeps the slot and axis state; frame() reads it
      return;
    case EV_SYN:
      if (code == SYN_REPORT) frame();
      return;
    default:
      return;
  }
}

void EvdevInputSource::frame() {
  if (grab_pending_ && !keys_down()) {
    grab_pending_ = false;
    if (int rc = libevdev_grab(dev_, LIBEVDEV_GRAB); rc < 0) {
      spdlog::warn("evdev: {} ('{}'): cannot grab it ({}); its events also reach this machine",
                   path_, name_, std::strerror(-rc));
    }
  }
  auto narrow = [](int64_t v) {
    return static_cast<int32_t>(std::clamp<int64_t>(v, INT32_MIN, INT32_MAX));
  };
  if (pointer_dirty_ && functions_.contains(HidInputFunction::kMouse)) {
    device_->pointer(buttons_, narrow(dx_), narrow(dy_), narrow(wheel_), narrow(pan_));
  }
  dx_ = dy_ = wheel_ = pan_ = 0;
  pointer_dirty_ = false;
  if (touch_dirty_ && functions_.contains(HidInputFunction::kTouch)) {
    std::vector<HidInputDevice::Contact> contacts;
    if (multitouch_) {
      // The slot is the contact identifier. A slot whose tracking ID changed within one frame
      // holds a new finger: the old one is lifted in a report of its own first.
      const int slots = std::min(libevdev_get_num_slots(dev_), 256);
      slot_tracking_.resize(static_cast<size_t>(slots), -1);
      std::vector<HidInputDevice::Contact> kept;
      bool replaced = false;
      for (int s = 0; s < slots; ++s) {
        const auto slot = static_cast<unsigned>(s);
        const int id = libevdev_get_slot_value(dev_, slot, ABS_MT_TRACKING_ID);
        const int before = std::exchange(slot_tracking_[slot], id);
        if (id < 0) continue;
        const HidInputDevice::Contact c{
            .id = static_cast<uint8_t>(s),
            .x = libevdev_get_slot_value(dev_, slot, ABS_MT_POSITION_X),
            .y = libevdev_get_slot_value(dev_, slot, ABS_MT_POSITION_Y)};
        contacts.push_back(c);
        if (before >= 0 && before != id) {
          replaced = true;
        } else {
          kept.push_back(c);
        }
      }
      if (replaced) device_->touch(kept);
    } else if (libevdev_get_event_value(dev_, EV_KEY, BTN_TOUCH)) {
      contacts.push_back({.id = 0,
                          .x = libevdev_get_event_value(dev_, EV_ABS, ABS_X),
                          .y = libevdev_get_event_value(dev_, EV_ABS, ABS_Y)});
    }
    device_->touch(contacts);
  }
  touch_dirty_ = false;
}

void EvdevInputSource::set_leds(uint8_t leds) {
  // HID LED bits 0..4 (Num, Caps, Scroll, Compose, Kana) are Linux's LED_NUML..LED_KANA.
  for (unsigned i = 0; i < 5; ++i) {
    const unsigned code = LED_NUML + i;
    if (!libevdev_has_event_code(dev_, EV_LED, code)) continue;
    const auto v = (leds >> i) & 1 ? LIBEVDEV_LED_ON : LIBEVDEV_LED_OFF;
    if (int rc = libevdev_kernel_set_led_value(dev_, code, v); rc < 0) {
      spdlog::warn("evdev: {} ('{}'): cannot set LED {}: {}", path_, name_, i, std::strerror(-rc));
      return;
    }
  }
}

}  // namespace devices
