#include "devices/libusb/device_filter.h"

#include <gtest/gtest.h>

#include <array>

namespace devices {
namespace {

TEST(DeviceFilter, ParsesVidPid) {
  auto f = parse_device_filter("046d:C52b");
  ASSERT_TRUE(f.has_value()) << f.error().message;
  EXPECT_EQ(*f, DeviceFilter::vid_pid(0x046d, 0xc52b));
  EXPECT_EQ(f->to_string(), "046d:c52b");
  auto short_form = parse_device_filter("1:2");
  ASSERT_TRUE(short_form.has_value());
  EXPECT_EQ(*short_form, DeviceFilter::vid_pid(1, 2));
}

TEST(DeviceFilter, ParsesBusidCanonically) {
  auto f = parse_device_filter("1-1.4.2");
  ASSERT_TRUE(f.has_value()) << f.error().message;
  EXPECT_EQ(f->kind, DeviceFilter::Kind::kBusid);
  EXPECT_EQ(f->busid, "1-1.4.2");
  auto padded = parse_device_filter("03-02");
  ASSERT_TRUE(padded.has_value());
  EXPECT_EQ(padded->busid, "3-2");
  auto deep = parse_device_filter("2-1.2.3.4.5.6.7");
  ASSERT_TRUE(deep.has_value());
  EXPECT_EQ(deep->to_string(), "2-1.2.3.4.5.6.7");
}

TEST(DeviceFilter, ParsesAll) {
  EXPECT_EQ(parse_device_filter("all").value(), DeviceFilter::all());
  EXPECT_EQ(parse_device_filter("*").value(), DeviceFilter::all());
}

TEST(DeviceFilter, RejectsBadInput) {
  for (const char* bad : {"",
                          ":",
                          "046d:",
                          ":c52b",
                          "0046d:c52b",
                          "046d:c52bb",
                          "xyz:1234",
                          "046d:12g4",
                          "1:2:3",
                          "-1",
                          "1-",
                          "0-1",
                          "256-1",
                          "1-0",
                          "1-256",
                          "1-1..2",
                          "1-1.",
                          "1-.1",
                          "1-1.2.3.4.5.6.7.8",
                          "a-1",
                          "1-b",
                          "1-1:2",
                          "+1-1",
                          "1-+1",
                          "046d:-1",
                          "usb1",
                          " 1-1"}) {
    auto f = parse_device_filter(bad);
    EXPECT_FALSE(f.has_value()) << "'" << bad << "' parsed";
    if (!f) {
      EXPECT_EQ(f.error().code, usb::Error::Code::kInvalidArgument);
      EXPECT_NE(f.error().message.find("device filter"), std::string::npos);
    }
  }
}

TEST(DeviceFilter, Matches) {
  DeviceIdentity mouse{0x046d, 0xc52b, 0x00, "1-1.2"};
  EXPECT_TRUE(DeviceFilter::all().matches(mouse));
  EXPECT_TRUE(DeviceFilter::vid_pid(0x046d, 0xc52b).matches(mouse));
  EXPECT_FALSE(DeviceFilter::vid_pid(0x046d, 0xc52c).matches(mouse));
  EXPECT_TRUE(DeviceFilter::bus_id("1-1.2").matches(mouse));
  EXPECT_FALSE(DeviceFilter::bus_id("1-1").matches(mouse));
}

TEST(DeviceFilter, NeverMatchesHubs) {
  DeviceIdentity hub{0x1d6b, 0x0002, kHubClass, "1-1"};
  EXPECT_FALSE(DeviceFilter::all().matches(hub));
  EXPECT_FALSE(DeviceFilter::vid_pid(0x1d6b, 0x0002).matches(hub));
  EXPECT_FALSE(DeviceFilter::bus_id("1-1").matches(hub));
}

TEST(FormatBusid, FromPortNumbers) {
  const std::array<uint8_t, 3> ports{1, 4, 2};
  EXPECT_EQ(format_busid(1, ports), "1-1.4.2");
  const std::array<uint8_t, 1> one{9};
  EXPECT_EQ(format_busid(12, one), "12-9");
  const std::array<uint8_t, 7> deepest{1, 2, 3, 4, 5, 6, 255};
  EXPECT_EQ(format_busid(255, deepest), "255-1.2.3.4.5.6.255");
  EXPECT_EQ(format_busid(3, {}), "usb3");
}

TEST(FormatBusid, RoundTripsThroughTheParser) {
  const std::array<uint8_t, 2> ports{3, 1};
  auto f = parse_device_filter(format_busid(2, ports));
  ASSERT_TRUE(f.has_value());
  EXPECT_TRUE(f->matches(DeviceIdentity{1, 2, 0, "2-3.1"}));
}

}  // namespace
}  // namespace devices
