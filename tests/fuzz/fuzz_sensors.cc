// libFuzzer target: the sensor and input decoders — a recorded trace (ReplaySensorSource::parse),
// a guest's class requests to the HID sensor hub (SET_REPORT feature data, GET_REPORT, idle,
// protocol), and a HID input device driven by a guest (requests, polls, cancels) and a source
// (keys, motion, touches) at once — checking that replies stay within wLength, parsed traces are
// well formed and the input device's report queues stay bounded.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "devices/emulated/hid_input_device.h"
#include "devices/emulated/hid_sensor_hub.h"
#include "devices/evdev/sensor_sources.h"
#include "usb/core/transfer.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void fuzz_trace(std::span<const uint8_t> in) {
  auto steps = devices::ReplaySensorSource::parse(
      std::string_view(reinterpret_cast<const char*>(in.data()), in.size()));
  if (!steps) return;
  check(!steps->empty());
  for (size_t i = 1; i < steps->size(); ++i) check((*steps)[i].at >= (*steps)[i - 1].at);
}

void fuzz_hub(std::span<const uint8_t> in) {
  if (in.size() < 8) return;
  static devices::HidSensorHub* hub = [] {
    auto* h = new devices::HidSensorHub(devices::HidSensorHubOptions{
        .sensors = {devices::SensorKind::kAccelerometer, devices::SensorKind::kLight}});
    h->set_configuration(1, [](usb::Status) {});
    return h;
  }();
  // Interface-recipient requests, standard or class, either direction.
  const uint8_t type = static_cast<uint8_t>((in[0] & 0x80) | ((in[0] & 1) ? 0x21 : 0x01));
  usb::SetupPacket s{type, in[1], static_cast<uint16_t>(in[2] | in[3] << 8),
                     static_cast<uint16_t>(in[4] | in[5] << 8),
                     static_cast<uint16_t>((in[6] | in[7] << 8) & 0xfff)};
  auto t = usb::Transfer::control(type & 0x80, s);
  const auto data = in.subspan(8);
  auto buf = t->buffer();
  for (size_t i = 0; i < buf.size() && i < data.size(); ++i) buf[i] = data[i];
  bool done = false;
  t->set_completion([&](usb::Transfer& x) {
    done = true;
    check(x.actual_length() <= s.length);
  });
  hub->submit(*t);
  check(done);
  // Whatever the guest wrote, the state stays within what the descriptor allows.
  if (const auto* st = hub->state(devices::SensorKind::kAccelerometer)) {
    check(st->power >= 1 && st->power <= 6 && st->reporting >= 1 && st->reporting <= 6);
    check(st->interval_ms >= 1);
  }
}

// Operations of 8 bytes: [op][args...].
void fuzz_input(std::span<const uint8_t> in) {
  using devices::HidInputFunction;
  devices::HidInputOptions o;
  o.functions = {HidInputFunction::kKeyboard, HidInputFunction::kMouse, HidInputFunction::kTouch};
  o.max_contacts = 3;
  o.touch = {.min_x = -100,
             .max_x = 70000,
             .min_y = 0,
             .max_y = 2339,
             .width_tenth_mm = 0,
             .height_tenth_mm = 0};
  devices::HidInputDevice dev(o);
  dev.set_configuration(1, [](usb::Status) {});
  std::vector<std::unique_ptr<usb::Transfer>> polls;
  auto i16 = [](const uint8_t* p) { return static_cast<int16_t>(p[0] | p[1] << 8); };
  for (size_t at = 0; at + 8 <= in.size(); at += 8) {
    const uint8_t* a = &in[at];
    switch (a[0] % 6) {
      case 0:
        dev.key(a[1], a[2] & 1);
        break;
      case 1:
        dev.pointer(a[1], i16(a + 2) * 64, i16(a + 4), static_cast<int8_t>(a[6]), a[7] - 128);
        break;
      case 2: {
        std::vector<devices::HidInputDevice::Contact> c;
        for (int i = 0; i < (a[1] & 7); ++i)
          c.push_back({.id = static_cast<uint8_t>(a[2] + i), .x = i16(a + 3) * 3, .y = i16(a + 5)});
        dev.touch(c);
        break;
      }
      case 3: {  // a poll on one of the interrupt endpoints (or a bad one)
        auto t = std::make_unique<usb::Transfer>(static_cast<uint8_t>(0x80 | (a[1] & 3)),
                                                 usb::TransferType::kInterrupt, a[2] % 65);
        t->set_completion([](usb::Transfer&) {});
        dev.submit(*t);
        polls.push_back(std::move(t));
        break;
      }
      case 4:  // a cancel of the oldest poll
        if (!polls.empty()) {
          dev.cancel(*polls.front());
          polls.erase(polls.begin());
        }
        break;
      case 5: {
        const uint8_t type = static_cast<uint8_t>((a[1] & 0x80) | ((a[1] & 1) ? 0x21 : 0x01));
        usb::SetupPacket s{type, a[2], static_cast<uint16_t>(a[3] | a[4] << 8),
                           static_cast<uint16_t>(a[5] & 3),
                           static_cast<uint16_t>(a[6] | (a[7] & 1) << 8)};
        auto t = usb::Transfer::control(type & 0x80, s);
        bool done = false;
        t->set_completion([&](usb::Transfer& x) {
          done = true;
          check(x.actual_length() <= s.length);
        });
        dev.submit(*t);
        check(done);
        break;
      }
    }
    for (auto f : o.functions) check(dev.queued(f) <= devices::HidInputDevice::kMaxQueued);
  }
  for (auto& t : polls) dev.cancel(*t);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::span<const uint8_t> in(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      fuzz_trace(in);
      break;
    case 1:
      fuzz_hub(in);
      break;
    default:
      fuzz_input(in);
      break;
  }
  return 0;
}
