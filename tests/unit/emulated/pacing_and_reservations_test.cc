// Gadget Zero's bus-speed cap and option strings; the reservation ("dummy") device's descriptors.
#include <gtest/gtest.h>

#include <map>

#include "devices/emulated/gadget_zero.h"
#include "devices/emulated/reservation_device.h"

namespace devices {
namespace {

using namespace std::chrono_literals;
using usb::Status;
using usb::Transfer;

TEST(GadgetZeroPacing, BulkCompletesWhenALinkOfTheCapRateWouldBeThrough) {
  std::chrono::steady_clock::time_point now{};
  std::multimap<std::chrono::steady_clock::time_point, std::move_only_function<void()>> timers;
  GadgetZeroOptions o;
  o.bulk_rate = 1'000'000;
  GadgetZero gz(o);
  gz.set_pacing([&](std::chrono::milliseconds d,
                    std::move_only_function<void()> fn) { timers.emplace(now + d, std::move(fn)); },
                [&] { return now; });
  gz.set_configuration(GadgetZero::kSourceSinkConfig, [](Status) {});
  std::vector<std::unique_ptr<Transfer>> urbs;
  std::vector<std::chrono::steady_clock::time_point> done;
  for (int i = 0; i < 3; ++i) {
    urbs.push_back(
        std::make_unique<Transfer>(GadgetZero::kBulkIn, usb::TransferType::kBulk, 10000));
    urbs.back()->set_completion([&](Transfer& t) {
      EXPECT_EQ(t.status(), Status::kOk);
      EXPECT_EQ(t.actual_length(), 10000u);
      done.push_back(now);
    });
    gz.submit(*urbs.back());
  }
  EXPECT_TRUE(done.empty()) << "nothing completes before the link carried it";
  while (!timers.empty()) {
    auto it = timers.begin();
    now = it->first;
    auto fn = std::move(it->second);
    timers.erase(it);
    fn();
  }
  // 10 000 bytes at 1 MB/s: 10 ms each, one after another.
  ASSERT_EQ(done.size(), 3u);
  EXPECT_EQ(done[0].time_since_epoch(), 10ms);
  EXPECT_EQ(done[1].time_since_epoch(), 20ms);
  EXPECT_EQ(done[2].time_since_epoch(), 30ms);
}

TEST(GadgetZeroPacing, ACancelledPacedTransferCompletesOnceAndLeavesThePacer) {
  std::vector<std::move_only_function<void()>> timers;
  GadgetZeroOptions o;
  o.bulk_rate = 1000;
  GadgetZero gz(o);
  gz.set_pacing([&](auto, std::move_only_function<void()> fn) { timers.push_back(std::move(fn)); },
                [] { return std::chrono::steady_clock::time_point{}; });
  gz.set_configuration(GadgetZero::kSourceSinkConfig, [](Status) {});
  int calls = 0;
  Transfer t(GadgetZero::kBulkIn, usb::TransferType::kBulk, 512);
  t.set_completion([&](Transfer& x) {
    ++calls;
    EXPECT_EQ(x.status(), Status::kCancelled);
  });
  gz.submit(t);
  t.cancel();
  for (auto& fn : timers) fn();  // the pacer's timer finds nothing due
  EXPECT_EQ(calls, 1);
}

TEST(GadgetZeroOptionsText, ParsesKnownKeysAndRefusesTheRest) {
  auto o = parse_gadget_zero_options("isoc_mult=1,isoc_interval=1,bulk_rate=1000000,speed=super");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->isoc_mult, 1);
  EXPECT_EQ(o->isoc_interval, 1);
  EXPECT_EQ(o->bulk_rate, 1000000u);
  EXPECT_EQ(o->speed, usb::Speed::kSuper);
  EXPECT_TRUE(parse_gadget_zero_options(""));
  for (const char* bad :
       {"isoc_mult=3", "isoc_interval=0", "bulk_rate=x", "bulk_rate=", "colour=1", "speed=warp",
        "isoc_mult", "pattern=-1", "bulk_rate=99999999999999999999"})
    EXPECT_FALSE(parse_gadget_zero_options(bad)) << bad;
}

TEST(ReservationDevice, DeclaresOthersEndpointsInAlternateOneWithTheirStrings) {
  usb::EndpointDescriptor in;
  in.address = 0x82;
  in.attributes = 0x01;
  in.max_packet_size = 1024 | (1 << 11);
  in.interval = 1;
  usb::EndpointDescriptor out = in;
  out.address = 0x02;
  ReservationList list;
  list.summary = "emulated (high): 17.8 us of 100.0 us free";
  list.entries.push_back({"vm1: gz1 if 0 alt 1, 82.2 us per microframe", {in, out}});
  ReservationDevice dev(list, {});
  const auto& d = dev.descriptors();
  EXPECT_EQ(d.device.vendor_id, ReservationDevice::kVendorId);
  const auto& cfg = d.configurations.at(0);
  ASSERT_EQ(cfg.interfaces.size(), 2u);
  EXPECT_TRUE(cfg.interfaces[0].endpoints.empty()) << "alt 0 takes no bandwidth";
  ASSERT_EQ(cfg.interfaces[1].endpoints.size(), 2u);
  EXPECT_EQ(cfg.interfaces[1].endpoints[0].address, 0x81);
  EXPECT_EQ(cfg.interfaces[1].endpoints[0].max_packet_size, 1024 | (1 << 11));
  EXPECT_EQ(cfg.interfaces[1].endpoints[1].address, 0x01);
  EXPECT_EQ(d.strings.at(cfg.string_index - 1), list.summary);
  EXPECT_EQ(d.strings.at(cfg.interfaces[1].string_index - 1), list.entries[0].label);
  // Valid wire descriptors.
  auto parsed = usb::ConfigurationDescriptor::parse(cfg.build());
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->interfaces.size(), 2u);
  // Nobody else holds anything: one empty interface says so.
  ReservationDevice empty(ReservationList{}, {});
  EXPECT_EQ(empty.descriptors().configurations.at(0).interfaces.size(), 1u);
}

}  // namespace
}  // namespace devices

