// The HID sensor hub as Linux's usbhid + hid-sensor-hub drive it: the report descriptor and its
// layout, the feature report round trip, GET_REPORT(Input) for in_*_raw reads, interrupt reports
// while a sensor is powered and reporting, refusals.
#include "devices/emulated/hid_sensor_hub.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "emulated_test_util.h"
#include "tests/unit/sim_time.h"

namespace {

using namespace emutest;
using devices::HidSensorHub;
using devices::HidSensorHubOptions;
using devices::SensorKind;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

using vusb::testing::SimTime;

bool contains(const std::vector<uint8_t>& hay, std::vector<uint8_t> needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

Outcome get_report(HidSensorHub& hub, uint8_t type, uint8_t id, uint16_t length = 64) {
  return control(hub, setup(Direction::kIn, RequestType::kClass, Recipient::kInterface, 0x01,
                            static_cast<uint16_t>(type << 8 | id), 0, length));
}

Outcome set_feature(HidSensorHub& hub, uint8_t id, uint8_t reporting, uint8_t power,
                    uint32_t interval, uint16_t sensitivity = 0) {
  std::vector<uint8_t> r = {id,
                            reporting,
                            power,
                            static_cast<uint8_t>(interval),
                            static_cast<uint8_t>(interval >> 8),
                            static_cast<uint8_t>(interval >> 16),
                            static_cast<uint8_t>(interval >> 24),
                            static_cast<uint8_t>(sensitivity),
                            static_cast<uint8_t>(sensitivity >> 8)};
  return control(hub,
                 setup(Direction::kOut, RequestType::kClass, Recipient::kInterface, 0x09,
                       static_cast<uint16_t>(3 << 8 | id), 0, static_cast<uint16_t>(r.size())),
                 r);
}

class SensorHub : public ::testing::Test {
 protected:
  SensorHub()
      : hub(HidSensorHubOptions{.sensors = {SensorKind::kAccelerometer, SensorKind::kGyrometer,
                                            SensorKind::kCompass, SensorKind::kLight}}) {
    hub.set_clock([this](auto d, auto fn) { time.arm(d, std::move(fn)); },
                  [this] { return time.now(); });
    EXPECT_EQ(set_configuration(hub, 1).status, Status::kOk);
  }
  SimTime time;
  HidSensorHub hub;
};

TEST_F(SensorHub, ReportDescriptorHasOnePhysicalSensorCollectionPerSensor) {
  const auto& intf = hub.descriptors().configurations[0].interfaces[0];
  EXPECT_EQ(intf.interface_class, 3);
  EXPECT_EQ(intf.interface_subclass, 0) << "a boot interface would make Linux skip GET_REPORT";
  ASSERT_EQ(intf.endpoints.size(), 1u);
  EXPECT_EQ(intf.endpoints[0].type(), usb::TransferType::kInterrupt);
  // The report descriptor, as usbhid reads it (GET_DESCRIPTOR 0x22 to the interface).
  auto d = control(hub, setup(Direction::kIn, RequestType::kStandard, Recipient::kInterface,
                              usb::request::kGetDescriptor, 0x2200, 0, 4096));
  ASSERT_EQ(d.status, Status::kOk);
  EXPECT_EQ(d.data,
            HidSensorHub::report_descriptor({SensorKind::kAccelerometer, SensorKind::kGyrometer,
                                             SensorKind::kCompass, SensorKind::kLight}));
  // The HID descriptor announces its length.
  EXPECT_EQ(intf.extra[7] | intf.extra[8] << 8, static_cast<int>(d.data.size()));
  // Usage Page (Sensors), Usage (sensor), Collection (Physical), Report ID: per sensor.
  EXPECT_TRUE(contains(d.data, {0x05, 0x20, 0x09, 0x73, 0xa1, 0x00, 0x85, 0x01}));
  EXPECT_TRUE(contains(d.data, {0x05, 0x20, 0x09, 0x76, 0xa1, 0x00, 0x85, 0x02}));
  EXPECT_TRUE(contains(d.data, {0x05, 0x20, 0x09, 0x83, 0xa1, 0x00, 0x85, 0x03}));
  EXPECT_TRUE(contains(d.data, {0x05, 0x20, 0x09, 0x41, 0xa1, 0x00, 0x85, 0x04}));
  // Unit None; accel X, Y, Z each their own Input item; power state selectors D0..D4.
  EXPECT_TRUE(contains(d.data, {0x65, 0x00}));
  EXPECT_TRUE(contains(d.data, {0x0a, 0x53, 0x04, 0x81, 0x02, 0x0a, 0x54, 0x04, 0x81, 0x02}));
  EXPECT_TRUE(contains(d.data, {0x0a, 0x19, 0x03, 0x15, 0x01, 0x25, 0x06}));
  // The layout the facts in docs/STATUS.md were checked against: 856 bytes for all four.
  EXPECT_EQ(d.data.size(), 856u);
}

TEST_F(SensorHub, FeatureReportRoundTripAndRefusals) {
  auto f = get_report(hub, 3, 1);
  ASSERT_EQ(f.status, Status::kOk);
  EXPECT_EQ(f.data, (std::vector<uint8_t>{1, HidSensorHub::kReportingNone, HidSensorHub::kPowerD4,
                                          100, 0, 0, 0, 0, 0}));
  ASSERT_EQ(set_feature(hub, 1, HidSensorHub::kReportingAll, HidSensorHub::kPowerD0, 20, 50).status,
            Status::kOk);
  EXPECT_EQ(get_report(hub, 3, 1).data, (std::vector<uint8_t>{1, 2, 2, 20, 0, 0, 0, 50, 0}));
  EXPECT_EQ(hub.state(SensorKind::kAccelerometer)->interval_ms, 20u);
  // Unknown report, a selector out of range, a report for another ID, an output report.
  EXPECT_EQ(get_report(hub, 3, 9).status, Status::kStall);
  EXPECT_EQ(set_feature(hub, 1, 7, 2, 20).status, Status::kStall);
  std::vector<uint8_t> wrong = {2, 1, 6, 100, 0, 0, 0, 0, 0};
  EXPECT_EQ(control(hub,
                    setup(Direction::kOut, RequestType::kClass, Recipient::kInterface, 0x09, 0x0301,
                          0, 9),
                    wrong)
                .status,
            Status::kStall);
  EXPECT_EQ(control(hub,
                    setup(Direction::kOut, RequestType::kClass, Recipient::kInterface, 0x09, 0x0201,
                          0, 9),
                    wrong)
                .status,
            Status::kStall);
  // SET_IDLE is accepted (usbhid sends it at attach).
  EXPECT_EQ(control(hub, setup(Direction::kOut, RequestType::kClass, Recipient::kInterface, 0x0a, 0,
                               0, 0))
                .status,
            Status::kOk);
}

TEST_F(SensorHub, InputReportCarriesTheLatestSample) {
  hub.set_sample(SensorKind::kAccelerometer, {{12, -34, 981}});
  auto r = get_report(hub, 1, 1);
  ASSERT_EQ(r.status, Status::kOk);
  ASSERT_EQ(r.data.size(), 15u);
  EXPECT_EQ(r.data[0], 1);
  EXPECT_EQ(r.data[1], 2);  // Ready
  auto s32 = [&](size_t at) {
    return static_cast<int32_t>(r.data[at] | r.data[at + 1] << 8 | r.data[at + 2] << 16 |
                                r.data[at + 3] << 24);
  };
  EXPECT_EQ(s32(3), 12);
  EXPECT_EQ(s32(7), -34);
  EXPECT_EQ(s32(11), 981);
  hub.set_sample(SensorKind::kLight, {{31415, 0, 0}});
  auto l = get_report(hub, 1, 4);
  ASSERT_EQ(l.data.size(), 7u);
  EXPECT_EQ(l.data[3] | l.data[4] << 8, 31415);
}

TEST_F(SensorHub, PoweredSensorsStreamAtTheirReportInterval) {
  std::vector<std::vector<uint8_t>> got;
  std::vector<std::unique_ptr<usb::Transfer>> urbs;
  // usbhid keeps one interrupt IN URB queued and resubmits it from its completion.
  std::function<void(usb::Transfer&)> resubmit = [&](usb::Transfer& t) {
    if (t.status() != Status::kOk) return;
    got.emplace_back(t.data().begin(), t.data().end());
    if (t.rearm()) {
      t.set_completion(resubmit);
      hub.submit(t);
    }
  };
  urbs.push_back(std::make_unique<usb::Transfer>(HidSensorHub::kInterruptIn,
                                                 usb::TransferType::kInterrupt, 64));
  urbs.back()->set_completion(resubmit);
  hub.submit(*urbs.back());
  time.advance(milliseconds(500));
  EXPECT_TRUE(got.empty()) << "powered off: nothing on the interrupt endpoint";

  hub.set_sample(SensorKind::kAccelerometer, {{0, 0, 100}});
  ASSERT_EQ(set_feature(hub, 1, HidSensorHub::kReportingAll, HidSensorHub::kPowerD0, 50).status,
            Status::kOk);
  time.advance(milliseconds(1000));
  EXPECT_GE(got.size(), 19u);
  EXPECT_LE(got.size(), 21u);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back()[0], 1);
  EXPECT_EQ(got.back()[11], 100);
  // A new sample is in the next report, one interval later at most.
  hub.set_sample(SensorKind::kAccelerometer, {{0, 0, -100}});
  const size_t before = got.size();
  time.advance(milliseconds(50));
  ASSERT_GT(got.size(), before);
  EXPECT_EQ(static_cast<int8_t>(got.back()[11]), -100);
  // Powered off (D4, no events): the stream stops.
  ASSERT_EQ(set_feature(hub, 1, HidSensorHub::kReportingNone, HidSensorHub::kPowerD4, 50).status,
            Status::kOk);
  const size_t after = got.size();
  time.advance(milliseconds(500));
  EXPECT_EQ(got.size(), after);
  hub.cancel(*urbs.back());
}

}  // namespace

