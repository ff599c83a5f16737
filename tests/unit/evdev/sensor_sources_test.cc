// The recorded-trace sensor source: parsing (with clear errors for bad lines) and playback into a
// HID sensor hub on the loop's clock. (The evdev source needs a uinput device, which this host
// lacks: e2e.vusbd_sensors exercises it inside a guest.)
#include "devices/evdev/sensor_sources.h"

#include <gtest/gtest.h>
#include <libevdev/libevdev.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <fstream>

#include "devices/emulated/hid_sensor_hub.h"

namespace devices {
namespace {

TEST(ReplayTrace, ParsesStepsAndNamesTheBadLine) {
  auto steps = ReplaySensorSource::parse(
      "# a phone lying flat, then tilted\n"
      "0 accel 0 0 100\n"
      "\n"
      "50 accel 0 71 71\r\n"
      "50 light 12345\n");
  ASSERT_TRUE(steps.has_value()) << steps.error().message;
  ASSERT_EQ(steps->size(), 3u);
  EXPECT_EQ((*steps)[1].at, std::chrono::milliseconds(50));
  EXPECT_EQ((*steps)[1].sample.value, (std::array<int32_t, 3>{0, 71, 71}));
  EXPECT_EQ((*steps)[2].kind, SensorKind::kLight);
  EXPECT_EQ(ReplaySensorSource::sensors_of(*steps),
            (std::set<SensorKind>{SensorKind::kAccelerometer, SensorKind::kLight}));

  auto bad = [](std::string_view text) {
    auto r = ReplaySensorSource::parse(text);
    return r ? std::string("parsed") : r.error().message;
  };
  EXPECT_NE(bad("0 accel 1 2\n").find("line 1"), std::string::npos);
  EXPECT_NE(bad("0 accel 1 2 3\nx accel 1 2 3\n").find("line 2"), std::string::npos);
  EXPECT_NE(bad("10 accel 1 2 3\n5 accel 1 2 3\n").find("back"), std::string::npos);
  EXPECT_NE(bad("0 barometer 1\n").find("barometer"), std::string::npos);
  EXPECT_NE(bad("0 light 1 2 3\n").find("1 value"), std::string::npos);
  EXPECT_NE(bad("0 accel 1 2 99999999999\n").find("value"), std::string::npos);
  EXPECT_NE(bad("# nothing\n").find("no steps"), std::string::npos);
}

TEST(ReplayTrace, PlaysIntoTheHubOnTheLoopClock) {
  boost::asio::io_context io;
  HidSensorHub hub(HidSensorHubOptions{.sensors = {SensorKind::kAccelerometer}});
  auto steps = ReplaySensorSource::parse("0 accel 1 2 3\n30 accel 4 5 6\n60 accel 7 8 9\n");
  ASSERT_TRUE(steps.has_value());
  ReplaySensorSource replay(io, *steps, /*loop=*/false);
  replay.start(hub);
  io.run_for(std::chrono::milliseconds(15));
  EXPECT_EQ(hub.state(SensorKind::kAccelerometer)->sample.value, (std::array<int32_t, 3>{1, 2, 3}));
  io.run_for(std::chrono::milliseconds(200));
  EXPECT_EQ(replay.played(), 3u);
  EXPECT_EQ(hub.state(SensorKind::kAccelerometer)->sample.value, (std::array<int32_t, 3>{7, 8, 9}));
}

TEST(SensorTrace, ARecordedTraceReplaysTheSamples) {
  const auto path = std::filesystem::path(::testing::TempDir()) / "vusb-recorded.trace";
  auto t = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  HidSensorHub hub(
      HidSensorHubOptions{.sensors = {SensorKind::kAccelerometer, SensorKind::kLight}});
  {
    auto recorder = SensorRecorder::create(path.string(), [&] { return t; });
    ASSERT_TRUE(recorder.has_value()) << recorder.error().message;
    (*recorder)->attach(hub);
    hub.set_sample(SensorKind::kAccelerometer, {{0, 0, 100}});
    t += std::chrono::milliseconds(40);
    hub.set_sample(SensorKind::kLight, {{12345, 0, 0}});
    hub.set_sample(SensorKind::kGyrometer, {{1, 2, 3}});  // not in this hub: not recorded
    t += std::chrono::milliseconds(25);
    hub.set_sample(SensorKind::kAccelerometer, {{-7, 71, -71}});
    EXPECT_EQ((*recorder)->recorded(), 3u);
  }
  auto steps = ReplaySensorSource::load(path.string());
  ASSERT_TRUE(steps.has_value()) << steps.error().message;
  ASSERT_EQ(steps->size(), 3u);
  EXPECT_EQ((*steps)[0].at, std::chrono::milliseconds(0));
  EXPECT_EQ((*steps)[1].at, std::chrono::milliseconds(40));
  EXPECT_EQ((*steps)[1].kind, SensorKind::kLight);
  EXPECT_EQ((*steps)[1].sample.value[0], 12345);
  EXPECT_EQ((*steps)[2].at, std::chrono::milliseconds(65));
  EXPECT_EQ((*steps)[2].sample.value, (std::array<int32_t, 3>{-7, 71, -71}));
  hub.set_sample(SensorKind::kAccelerometer, {{1, 1, 1}});  // the recorder is gone: no call
  EXPECT_FALSE(SensorRecorder::create("/nonexistent-dir/x.trace", [&] { return t; }).has_value());
}

TEST(EvdevSensors, WhatAnInputDeviceProvides) {
  auto make = [](const char* name, bool accel_prop, std::vector<unsigned> abs) {
    libevdev* d = libevdev_new();
    libevdev_set_name(d, name);
    if (accel_prop) libevdev_enable_property(d, INPUT_PROP_ACCELEROMETER);
    for (unsigned code : abs) {
      input_absinfo a{
          .value = 0, .minimum = -100, .maximum = 100, .fuzz = 0, .flat = 0, .resolution = 10};
      libevdev_enable_event_code(d, EV_ABS, code, &a);
    }
    auto kinds = EvdevSensorSource::sensors_of(d);
    libevdev_free(d);
    return kinds;
  };
  using K = std::set<SensorKind>;
  EXPECT_EQ(make("st_lsm6dsx accel", true, {ABS_X, ABS_Y, ABS_Z, ABS_RX, ABS_RY, ABS_RZ}),
            (K{SensorKind::kAccelerometer, SensorKind::kGyrometer}));
  EXPECT_EQ(make("akm8975 compass", false, {ABS_X, ABS_Y, ABS_Z}), K{SensorKind::kCompass});
  EXPECT_EQ(make("Magnetometer", false, {ABS_X, ABS_Y, ABS_Z}), K{SensorKind::kCompass});
  EXPECT_EQ(make("lightsensor-level", false, {ABS_MISC}), K{SensorKind::kLight});
  EXPECT_EQ(make("cm3602 ALS", false, {ABS_MISC}), K{SensorKind::kLight});
  // A joystick (ABS_X/Y/Z, no property, no sensor name) and a "falsetto" pad are not sensors.
  EXPECT_TRUE(make("Logitech Extreme 3D", false, {ABS_X, ABS_Y, ABS_Z}).empty());
  EXPECT_TRUE(make("falsetto pad", false, {ABS_MISC}).empty());
  EXPECT_TRUE(make("ALSA volume knob", false, {ABS_MISC}).empty());
  EXPECT_TRUE(make("accel without axes", true, {ABS_X}).empty());
}

TEST(ReplayTrace, LoopsWhenAsked) {
  boost::asio::io_context io;
  HidSensorHub hub(HidSensorHubOptions{.sensors = {SensorKind::kAccelerometer}});
  ReplaySensorSource replay(io, *ReplaySensorSource::parse("0 accel 1 1 1\n10 accel 2 2 2\n"),
                            /*loop=*/true);
  replay.start(hub);
  io.run_for(std::chrono::milliseconds(120));
  EXPECT_GE(replay.played(), 8u);
}

}  // namespace
}  // namespace devices