namespace devices {
namespace {

TEST(ReservationDevice, FullAndSuperSpeedEndpointsAreStatedAtHighSpeedWithTheSameLoad) {
  usb::EndpointDescriptor fs_int;
  fs_int.address = 0x81;
  fs_int.attributes = 0x03;
  fs_int.max_packet_size = 8;
  fs_int.interval = 10;  // every 10 frames → every 8 (a power of two at or below): 64 µframes
  auto hs = ReservationDevice::as_high_speed(fs_int, usb::Speed::kFull);
  ASSERT_EQ(hs.size(), 1u);
  EXPECT_EQ(hs[0].interval, 7);  // 2^(7-1) = 64 microframes
  usb::EndpointDescriptor fs_iso = fs_int;
  fs_iso.attributes = 0x01;
  fs_iso.max_packet_size = 1023;
  fs_iso.interval = 1;  // every frame
  hs = ReservationDevice::as_high_speed(fs_iso, usb::Speed::kFull);
  EXPECT_EQ(hs[0].interval, 4);  // 8 microframes
  usb::EndpointDescriptor ss_iso;
  ss_iso.address = 0x82;
  ss_iso.attributes = 0x01;
  ss_iso.max_packet_size = 1024;
  ss_iso.interval = 1;
  ss_iso.ss_companion =
      usb::SsEndpointCompanion{.max_burst = 15, .attributes = 2, .bytes_per_interval = 49152};
  hs = ReservationDevice::as_high_speed(ss_iso, usb::Speed::kSuper);
  ASSERT_EQ(hs.size(), 16u);  // 49152 B = 16 x 3 x 1024
  for (const auto& e : hs) {
    EXPECT_EQ(e.max_packet(), 1024);
    EXPECT_EQ(e.hs_transactions(), 3);
  }
}

}  // namespace
}  // namespace devices
