// The recorded-trace sensor source: parsing (with clear errors for bad lines) and playback into a
// HID sensor hub on the loop's clock. (The evdev source needs a uinput device, which this host
// lacks: e2e.vusbd_sensors exercises it inside a guest.)
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include "devices/emulated/hid_sensor_hub.h"
#include "devices/evdev/sensor_sources.h"

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
