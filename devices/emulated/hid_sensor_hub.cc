#include "devices/emulated/hid_sensor_hub.h"

#include <algorithm>

#include "devices/emulated/hid_report.h"
#include "usb/core/byte_order.h"

namespace devices {

using usb::Status;
using usb::Transfer;
using namespace hid;

namespace {

// Sensor state / event selector positions + 1 (HUTRR39 0x200800.. and 0x200810..).
constexpr uint8_t kStateReady = 2;
constexpr uint8_t kEventDataUpdated = 4, kEventPollResponse = 5;

constexpr size_t kFeatureSize = 9;  // [id][reporting][power][interval u32][sensitivity u16]

struct SensorUsages {
  uint8_t type;          // the Physical collection's usage (page 0x20)
  uint16_t sensitivity;  // change sensitivity (absolute) of the data field
  uint16_t data[3];      // data fields (0 = none)
  int8_t exponent;       // Unit Exponent of the data
  bool is_signed;
};

SensorUsages usages(SensorKind k) {
  switch (k) {
    case SensorKind::kAccelerometer:
      return {0x73, 0x1452, {0x0453, 0x0454, 0x0455}, -2, true};
    case SensorKind::kGyrometer:
      return {0x76, 0x1456, {0x0457, 0x0458, 0x0459}, -2, true};
    case SensorKind::kCompass:
      return {0x83, 0x1484, {0x0485, 0x0486, 0x0487}, 0, true};
    case SensorKind::kLight:
      return {0x41, 0x14d1, {0x04d1, 0, 0}, -2, false};
  }
  return {};
}

size_t axes(SensorKind k) {
  return k == SensorKind::kLight ? 1 : 3;
}

}  // namespace

std::vector<uint8_t> HidSensorHub::report_descriptor(const std::set<SensorKind>& sensors) {
  ReportWriter w;
  w.usage_page(0x20);
  w.usage(0x01);  // Sensor (collection)
  w.collection(0x01);
  w.unit_none();  // Unit None for every field: the spec's default units (see the header)
  for (SensorKind k : sensors) {
    const SensorUsages u = usages(k);
    w.usage_page(0x20);
    w.usage(u.type);
    w.collection(0x00);  // Physical: what makes Linux choose hid-sensor-hub
    w.report_id(static_cast<uint8_t>(k));
    // Feature report.
    w.named_array(0x0316, 0x0840, 6, false);  // Reporting State
    w.named_array(0x0319, 0x0850, 6, false);  // Power State
    w.usage(0x030e);                          // Report Interval (ms)
    w.logical(0, 0xffff);
    w.size_count(32, 1);
    w.exponent(0);
    w.feature(kVariable);
    w.usage(u.sensitivity);  // Change Sensitivity Absolute of the data field
    w.logical(0, 0xffff);
    w.size_count(16, 1);
    w.exponent(u.exponent);
    w.feature(kVariable);
    // Input report.
    w.named_array(0x0201, 0x0800, 7, true);  // Sensor State
    w.named_array(0x0202, 0x0810, 6, true);  // Sensor Event
    if (u.is_signed) {
      w.logical(-0x7fffffff, 0x7fffffff);
    } else {
      w.logical(0, 0x7fffffff);
    }
    w.size_count(32, 1);
    w.exponent(u.exponent);
    // One Input item per axis: Linux matches a field by its first usage only.
    for (size_t i = 0; i < axes(k); ++i) {
      w.usage(u.data[i]);
      w.input(kVariable);
    }
    w.end();
  }
  w.end();
  return w.bytes;
}

SpeedDescriptors HidSensorHub::make_descriptors(const HidSensorHubOptions& o) {
  const auto report = report_descriptor(o.sensors);
  usb::DescriptorSet set =
      usb2_descriptor_set(kVendorId, kProductId, o.manufacturer, o.product, o.serial);
  usb::ConfigurationDescriptor config;
  config.value = 1;
  config.num_interfaces = 1;
  config.attributes = usb::kConfigAttrOne;
  config.max_power = 50;
  usb::InterfaceDescriptor intf;
  intf.number = 0;
  intf.interface_class = 0x03;  // HID, no boot subclass
  intf.string_index = 2;
  // HID descriptor (HID 1.11, 6.2.1): bcdHID 1.11, one report descriptor.
  intf.extra = hid::hid_descriptor(report.size());
  intf.endpoints.push_back({.address = kInterruptIn,
                            .attributes = static_cast<uint8_t>(usb::TransferType::kInterrupt),
                            .max_packet_size = 64,
                            .interval = 10});
  config.interfaces.push_back(std::move(intf));
  set.configurations.push_back(std::move(config));
  SpeedDescriptors sd;
  sd.full_speed = std::move(set);
  return sd;
}

HidSensorHub::HidSensorHub(HidSensorHubOptions options, usb::DeviceLocation location)
    : EmulatedDevice(make_descriptors(options), usb::Speed::kFull, std::move(location)),
      options_(std::move(options)),
      report_descriptor_(report_descriptor(options_.sensors)) {
  for (SensorKind k : options_.sensors) {
    SensorState s;
    s.interval_ms = options_.default_interval_ms;
    sensors_[k] = s;
  }
}

HidSensorHub::~HidSensorHub() {
  *alive_ = false;
}

void HidSensorHub::set_clock(Timer timer, Clock clock) {
  timer_ = std::move(timer);
  clock_ = std::move(clock);
}

const HidSensorHub::SensorState* HidSensorHub::state(SensorKind kind) const {
  auto it = sensors_.find(kind);
  return it == sensors_.end() ? nullptr : &it->second;
}

HidSensorHub::SensorState* HidSensorHub::find(uint8_t report_id) {
  auto it = sensors_.find(static_cast<SensorKind>(report_id));
  return it == sensors_.end() ? nullptr : &it->second;
}

void HidSensorHub::set_sample(SensorKind kind, SensorSample sample) {
  loop_.check();
  auto it = sensors_.find(kind);
  if (it == sensors_.end()) return;
  it->second.sample = sample;
  if (on_sample) on_sample(kind, sample);
}

std::vector<uint8_t> HidSensorHub::input_report(SensorKind kind, uint8_t event) const {
  const SensorState* s = state(kind);
  std::vector<uint8_t> r = {static_cast<uint8_t>(kind), kStateReady, event};
  for (size_t i = 0; i < axes(kind); ++i) {
    const int32_t v = s ? s->sample.value[i] : 0;
    for (int b = 0; b < 4; ++b)
      r.push_back(static_cast<uint8_t>(static_cast<uint32_t>(v) >> (8 * b)));
  }
  return r;
}

std::vector<uint8_t> HidSensorHub::feature_report(SensorKind kind) const {
  const SensorState& s = *state(kind);
  std::vector<uint8_t> r(kFeatureSize);
  r[0] = static_cast<uint8_t>(kind);
  r[1] = s.reporting;
  r[2] = s.power;
  usb::store_le32(&r[3], s.interval_ms);
  usb::store_le16(&r[7], s.sensitivity);
  return r;
}

EmulatedDevice::ControlReply HidSensorHub::on_control_request(const usb::SetupPacket& setup,
                                                              std::span<uint8_t> data) {
  auto answer = [&](std::span<const uint8_t> bytes) {
    const size_t n = std::min(bytes.size(), data.size());
    std::copy_n(bytes.begin(), n, data.begin());
    return ok(n);
  };
  if (setup.recipient() != usb::Recipient::kInterface || setup.index != 0) return stall();
  if (setup.type() == usb::RequestType::kStandard) {
    if (setup.request != usb::request::kGetDescriptor) return stall();
    const uint8_t type = static_cast<uint8_t>(setup.value >> 8);
    if (type == kDescReport) return answer(report_descriptor_);
    if (type == kDescHid) {
      const auto* config = active_config();
      if (!config) return stall();  // unconfigured (SET_CONFIGURATION 0, a reset)
      return answer(config->interfaces[0].extra);
    }
    return stall();
  }
  if (setup.type() != usb::RequestType::kClass) return stall();
  const uint8_t type = static_cast<uint8_t>(setup.value >> 8);
  const uint8_t id = static_cast<uint8_t>(setup.value);
  if (!direction_matches(setup.request, setup.direction() == usb::Direction::kIn)) return stall();
  switch (setup.request) {
    case kGetReport: {
      SensorState* s = find(id);
      if (!s) return stall();
      const auto kind = static_cast<SensorKind>(id);
      if (type == kReportInput) {
        ++s->polled;
        return answer(input_report(kind, kEventPollResponse));
      }
      if (type == kReportFeature) return answer(feature_report(kind));
      return stall();
    }
    case kSetReport: {
      SensorState* s = find(id);
      // The whole feature report, its ID first (HID 1.11, 7.2.2).
      if (!s || type != kReportFeature || data.size() < kFeatureSize || data[0] != id) {
        return stall();
      }
      if (data[1] < 1 || data[1] > 6 || data[2] < 1 || data[2] > 6) return stall();
      const bool was = streaming(*s);
      s->reporting = data[1];
      s->power = data[2];
      s->interval_ms = std::clamp<uint32_t>(usb::load_le32(&data[3]), 1, 0xffff);
      s->sensitivity = usb::load_le16(&data[7]);
      if (!was && streaming(*s) && clock_) {
        s->next_due = clock_() + std::chrono::milliseconds(s->interval_ms);
      }
      arm();
      return ok(data.size());
    }
    case kSetIdle:
      idle_ = static_cast<uint8_t>(setup.value >> 8);
      return ok();
    case kGetIdle:
      return answer(std::span<const uint8_t>(&idle_, 1));
    case kSetProtocol:
      protocol_ = static_cast<uint8_t>(setup.value & 1);
      return ok();
    case kGetProtocol:
      return answer(std::span<const uint8_t>(&protocol_, 1));
    default:
      return stall();
  }
}

void HidSensorHub::on_transfer(Transfer& transfer, const usb::EndpointDescriptor& endpoint) {
  // Interrupt IN transfers wait in the engine's FIFO until a report is due; one that was due
  // while no transfer was queued goes out now (a device keeps it until the host polls).
  if (endpoint.direction() != usb::Direction::kIn) return finish(transfer, Status::kStall, 0);
  deliver();
}

void HidSensorHub::deliver() {
  if (delivering_) return;  // a completion resubmitted: the loop below serves it
  delivering_ = true;
  for (;;) {
    const auto& queue = pending(kInterruptIn);
    if (queue.empty()) break;
    // Round robin over the sensors with a report waiting, so one sensor cannot starve another
    // when the host keeps a single transfer queued (usbhid does).
    SensorKind chosen{};
    bool found = false;
    auto it = sensors_.upper_bound(last_served_);
    for (size_t n = 0; n < sensors_.size(); ++n, ++it) {
      if (it == sensors_.end()) it = sensors_.begin();
      if (it->second.report_pending && streaming(it->second)) {
        chosen = it->first;
        found = true;
        break;
      }
    }
    if (!found) break;
    SensorState& s = sensors_[chosen];
    s.report_pending = false;
    last_served_ = chosen;
    Transfer& t = *queue.front();
    const auto report = input_report(chosen, kEventDataUpdated);
    const size_t n = std::min(report.size(), t.length());
    std::copy_n(report.begin(), n, t.buffer().begin());
    ++s.input_reports;
    finish(t, Status::kOk, n);
  }
  delivering_ = false;
}

size_t HidSensorHub::on_transfer_aborted(Transfer&) {
  return 0;
}

void HidSensorHub::on_configuration_changed(uint8_t) {
  for (auto& [_, s] : sensors_) {
    s.power = kPowerD4;
    s.reporting = kReportingNone;
    s.report_pending = false;
  }
  ++generation_;
  armed_ = false;
}

void HidSensorHub::arm() {
  if (!timer_ || !clock_) return;
  std::optional<std::chrono::steady_clock::time_point> next;
  for (const auto& [_, s] : sensors_)
    if (streaming(s) && (!next || s.next_due < *next)) next = s.next_due;
  if (!next) return;
  // A timer already set for this deadline or an earlier one stands; a later one is replaced.
  if (armed_ && armed_for_ <= *next) return;
  ++generation_;
  armed_ = true;
  armed_for_ = *next;
  const auto delay = std::chrono::ceil<std::chrono::microseconds>(
      std::max(*next - clock_(), std::chrono::steady_clock::duration::zero()));
  timer_(delay, [this, alive = alive_, generation = generation_] {
    if (!*alive || generation != generation_) return;
    armed_ = false;
    tick();
  });
}

void HidSensorHub::tick() {
  const auto now = clock_();
  for (auto& [kind, s] : sensors_) {
    if (!streaming(s) || s.next_due > now) continue;
    s.report_pending = true;  // at most one waiting report per sensor: the latest sample
    // Catch up without a burst after a stall of the loop.
    s.next_due += std::chrono::milliseconds(s.interval_ms);
    if (s.next_due <= now) s.next_due = now + std::chrono::milliseconds(s.interval_ms);
  }
  deliver();
  arm();
}

}  // namespace devices
