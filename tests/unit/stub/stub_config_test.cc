#include "usb-stub/stub_config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace stub {
namespace {

TEST(StubConfigTest, ParseEmulate) {
  auto a = parse_emulate("gadget-zero");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->busid, "");
  EXPECT_EQ(a->speed, "high");
  auto b = parse_emulate("gadget-zero=2-3");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->busid, "2-3");
  auto c = parse_emulate("gadget-zero=1-1,speed=super");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->speed, "super");
  EXPECT_FALSE(parse_emulate("webcam"));
  EXPECT_FALSE(parse_emulate("gadget-zero=1-1,speed=warp"));
  EXPECT_FALSE(parse_emulate("gadget-zero=1-1,colour=red"));
  auto d = parse_emulate("gadget-zero=1-2,bulk_rate=1000000,isoc_mult=1");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->busid, "1-2");
  EXPECT_EQ(d->options, "bulk_rate=1000000,isoc_mult=1");
  EXPECT_FALSE(parse_emulate("gadget-zero=1-1,isoc_mult=3"));
  EXPECT_FALSE(parse_emulate("gadget-zero=" + std::string(40, '1')));
}

TEST(StubConfigTest, LoadToml) {
  const std::string path = ::testing::TempDir() + "/stub.toml";
  std::ofstream(path) << R"(
listen = "127.0.0.1:4000"
max_urb_bytes = 1048576
max_inflight_bytes = 8388608
log_level = "debug"
[[emulate]]
type = "gadget-zero"
busid = "1-1"
[[emulate]]
type = "gadget-zero"
speed = "super"
[libusb]
devices = ["0525:a4a0", "3-1.2"]
all = true
[sensors]
sources = ["evdev", "replay:walk.trace,loop"]
record = "out.trace"
[input]
devices = ["evdev:/dev/input/event5,nograb"]
)";
  StubConfig c;
  auto r = load_toml(path, c);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(c.listen.size(), 1u);
  EXPECT_EQ(c.listen[0].tcp.host, "127.0.0.1");
  EXPECT_EQ(c.listen[0].tcp.port, 4000);
  EXPECT_EQ(c.limits.wire.max_transfer_length, 1048576u);
  EXPECT_EQ(c.limits.max_inflight_bytes, 8388608u);
  EXPECT_EQ(c.log_level, "debug");
  ASSERT_EQ(c.emulate.size(), 2u);
  EXPECT_EQ(c.emulate[0].busid, "1-1");
  EXPECT_EQ(c.emulate[1].speed, "super");
  EXPECT_EQ(c.libusb, (std::vector<std::string>{"0525:a4a0", "3-1.2"}));
  EXPECT_TRUE(c.libusb_all);
  EXPECT_EQ(c.sensors, (std::vector<std::string>{"evdev", "replay:walk.trace,loop"}));
  EXPECT_EQ(c.record_sensors, "out.trace");
  EXPECT_EQ(c.inputs, (std::vector<std::string>{"evdev:/dev/input/event5,nograb"}));
  EXPECT_TRUE(validate(c));
  c.sensors.clear();
  EXPECT_FALSE(validate(c)) << "a recording with nothing to record";
  std::remove(path.c_str());
}

TEST(StubConfigTest, BadTomlIsAClearError) {
  const std::string path = ::testing::TempDir() + "/bad.toml";
  std::ofstream(path) << "listen = \n";
  StubConfig c;
  auto r = load_toml(path, c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("bad.toml"), std::string::npos);
  StubConfig d;
  EXPECT_FALSE(load_toml("/nonexistent/vusb.toml", d));
  std::remove(path.c_str());
}

TEST(StubConfigTest, TheDefaultListenAddressIsLoopback) {
  // USB/IP has no authentication: the network gets the port only when asked for.
  EXPECT_EQ(StubConfig{}.listen, std::vector{usb::net::Endpoint("127.0.0.1", 3240)});
}

TEST(StubConfigTest, NegativeOrHugeLimitsAreRefusedNotWrapped) {
  // max_inflight_bytes = -1 used to become 2^64 - 1: the cap was off.
  const std::string path = ::testing::TempDir() + "/limits.toml";
  for (const char* text : {"max_inflight_bytes = -1\n", "max_inflight_bytes = 0\n",
                           "max_urb_bytes = -4096\n", "max_urb_bytes = 2147483648\n",
                           "max_inflight_bytes = 9223372036854775807\n"}) {
    std::ofstream(path) << text;
    StubConfig c;
    auto r = load_toml(path, c);
    EXPECT_FALSE(r) << text;
    if (!r) {
      EXPECT_NE(r.error().message.find("must be 1.."), std::string::npos) << text;
    }
  }
  std::ofstream(path) << "max_inflight_bytes = 1048576\nmax_urb_bytes = 65536\n";
  StubConfig ok;
  ASSERT_TRUE(load_toml(path, ok));
  EXPECT_EQ(ok.limits.max_inflight_bytes, 1048576u);
  EXPECT_EQ(ok.limits.wire.max_transfer_length, 65536u);
  std::remove(path.c_str());
}

TEST(StubConfigTest, ValidateRejectsImpossibleLimits) {
  StubConfig c;
  c.limits.max_inflight_bytes = 1000;
  c.limits.wire.max_transfer_length = 2000;
  EXPECT_FALSE(validate(c));
  c.limits.wire.max_transfer_length = 0;
  EXPECT_FALSE(validate(c));
}

TEST(StubConfigTest, TlsListenersAllowListsAndAccessRules) {
  const std::string path = ::testing::TempDir() + "/stub-tls.toml";
  std::ofstream(path) << R"(
listen = ["127.0.0.1:3240", "tls:0.0.0.0:3241"]
allow = ["127.0.0.1", "cn:vm1"]
[tls]
ca = "ca.crt"
cert = "stub.crt"
key = "stub.key"
[[access]]
devices = ["1-1", "hid"]
peers = ["cn:vm1", "psk:phone"]
)";
  StubConfig c;
  ASSERT_TRUE(load_toml(path, c));
  ASSERT_EQ(c.listen.size(), 2u);
  EXPECT_FALSE(c.listen[0].tls);
  EXPECT_TRUE(c.listen[1].tls);
  EXPECT_EQ(c.listen[1].to_string(), "tls:0.0.0.0:3241");
  EXPECT_EQ(c.tls.cert_file, "stub.crt");
  EXPECT_EQ(c.allow, (std::vector<std::string>{"127.0.0.1", "cn:vm1"}));
  ASSERT_EQ(c.access.size(), 1u);
  EXPECT_EQ(c.access[0].peers[1], "psk:phone");
  EXPECT_TRUE(validate(c));

  StubConfig no_tls;
  no_tls.listen = {*usb::net::parse_endpoint("tls:0.0.0.0:3241")};
  auto r = validate(no_tls);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("needs [tls]"), std::string::npos);
  StubConfig bad_rule;
  bad_rule.allow = {"everyone"};
  EXPECT_FALSE(validate(bad_rule));
  bad_rule.allow.clear();
  bad_rule.access = {{{"1-1"}, {}}};
  EXPECT_FALSE(validate(bad_rule));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace stub
