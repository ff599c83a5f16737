// devices::HidSensorHub: a USB HID sensor hub (HID usage page 0x20, "HID Sensor Usage Tables",
// HUTRR39) with up to four sensors — Accelerometer 3D, Gyrometer 3D, Compass 3D, Ambient Light —
// fed by a sensor source (evdev, IIO, a recorded trace) through set_sample(). Linux binds it with
// usbhid + hid-sensor-hub and makes IIO devices of it (hid-sensor-accel-3d, -gyro-3d, -magn-3d,
// -als).
//
// Ownership and threading: as EmulatedDevice — owned by the exporting daemon, lives on its loop;
// sources call set_sample() on that loop. Time comes from the injected Timer and Clock.
//
// What a host sees (facts from HUTRR39 and Linux 6.1's hid-core / hid-sensor-hub /
// hid-sensor-attributes):
//  - Full speed, one HID interface (class 3, subclass 0, protocol 0 — a boot subclass would make
//    Linux skip GET_REPORT), interrupt IN 0x81 (64 bytes, every 10 ms at most).
//  - One report descriptor: an Application collection "Sensor" holding one Physical collection per
//    sensor (a Physical collection on page 0x20 is what makes Linux pick hid-sensor-hub), each with
//    its own report ID (1 accel, 2 gyro, 3 compass, 4 light) shared by its Feature and Input
//    report:
//      Feature [id][reporting state 1..6][power state 1..6][report interval u32 ms]
//              [change sensitivity u16]  — named arrays with Logical Minimum 1, so the values
//              Linux writes are the selectors' positions + 1 (power on = 2 = D0, off = 6 = D4;
//              reporting 2 = all events, 1 = no events);
//      Input   [id][sensor state][sensor event][one s32 per axis] (light: one u32).
//    Unit is None everywhere, so the spec's default units apply (g, deg/s, milligauss, lux — which
//    Linux's unit-0 conversion rows assume; the spec's m/s² code would not match Linux's table)
//    with Unit Exponent −2 for accel, gyro and light: raw values are centi-g, centi-deg/s, mG and
//    centi-lux, and Linux reports in_accel_scale 0.098066500 (m/s² per raw unit), in_anglvel_scale
//    0.000174532, in_magn_scale 0.001, in_illuminance_scale 0.01.
//  - GET_REPORT(Input) answers the current sample at once (Linux reads in_*_raw that way, waiting
//    up to 5 s); GET_REPORT / SET_REPORT(Feature) read and store the whole feature report;
//    SET_IDLE, GET_IDLE, SET_PROTOCOL and GET_PROTOCOL are accepted; unknown report IDs or types
//    stall.
//  - While a sensor is powered (D0) and reporting all events, its Input report goes out on the
//    interrupt endpoint every report interval (the IIO buffer path), with the latest sample.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "devices/emulated/emulated_device.h"

namespace devices {

enum class SensorKind : uint8_t { kAccelerometer = 1, kGyrometer = 2, kCompass = 3, kLight = 4 };

// A sample in the hub's raw units: centi-g, centi-deg/s, milligauss (x, y, z) or centi-lux (x).
struct SensorSample {
  std::array<int32_t, 3> value{};
};

struct HidSensorHubOptions {
  std::set<SensorKind> sensors = {SensorKind::kAccelerometer};
  std::string manufacturer = "vusb";
  std::string product = "vusb Sensor Hub";
  std::string serial = "0001";
  uint32_t default_interval_ms = 100;
};

class HidSensorHub : public EmulatedDevice {
 public:
  static constexpr uint16_t kVendorId = 0x1209;  // pid.codes
  static constexpr uint16_t kProductId = 0x0001;
  static constexpr uint8_t kInterruptIn = 0x81;
  // Feature report selector values as Linux writes them (positions + 1).
  static constexpr uint8_t kPowerD0 = 2, kPowerD4 = 6;
  static constexpr uint8_t kReportingAll = 2, kReportingNone = 1;

  explicit HidSensorHub(HidSensorHubOptions options = {}, usb::DeviceLocation location = {});
  ~HidSensorHub() override;

  using Timer = std::function<void(std::chrono::microseconds, std::move_only_function<void()>)>;
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  void set_clock(Timer timer, Clock clock);

  static SpeedDescriptors make_descriptors(const HidSensorHubOptions& options);
  static std::vector<uint8_t> report_descriptor(const std::set<SensorKind>& sensors);

  // The latest sample of a sensor (ignored for sensors the hub does not have).
  void set_sample(SensorKind kind, SensorSample sample);
  // Told every sample set_sample() takes (a SensorRecorder writing a trace).
  std::function<void(SensorKind, const SensorSample&)> on_sample;

  struct SensorState {
    uint8_t reporting = kReportingNone;
    uint8_t power = kPowerD4;
    uint32_t interval_ms = 100;
    uint16_t sensitivity = 0;
    SensorSample sample;
    uint64_t input_reports = 0;   // sent on the interrupt endpoint
    uint64_t polled = 0;          // answered to GET_REPORT(Input)
    bool report_pending = false;  // due while no interrupt transfer was queued
    std::chrono::steady_clock::time_point next_due{};
  };
  const SensorState* state(SensorKind kind) const;
  // The Input report of a sensor as it goes on the wire (report ID first).
  std::vector<uint8_t> input_report(SensorKind kind, uint8_t event) const;

 protected:
  ControlReply on_control_request(const usb::SetupPacket& setup, std::span<uint8_t> data) override;
  void on_transfer(usb::Transfer& transfer, const usb::EndpointDescriptor& endpoint) override;
  size_t on_transfer_aborted(usb::Transfer& transfer) override;
  void on_configuration_changed(uint8_t value) override;

 private:
  SensorState* find(uint8_t report_id);
  std::vector<uint8_t> feature_report(SensorKind kind) const;
  bool streaming(const SensorState& s) const {
    return s.power == kPowerD0 && s.reporting == kReportingAll;
  }
  void arm();      // schedules the next interrupt report, if any sensor streams
  void tick();     // marks what is due, then delivers
  void deliver();  // pending reports into queued interrupt transfers, round robin

  HidSensorHubOptions options_;
  std::vector<uint8_t> report_descriptor_;
  std::map<SensorKind, SensorState> sensors_;
  Timer timer_;
  Clock clock_;
  bool armed_ = false;
  std::chrono::steady_clock::time_point armed_for_{};
  bool delivering_ = false;
  SensorKind last_served_ = SensorKind::kLight;  // round robin starts at the first sensor
  uint64_t generation_ = 0;
  uint8_t idle_ = 0;
  uint8_t protocol_ = 1;  // report protocol
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace devices
