// Sensor sources: where a HidSensorHub's samples come from (devices/emulated/hid_sensor_hub.h).
//  - EvdevSensorSource: a sensor input device read with libevdev. With INPUT_PROP_ACCELEROMETER,
//    ABS_X/Y/Z is an accelerometer (resolution: units per g) and ABS_RX/RY/RZ a gyroscope (units
//    per degree/s), as Linux's input ABI defines motion sensors. The input ABI has no property for
//    magnetometers or light sensors; the input drivers some phones ship for them are recognised
//    by name: "compass" / "magnet" with ABS_X/Y/Z is a compass (resolution: units per gauss),
//    "light" / "ambient" / "als" with ABS_MISC a light sensor (units per lux); resolution 0 means
//    1. Each SYN_REPORT hands the hub one sample per sensor that changed; SYN_DROPPED
//    resynchronises from libevdev's state. The descriptor is non-blocking and watched by the
//    loop's reactor (no worker thread: evdev reads never block).
//  - IioSensorSource: an IIO device as a phone exposes it in sysfs (/sys/bus/iio/devices/
//    iio:deviceN): in_accel_{x,y,z}_raw (m/s² after in_accel_scale), in_anglvel_* (rad/s),
//    in_magn_* (gauss), in_illuminance_raw or _input (lux); scale and offset per channel type or
//    per axis. Polled every `period` on a worker thread (an IIO raw read may wait for a
//    conversion), results posted back to the loop.
//  - ReplaySensorSource: a recorded trace ("TIME_MS KIND X [Y Z]" per line, KIND accel | gyro |
//    compass | light, values in the hub's raw units: centi-g, centi-deg/s, milligauss,
//    centi-lux), played on the loop's timer, optionally looped: for machines without sensors
//    (this host has no uinput).
//  - SensorRecorder: writes the samples a hub takes (from any source) as such a trace, so a
//    phone's motion recorded once can be replayed anywhere.
//
// Owned by the exporting daemon beside the hub they feed; live on its loop. The hub must outlive
// them.
#pragma once

#include <linux/input.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "devices/emulated/hid_sensor_hub.h"
#include "usb/core/error.h"

struct libevdev;

namespace devices {

class EvdevReader;
struct OpenedEvdev;

class EvdevSensorSource {
 public:
  // Opens `path` (a /dev/input/eventN that is a sensor, above).
  static usb::Result<std::unique_ptr<EvdevSensorSource>> open(boost::asio::io_context& io,
                                                              const std::string& path);
  // Every sensor input device under /dev/input.
  static std::vector<std::string> find_devices();
  // The sensors an input device provides (empty: not a sensor).
  static std::set<SensorKind> sensors_of(const libevdev* dev);
  ~EvdevSensorSource();

  // The sensors this device provides.
  const std::set<SensorKind>& sensors() const { return sensors_; }
  const std::string& name() const { return name_; }
  // Starts feeding `hub` (which must have these sensors).
  void start(HidSensorHub& hub);
  uint64_t samples() const { return samples_; }

 private:
  EvdevSensorSource(boost::asio::io_context& io, OpenedEvdev opened, std::string path);
  void handle(const input_event& ev);
  void emit();

  std::unique_ptr<EvdevReader> reader_;
  libevdev* dev_;
  std::string path_;
  std::string name_;
  std::set<SensorKind> sensors_;
  HidSensorHub* hub_ = nullptr;
  // One per sensor: its axes' codes, their values as last reported, units per source unit.
  struct Channel {
    SensorKind kind;
    std::array<unsigned, 3> codes;
    size_t axes;
    int resolution;
    int32_t hub_units;  // hub raw units per source unit: 100 (centi-), 1000 (milligauss)
    std::array<int32_t, 3> value{};
    bool dirty = true;
  };
  std::vector<Channel> channels_;
  uint64_t samples_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

class BlockingWorker;

class IioSensorSource {
 public:
  // Reads `dir` (an iio:deviceN directory) and finds the channels it has.
  static usb::Result<std::unique_ptr<IioSensorSource>> open(boost::asio::io_context& io,
                                                            const std::string& dir,
                                                            std::chrono::milliseconds period);
  // Every IIO device under /sys/bus/iio/devices with a channel this source knows.
  static std::vector<std::string> find_devices(const std::string& root = "/sys/bus/iio/devices");
  ~IioSensorSource();

  const std::set<SensorKind>& sensors() const { return sensors_; }
  void start(HidSensorHub& hub);
  uint64_t samples() const { return samples_; }

  // One channel: raw value files, the factor to the hub's raw unit, the offset.
  struct Channel {
    SensorKind kind;
    std::vector<std::string> files;  // 3 axes, or 1 for light
    std::vector<double> scale;       // per file: (raw + offset) * scale = the hub's unit
    std::vector<double> offset;
  };

 private:
  IioSensorSource(boost::asio::io_context& io, std::string dir, std::vector<Channel> channels,
                  std::chrono::milliseconds period);
  void poll();

  boost::asio::io_context& io_;
  boost::asio::steady_timer timer_;
  std::string dir_;
  std::vector<Channel> channels_;
  std::set<SensorKind> sensors_;
  std::chrono::milliseconds period_;
  std::unique_ptr<BlockingWorker> worker_;
  HidSensorHub* hub_ = nullptr;
  uint64_t samples_ = 0;
  bool warned_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

class ReplaySensorSource {
 public:
  struct Step {
    std::chrono::milliseconds at;
    SensorKind kind;
    SensorSample sample;
  };
  // Parses a trace; blank lines and lines starting with '#' are skipped. Times must not go back.
  static usb::Result<std::vector<Step>> parse(std::string_view text);
  static usb::Result<std::vector<Step>> load(const std::string& path);
  static std::set<SensorKind> sensors_of(const std::vector<Step>& steps);
  // A kind as traces name it: accel, gyro, compass, light.
  static const char* kind_name(SensorKind kind);
  // One trace line (no newline), as parse() reads it.
  static std::string format(const Step& step);

  ReplaySensorSource(boost::asio::io_context& io, std::vector<Step> steps, bool loop);
  ~ReplaySensorSource();
  void start(HidSensorHub& hub);
  uint64_t played() const { return played_; }

 private:
  void next();

  boost::asio::steady_timer timer_;
  std::vector<Step> steps_;
  bool loop_;
  size_t index_ = 0;
  std::chrono::steady_clock::time_point epoch_{};
  HidSensorHub* hub_ = nullptr;
  uint64_t played_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

class SensorRecorder {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  // Creates (truncates) `path` and writes a comment header.
  static usb::Result<std::unique_ptr<SensorRecorder>> create(const std::string& path, Clock clock);
  ~SensorRecorder();
  // Records every sample `hub` takes from now on, timed from the first one.
  void attach(HidSensorHub& hub);
  void record(SensorKind kind, const SensorSample& sample);
  uint64_t recorded() const { return recorded_; }

 private:
  SensorRecorder(std::FILE* file, std::string path, Clock clock);
  std::FILE* file_;
  std::string path_;
  Clock clock_;
  std::optional<std::chrono::steady_clock::time_point> start_;
  std::chrono::milliseconds last_{0};
  HidSensorHub* hub_ = nullptr;
  uint64_t recorded_ = 0;
  bool failed_ = false;
};

}  // namespace devices
