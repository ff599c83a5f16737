// libFuzzer target: the sensor decoders — a recorded trace (ReplaySensorSource::parse) and a
// guest's class requests to the HID sensor hub (SET_REPORT feature data, GET_REPORT, idle,
// protocol) — checking that replies stay within wLength and parsed traces are well formed.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::span<const uint8_t> in(data + 1, size - 1);
  if (data[0] & 1) {
    fuzz_hub(in);
  } else {
    fuzz_trace(in);
  }
  return 0;
}