namespace {

TEST_F(SensorHub, WithOneTransferQueuedEverySensorGetsItsReports) {
  // usbhid keeps one interrupt IN transfer and resubmits it a round trip later: reports that
  // fall due meanwhile wait, and sensors due together take turns.
  std::map<uint8_t, int> per_id;
  auto urb = std::make_unique<usb::Transfer>(HidSensorHub::kInterruptIn,
                                             usb::TransferType::kInterrupt, 64);
  bool waiting = false;
  urb->set_completion([&](usb::Transfer& t) {
    if (t.status() == Status::kOk) ++per_id[t.data()[0]];
    waiting = true;  // resubmitted later, not from the completion
  });
  hub.submit(*urb);
  for (uint8_t id = 1; id <= 2; ++id) {
    ASSERT_EQ(set_feature(hub, id, HidSensorHub::kReportingAll, HidSensorHub::kPowerD0, 50).status,
              Status::kOk);
  }
  for (int i = 0; i < 40; ++i) {
    time.advance(milliseconds(30));
    if (waiting && urb->rearm()) {
      waiting = false;
      urb->set_completion([&](usb::Transfer& t) {
        if (t.status() == Status::kOk) ++per_id[t.data()[0]];
        waiting = true;
      });
      hub.submit(*urb);
    }
  }
  EXPECT_GE(per_id[1], 10);
  EXPECT_GE(per_id[2], 10) << "the gyrometer was starved";
  hub.cancel(*urb);
}

TEST_F(SensorHub, UnconfiguredHubStallsTheHidDescriptorRequest) {
  ASSERT_EQ(set_configuration(hub, 0).status, Status::kOk);
  auto d = control(hub, setup(Direction::kIn, RequestType::kStandard, Recipient::kInterface,
                              usb::request::kGetDescriptor, 0x2100, 0, 9));
  EXPECT_EQ(d.status, Status::kStall);
}

}  // namespace
