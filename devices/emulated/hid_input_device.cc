#include "devices/emulated/hid_input_device.h"

#include <algorithm>
#include <climits>

#include "devices/emulated/hid_report.h"

namespace devices {

using usb::Status;
using usb::Transfer;
using namespace hid;

namespace {

constexpr uint8_t kErrorRollOver = 0x01;
constexpr uint8_t kFirstModifier = 0xe0, kLastModifier = 0xe7;
constexpr size_t kBootKeys = 6;

// Bits per touch coordinate: 16 when the source's range fits a signed 16-bit field.
int coordinate_bits(const HidTouchRange& r) {
  return r.min_x >= -32768 && r.max_x <= 32767 && r.min_y >= -32768 && r.max_y <= 32767 ? 16 : 32;
}

int32_t clamp_step(int32_t& remaining) {
  const int32_t step = std::clamp(remaining, -127, 127);
  remaining -= step;
  return step;
}

// The touch input report: [id] then per contact [tip][contact id][x][y], then the count.
size_t touch_report_size(const HidInputOptions& o) {
  return 2 + o.max_contacts * (2 + 2 * coordinate_bits(o.touch) / 8);
}

void put_le(std::vector<uint8_t>& out, int32_t v, int bits) {
  for (int b = 0; b < bits / 8; ++b)
    out.push_back(static_cast<uint8_t>(static_cast<uint32_t>(v) >> (8 * b)));
}

}  // namespace

std::vector<uint8_t> HidInputDevice::report_descriptor(HidInputFunction function,
                                                       const HidInputOptions& o) {
  ReportWriter w;
  switch (function) {
    case HidInputFunction::kKeyboard:
      // The boot keyboard layout (HID 1.11, appendix B.1).
      w.usage_page(0x01);
      w.usage(0x06);  // Keyboard
      w.collection(0x01);
      w.usage_page(0x07);
      w.usage_range(kFirstModifier, kLastModifier);
      w.logical(0, 1);
      w.size_count(1, 8);
      w.input(kVariable);
      w.size_count(8, 1);
      w.input(kConstant);
      w.usage_page(0x08);  // LEDs
      w.usage_range(1, 5);
      w.size_count(1, 5);
      w.output(kVariable);
      w.size_count(3, 1);
      w.output(kConstant);
      w.usage_page(0x07);
      w.usage_range(0, kLastModifier);
      w.logical(0, kLastModifier);
      w.size_count(8, kBootKeys);
      w.input(0x00);  // Data, Array
      w.end();
      break;
    case HidInputFunction::kMouse:
      w.usage_page(0x01);
      w.usage(0x02);  // Mouse
      w.collection(0x01);
      w.usage(0x01);  // Pointer
      w.collection(0x00);
      w.usage_page(0x09);  // Buttons 1..5
      w.usage_range(1, 5);
      w.logical(0, 1);
      w.size_count(1, 5);
      w.input(kVariable);
      w.size_count(3, 1);
      w.input(kConstant);
      w.usage_page(0x01);
      w.usage(0x30);  // X
      w.usage(0x31);  // Y
      w.usage(0x38);  // Wheel
      w.logical(-127, 127);
      w.size_count(8, 3);
      w.input(kVariable | kRelative);
      w.usage_page(0x0c);
      w.usage(0x0238);  // AC Pan
      w.size_count(8, 1);
      w.input(kVariable | kRelative);
      w.end();
      w.end();
      break;
    case HidInputFunction::kTouch: {
      const int bits = coordinate_bits(o.touch);
      w.usage_page(0x0d);
      w.usage(0x04);  // Touch Screen
      w.collection(0x01);
      w.report_id(kTouchInputId);
      for (uint8_t i = 0; i < o.max_contacts; ++i) {
        w.usage_page(0x0d);
        w.usage(0x22);  // Finger
        w.collection(0x02);
        w.usage(0x42);  // Tip Switch
        w.logical(0, 1);
        w.size_count(1, 1);
        w.input(kVariable);
        w.size_count(7, 1);
        w.input(kConstant);
        w.usage(0x51);  // Contact Identifier
        w.logical(0, 255);
        w.size_count(8, 1);
        w.input(kVariable);
        w.usage_page(0x01);
        const bool sized = o.touch.width_tenth_mm > 0 && o.touch.height_tenth_mm > 0;
        if (sized) {
          w.unit(0x11);    // SI linear, centimetre
          w.exponent(-2);  // physical values in 0.1 mm
        }
        w.logical(o.touch.min_x, o.touch.max_x);
        if (sized) w.physical(0, o.touch.width_tenth_mm);
        w.usage(0x30);  // X
        w.size_count(static_cast<uint8_t>(bits), 1);
        w.input(kVariable);
        w.logical(o.touch.min_y, o.touch.max_y);
        if (sized) w.physical(0, o.touch.height_tenth_mm);
        w.usage(0x31);  // Y
        w.input(kVariable);
        if (sized) {
          w.physical(0, 0);
          w.unit(0);
          w.exponent(0);
        }
        w.end();
      }
      w.usage_page(0x0d);
      w.usage(0x54);  // Contact Count
      w.logical(0, o.max_contacts);
      w.size_count(8, 1);
      w.input(kVariable);
      w.report_id(kTouchFeatureId);
      w.usage(0x55);  // Contact Count Maximum
      w.feature(kVariable);
      w.end();
      break;
    }
  }
  return w.bytes;
}

SpeedDescriptors HidInputDevice::make_descriptors(const HidInputOptions& o) {
  usb::DescriptorSet set =
      usb2_descriptor_set(kVendorId, o.product_id, o.manufacturer, o.product, o.serial);
  usb::ConfigurationDescriptor config;
  config.value = 1;
  config.attributes = usb::kConfigAttrOne;
  config.max_power = 50;
  uint8_t number = 0;
  for (HidInputFunction f : o.functions) {
    usb::InterfaceDescriptor intf;
    intf.number = number;
    intf.interface_class = 0x03;
    if (f != HidInputFunction::kTouch) {
      intf.interface_subclass = 1;  // boot interface
      intf.interface_protocol = f == HidInputFunction::kKeyboard ? 1 : 2;
    }
    intf.extra = hid_descriptor(report_descriptor(f, o).size());
    const size_t report_size = f == HidInputFunction::kTouch ? touch_report_size(o) : 8;
    intf.endpoints.push_back(
        {.address = static_cast<uint8_t>(0x81 + number),
         .attributes = static_cast<uint8_t>(usb::TransferType::kInterrupt),
         .max_packet_size = static_cast<uint16_t>(std::min<size_t>(64, report_size)),
         .interval = static_cast<uint8_t>(f == HidInputFunction::kKeyboard ? 8 : 4)});
    config.interfaces.push_back(std::move(intf));
    ++number;
  }
  config.num_interfaces = number;
  set.configurations.push_back(std::move(config));
  SpeedDescriptors sd;
  sd.full_speed = std::move(set);
  return sd;
}

HidInputOptions HidInputDevice::checked(HidInputOptions o) {
  o.max_contacts = std::clamp<uint8_t>(o.max_contacts, 1, HidInputDevice::kMaxContacts);
  auto widen = [](int32_t& lo, int32_t& hi) {
    if (hi > lo) return;
    if (lo < INT32_MAX) {
      hi = lo + 1;
    } else {
      lo = hi - 1;
    }
  };
  widen(o.touch.min_x, o.touch.max_x);
  widen(o.touch.min_y, o.touch.max_y);
  if (o.functions.empty()) o.functions.insert(HidInputFunction::kKeyboard);
  return o;
}

HidInputDevice::HidInputDevice(HidInputOptions options, usb::DeviceLocation location)
    : HidInputDevice(checked(std::move(options)), std::move(location), Checked{}) {}

HidInputDevice::HidInputDevice(HidInputOptions options, usb::DeviceLocation location, Checked)
    : EmulatedDevice(make_descriptors(options), usb::Speed::kFull, std::move(location)),
      options_(std::move(options)) {
  uint8_t number = 0;
  for (HidInputFunction f : options_.functions) {
    interfaces_.push_back({.function = f,
                           .number = number,
                           .endpoint = static_cast<uint8_t>(0x81 + number),
                           .report_descriptor = report_descriptor(f, options_)});
    ++number;
  }
}

HidInputDevice::~HidInputDevice() = default;

const HidInputDevice::Interface* HidInputDevice::interface_of(HidInputFunction function) const {
  for (const auto& i : interfaces_)
    if (i.function == function) return &i;
  return nullptr;
}

uint8_t HidInputDevice::endpoint_of(HidInputFunction function) const {
  const Interface* i = interface_of(function);
  return i ? i->endpoint : 0;
}

size_t HidInputDevice::queued(HidInputFunction function) const {
  switch (function) {
    case HidInputFunction::kKeyboard:
      return keyboard_queue_.size();
    case HidInputFunction::kMouse:
      return mouse_queue_.size();
    case HidInputFunction::kTouch:
      return touch_queue_.size();
  }
  return 0;
}

// --- Reports

std::vector<uint8_t> HidInputDevice::keyboard_report(const KeyboardState& s) const {
  std::vector<uint8_t> r(2 + kBootKeys, 0);
  r[0] = s.modifiers;
  if (s.keys.size() > kBootKeys) {
    std::fill(r.begin() + 2, r.end(), kErrorRollOver);
  } else {
    std::copy(s.keys.begin(), s.keys.end(), r.begin() + 2);
  }
  return r;
}

std::vector<uint8_t> HidInputDevice::mouse_report(MouseReport& m, bool consume) const {
  MouseReport copy = m;
  MouseReport& src = consume ? m : copy;
  std::vector<uint8_t> r(5);
  r[0] = src.buttons;
  r[1] = static_cast<uint8_t>(clamp_step(src.dx));
  r[2] = static_cast<uint8_t>(clamp_step(src.dy));
  r[3] = static_cast<uint8_t>(clamp_step(src.wheel));
  r[4] = static_cast<uint8_t>(clamp_step(src.pan));
  return r;
}

std::vector<uint8_t> HidInputDevice::touch_report(const TouchFrame& f) const {
  const int bits = coordinate_bits(options_.touch);
  std::vector<uint8_t> r = {kTouchInputId};
  size_t n = 0;
  for (const auto& [c, down] : f.contacts) {
    if (n == options_.max_contacts) break;
    r.push_back(down ? 1 : 0);
    r.push_back(c.id);
    put_le(r, std::clamp(c.x, options_.touch.min_x, options_.touch.max_x), bits);
    put_le(r, std::clamp(c.y, options_.touch.min_y, options_.touch.max_y), bits);
    ++n;
  }
  // Unused collections stay zero; Contact Count (the last byte) says how many count.
  r.resize(touch_report_size(options_), 0);
  r.back() = static_cast<uint8_t>(n);
  return r;
}

std::vector<uint8_t> HidInputDevice::next_report(HidInputFunction function) const {
  switch (function) {
    case HidInputFunction::kKeyboard:
      return keyboard_report(keyboard_queue_.empty() ? keyboard_ : keyboard_queue_.front());
    case HidInputFunction::kMouse: {
      MouseReport m =
          mouse_queue_.empty() ? MouseReport{.buttons = buttons_} : mouse_queue_.front();
      return mouse_report(m, false);
    }
    case HidInputFunction::kTouch: {
      if (!touch_queue_.empty()) return touch_report(touch_queue_.front());
      TouchFrame now;
      for (const auto& [_, c] : contacts_) now.contacts.push_back({c, true});
      return touch_report(now);
    }
  }
  return {};
}

// --- Sources

void HidInputDevice::key(uint8_t usage, bool down) {
  loop_.check();
  if (usage == 0 || usage > kLastModifier || !interface_of(HidInputFunction::kKeyboard)) return;
  KeyboardState next = keyboard_;
  if (usage >= kFirstModifier) {
    const uint8_t bit = static_cast<uint8_t>(1u << (usage - kFirstModifier));
    next.modifiers = down ? next.modifiers | bit : next.modifiers & ~bit;
  } else {
    auto it = std::find(next.keys.begin(), next.keys.end(), usage);
    if (down && it == next.keys.end()) next.keys.push_back(usage);
    if (!down && it != next.keys.end()) next.keys.erase(it);
  }
  if (next == keyboard_) return;  // a repeat or a release of a key not down
  keyboard_ = next;
  if (keyboard_queue_.size() >= kMaxQueued) {
    keyboard_queue_.back() = keyboard_;
  } else {
    keyboard_queue_.push_back(keyboard_);
  }
  deliver(HidInputFunction::kKeyboard);
}

void HidInputDevice::pointer(uint8_t buttons, int32_t dx, int32_t dy, int32_t wheel, int32_t pan) {
  loop_.check();
  if (!interface_of(HidInputFunction::kMouse)) return;
  buttons &= 0x1f;
  const bool new_report = mouse_queue_.empty() || buttons != buttons_;
  if (new_report && mouse_queue_.size() < kMaxQueued) {
    // The motion that came before a button change goes out before it.
    mouse_queue_.push_back(MouseReport{.buttons = buttons});
  }
  buttons_ = buttons;
  MouseReport& m = mouse_queue_.back();
  m.buttons = buttons;
  // Saturating: a source reporting absurd motion cannot overflow the accumulator.
  auto add = [](int32_t& acc, int32_t v) {
    acc = static_cast<int32_t>(std::clamp<int64_t>(int64_t{acc} + v, -1'000'000, 1'000'000));
  };
  add(m.dx, dx);
  add(m.dy, dy);
  add(m.wheel, wheel);
  add(m.pan, pan);
  deliver(HidInputFunction::kMouse);
}

std::vector<HidInputDevice::TouchFrame> HidInputDevice::touch_frames(
    const std::map<uint8_t, Contact>& from, const std::map<uint8_t, Contact>& to) const {
  // A slot the host frees in a report can be taken again only in a later one (Linux's
  // input_mt), so contacts that continue and contacts that lift go first, new ones after.
  TouchFrame changes, fresh;
  bool any_new = false;
  for (const auto& [id, c] : from) {
    auto it = to.find(id);
    changes.contacts.push_back(it == to.end() ? std::pair{c, false} : std::pair{it->second, true});
  }
  for (const auto& [id, c] : to) {
    if (!from.contains(id)) any_new = true;
    fresh.contacts.push_back({c, true});
  }
  std::vector<TouchFrame> frames;
  const bool lifts = std::any_of(changes.contacts.begin(), changes.contacts.end(),
                                 [](const auto& e) { return !e.second; });
  if (!lifts) {
    if (!fresh.contacts.empty()) frames.push_back(std::move(fresh));  // moves and new contacts
    return frames;
  }
  frames.push_back(std::move(changes));
  if (any_new) frames.push_back(std::move(fresh));
  return frames;
}

void HidInputDevice::touch(const std::vector<Contact>& contacts) {
  loop_.check();
  if (!interface_of(HidInputFunction::kTouch)) return;
  std::map<uint8_t, Contact> now;
  for (const Contact& c : contacts) {
    if (now.size() == options_.max_contacts && !now.contains(c.id)) continue;
    now[c.id] = c;
  }
  auto frames = touch_frames(contacts_, now);
  if (touch_queue_.size() + frames.size() > kMaxQueued) {
    // The host is not keeping up: replace what waits with the way from what it has been sent to
    // the contacts now (every lift since then included).
    touch_queue_.clear();
    frames = touch_frames(touch_delivered_, now);
  }
  contacts_ = std::move(now);
  for (auto& f : frames) touch_queue_.push_back(std::move(f));
  deliver(HidInputFunction::kTouch);
}

// --- Host side

void HidInputDevice::deliver(HidInputFunction function) {
  const Interface* intf = interface_of(function);
  bool& delivering = delivering_[static_cast<size_t>(function)];
  if (!intf || delivering) return;
  delivering = true;
  for (;;) {
    const auto& pending_in = pending(intf->endpoint);
    if (pending_in.empty()) break;
    std::vector<uint8_t> report;
    switch (function) {
      case HidInputFunction::kKeyboard:
        if (keyboard_queue_.empty()) break;
        report = keyboard_report(keyboard_queue_.front());
        break;
      case HidInputFunction::kMouse: {
        if (mouse_queue_.empty()) break;
        report = mouse_report(mouse_queue_.front(), false);
        if (intf->protocol == 0) report.resize(3);  // boot protocol
        break;
      }
      case HidInputFunction::kTouch:
        if (touch_queue_.empty()) break;
        report = touch_report(touch_queue_.front());
        break;
    }
    if (report.empty()) break;
    Transfer& t = *pending_in.front();
    if (t.length() < report.size()) {
      // A transfer too short for a report: the device would babble. The report stays queued.
      finish(t, Status::kBabble, 0);
      continue;
    }
    // Taken now that it goes out.
    if (function == HidInputFunction::kKeyboard) keyboard_queue_.pop_front();
    if (function == HidInputFunction::kMouse) {
      MouseReport& m = mouse_queue_.front();
      mouse_report(m, true);
      if (m.dx == 0 && m.dy == 0 && m.wheel == 0 && m.pan == 0) mouse_queue_.pop_front();
    }
    if (function == HidInputFunction::kTouch) {
      for (const auto& [c, down] : touch_queue_.front().contacts) {
        if (down) {
          touch_delivered_[c.id] = c;
        } else {
          touch_delivered_.erase(c.id);
        }
      }
      touch_queue_.pop_front();
    }
    std::copy(report.begin(), report.end(), t.buffer().begin());
    finish(t, Status::kOk, report.size());
  }
  delivering = false;
}

void HidInputDevice::on_transfer(Transfer& transfer, const usb::EndpointDescriptor& endpoint) {
  // Interrupt IN transfers wait in the engine's FIFO until a report is queued.
  if (endpoint.direction() != usb::Direction::kIn) return finish(transfer, Status::kStall, 0);
  for (const auto& i : interfaces_)
    if (i.endpoint == endpoint.address) deliver(i.function);
}

size_t HidInputDevice::on_transfer_aborted(Transfer&) {
  return 0;
}

void HidInputDevice::on_configuration_changed(uint8_t) {
  for (auto& i : interfaces_) {
    i.idle = 0;
    i.protocol = 1;
  }
  // A reset or new configuration: the host's driver starts over, so what waited for the old one
  // goes (no stale clicks replayed). Keys and touches still down are reported with the next
  // change; the host learns the continuing contacts as new ones.
  keyboard_queue_.clear();
  mouse_queue_.clear();
  touch_queue_.clear();
  touch_delivered_.clear();
  contacts_.clear();
}

EmulatedDevice::ControlReply HidInputDevice::on_control_request(const usb::SetupPacket& setup,
                                                                std::span<uint8_t> data) {
  auto answer = [&](std::span<const uint8_t> bytes) {
    const size_t n = std::min(bytes.size(), data.size());
    std::copy_n(bytes.begin(), n, data.begin());
    return ok(n);
  };
  if (setup.recipient() != usb::Recipient::kInterface) return stall();
  if (setup.index >= interfaces_.size()) return stall();
  const auto number = static_cast<uint8_t>(setup.index);
  Interface& intf = interfaces_[number];
  const bool in = setup.direction() == usb::Direction::kIn;
  if (setup.type() == usb::RequestType::kStandard) {
    if (setup.request != usb::request::kGetDescriptor || !in) return stall();
    const uint8_t type = static_cast<uint8_t>(setup.value >> 8);
    if (type == kDescReport) return answer(intf.report_descriptor);
    if (type == kDescHid) {
      const auto* config = active_config();
      if (!config) return stall();  // unconfigured
      return answer(config->interfaces[number].extra);
    }
    return stall();
  }
  if (setup.type() != usb::RequestType::kClass) return stall();
  const uint8_t type = static_cast<uint8_t>(setup.value >> 8);
  const uint8_t id = static_cast<uint8_t>(setup.value);
  const bool touch = intf.function == HidInputFunction::kTouch;
  if (!direction_matches(setup.request, in)) return stall();
  switch (setup.request) {
    case kGetReport:
      if (type == kReportInput && (touch ? id == kTouchInputId : id == 0))
        return answer(next_report(intf.function));
      if (type == kReportFeature && touch && id == kTouchFeatureId) {
        const uint8_t r[2] = {kTouchFeatureId, options_.max_contacts};
        return answer(r);
      }
      if (type == kReportOutput && intf.function == HidInputFunction::kKeyboard && id == 0)
        return answer(std::span<const uint8_t>(&leds_, 1));
      return stall();
    case kSetReport:
      if (type == kReportOutput && intf.function == HidInputFunction::kKeyboard && id == 0 &&
          !data.empty()) {
        const uint8_t leds = data[0] & 0x1f;
        if (leds != leds_) {
          leds_ = leds;
          if (on_leds) on_leds(leds_);
        }
        return ok(data.size());
      }
      return stall();  // the touchscreen's feature is read-only; there is nothing else to set
    case kSetIdle:
      intf.idle = static_cast<uint8_t>(setup.value >> 8);
      return ok();
    case kGetIdle:
      return answer(std::span<const uint8_t>(&intf.idle, 1));
    case kSetProtocol:
      if (touch) return stall();  // no boot protocol
      intf.protocol = static_cast<uint8_t>(setup.value & 1);
      return ok();
    case kGetProtocol:
      return answer(std::span<const uint8_t>(&intf.protocol, 1));
    default:
      return stall();
  }
}

}  // namespace devices