namespace devices {
namespace {

// A phone's IIO devices, as files in a directory shaped like sysfs.
class FakeIio : public ::testing::Test {
 protected:
  FakeIio() : root(std::filesystem::path(::testing::TempDir()) / "vusb-iio") {
    std::filesystem::remove_all(root);
    std::filesystem::create_directories(root / "iio:device0");
    std::filesystem::create_directories(root / "iio:device1");
    std::filesystem::create_directories(root / "iio:device2");
    // An accelerometer reporting in units of 0.01 m/s², a gyroscope with an offset.
    write("iio:device0/name", "bmi160_accel");
    write("iio:device0/in_accel_x_raw", "0");
    write("iio:device0/in_accel_y_raw", "-981");
    write("iio:device0/in_accel_z_raw", "4903");
    write("iio:device0/in_accel_scale", "0.010000");
    write("iio:device0/in_anglvel_x_raw", "100");
    write("iio:device0/in_anglvel_y_raw", "0");
    write("iio:device0/in_anglvel_z_raw", "0");
    write("iio:device0/in_anglvel_scale", "0.001064724");
    write("iio:device0/in_anglvel_x_offset", "-10");
    // A light sensor already in lux, and something else.
    write("iio:device1/in_illuminance_input", "123.45");
    write("iio:device2/in_voltage0_raw", "7");
  }
  void write(const std::string& rel, const std::string& text) {
    std::ofstream(root / rel) << text << "\n";
  }
  std::filesystem::path root;
};

TEST_F(FakeIio, FindsSensorsAndConvertsToTheHubsUnits) {
  const auto found = IioSensorSource::find_devices(root.string());
  ASSERT_EQ(found.size(), 2u);  // not the voltage-only device
  boost::asio::io_context io;
  // The worker posts results later: keep the loop waiting for them.
  auto guard = boost::asio::make_work_guard(io);
  auto src = IioSensorSource::open(io, found[0], std::chrono::milliseconds(10));
  ASSERT_TRUE(src.has_value()) << src.error().message;
  EXPECT_EQ((*src)->sensors(),
            (std::set<SensorKind>{SensorKind::kAccelerometer, SensorKind::kGyrometer}));
  auto light = IioSensorSource::open(io, found[1], std::chrono::milliseconds(10));
  ASSERT_TRUE(light.has_value());
  HidSensorHub hub(HidSensorHubOptions{
      .sensors = {SensorKind::kAccelerometer, SensorKind::kGyrometer, SensorKind::kLight}});
  (*src)->start(hub);
  (*light)->start(hub);
  for (int i = 0; i < 100 && ((*src)->samples() < 2 || (*light)->samples() < 2); ++i)
    io.run_for(std::chrono::milliseconds(10));
  ASSERT_GE((*src)->samples(), 2u);
  // -9.81 m/s² → -100 centi-g; 49.03 m/s² → 500 centi-g.
  EXPECT_EQ(hub.state(SensorKind::kAccelerometer)->sample.value,
            (std::array<int32_t, 3>{0, -100, 500}));
  // (100 - 10) × 0.001064724 rad/s = 5.49 deg/s → 549 centi-deg/s.
  EXPECT_EQ(hub.state(SensorKind::kGyrometer)->sample.value[0], 549);
  EXPECT_EQ(hub.state(SensorKind::kLight)->sample.value[0], 12345);
  // The sensor moves: the next poll carries it.
  write("iio:device0/in_accel_z_raw", "981");
  const auto seen = (*src)->samples();
  for (int i = 0; i < 100 && (*src)->samples() < seen + 2; ++i)
    io.run_for(std::chrono::milliseconds(10));
  EXPECT_EQ(hub.state(SensorKind::kAccelerometer)->sample.value[2], 100);
}

TEST_F(FakeIio, ADeviceWithoutSensorChannelsIsRefused) {
  boost::asio::io_context io;
  auto r =
      IioSensorSource::open(io, (root / "iio:device2").string(), std::chrono::milliseconds(10));
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("no accel"), std::string::npos);
}

}  // namespace
}  // namespace devices
