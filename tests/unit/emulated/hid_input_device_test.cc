// The USB HID keyboard / mouse / touchscreen as a host's HID driver drives it: descriptors (boot
// interfaces, one interrupt endpoint per function), reports in the order the source made them
// with nothing lost while the host is slow to poll, LEDs from the host back to the source, the
// boot protocol, multi-touch frames with lifts, and the bounded queues.
#include "devices/emulated/hid_input_device.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "emulated_test_util.h"

namespace {

using namespace emutest;
using devices::HidInputDevice;
using devices::HidInputFunction;
using devices::HidInputOptions;
using Report = std::vector<uint8_t>;

constexpr uint8_t kA = 0x04, kB = 0x05, kLeftShift = 0xe1;

// Polls until nothing is waiting; a transfer left pending is cancelled.
std::vector<Report> poll_all(HidInputDevice& dev, uint8_t ep) {
  std::vector<Report> out;
  for (int i = 0; i < 1000; ++i) {
    Urb urb;
    urb.transfer = std::make_unique<usb::Transfer>(ep, usb::TransferType::kInterrupt, 64);
    urb.arm();
    dev.submit(*urb.transfer);
    if (!urb.outcome.completed) {
      dev.cancel(*urb.transfer);
      break;
    }
    out.push_back(urb.outcome.data);
  }
  return out;
}

Outcome class_request(HidInputDevice& dev, Direction d, uint8_t request, uint16_t value,
                      uint16_t interface, uint16_t length, const Report& out = {}) {
  return control(
      dev, setup(d, RequestType::kClass, Recipient::kInterface, request, value, interface, length),
      out);
}

HidInputOptions with(std::set<HidInputFunction> f) {
  HidInputOptions o;
  o.functions = std::move(f);
  return o;
}

TEST(HidInput, CompositeDeviceHasOneBootInterfacePerFunction) {
  HidInputDevice dev(
      with({HidInputFunction::kKeyboard, HidInputFunction::kMouse, HidInputFunction::kTouch}));
  const auto& config = dev.descriptors().configurations.at(0);
  ASSERT_EQ(config.interfaces.size(), 3u);
  EXPECT_EQ(dev.speed(), usb::Speed::kFull);
  // keyboard: HID boot protocol 1; mouse: boot protocol 2; touchscreen: no boot subclass.
  EXPECT_EQ(config.interfaces[0].interface_class, 3);
  EXPECT_EQ(config.interfaces[0].interface_subclass, 1);
  EXPECT_EQ(config.interfaces[0].interface_protocol, 1);
  EXPECT_EQ(config.interfaces[1].interface_protocol, 2);
  EXPECT_EQ(config.interfaces[2].interface_subclass, 0);
  EXPECT_EQ(dev.endpoint_of(HidInputFunction::kKeyboard), 0x81);
  EXPECT_EQ(dev.endpoint_of(HidInputFunction::kMouse), 0x82);
  EXPECT_EQ(dev.endpoint_of(HidInputFunction::kTouch), 0x83);
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  // Each interface answers its own report descriptor, whose length its HID descriptor gives.
  for (uint16_t i = 0; i < 3; ++i) {
    auto hid = control(dev, setup(Direction::kIn, RequestType::kStandard, Recipient::kInterface,
                                  usb::request::kGetDescriptor, 0x2100, i, 9));
    ASSERT_EQ(hid.actual, 9u);
    const size_t length = hid.data[7] | hid.data[8] << 8;
    auto report = control(dev, setup(Direction::kIn, RequestType::kStandard, Recipient::kInterface,
                                     usb::request::kGetDescriptor, 0x2200, i, 1024));
    EXPECT_EQ(report.actual, length) << "interface " << i;
  }
  // The keyboard's descriptor is the boot layout of HID 1.11 appendix B.1 (LED output included).
  const Report kbd = HidInputDevice::report_descriptor(HidInputFunction::kKeyboard, {});
  EXPECT_EQ(Report(kbd.begin(), kbd.begin() + 6), (Report{0x05, 0x01, 0x09, 0x06, 0xa1, 0x01}));
  const Report leds = {0x05, 0x08, 0x19, 0x01, 0x29, 0x05};  // LED page, usages 1..5
  EXPECT_NE(std::search(kbd.begin(), kbd.end(), leds.begin(), leds.end()), kbd.end());
  // The touchscreen: Digitizer page, Touch Screen application, Contact Identifier, Contact Count
  // Maximum — what makes Linux pick hid-multitouch.
  const Report touch = HidInputDevice::report_descriptor(HidInputFunction::kTouch, {});
  EXPECT_EQ(Report(touch.begin(), touch.begin() + 6), (Report{0x05, 0x0d, 0x09, 0x04, 0xa1, 0x01}));
  for (Report usage : {Report{0x09, 0x51}, Report{0x09, 0x54}, Report{0x09, 0x55}}) {
    EXPECT_NE(std::search(touch.begin(), touch.end(), usage.begin(), usage.end()), touch.end());
  }
}

class Keyboard : public ::testing::Test {
 protected:
  Keyboard() : dev(with({HidInputFunction::kKeyboard})) {
    EXPECT_EQ(set_configuration(dev, 1).status, Status::kOk);
  }
  HidInputDevice dev;
};

TEST_F(Keyboard, KeysArriveInOrderWhileTheHostIsSlow) {
  dev.key(kLeftShift, true);
  dev.key(kA, true);
  dev.key(kA, true);  // a repeat changes nothing
  dev.key(kA, false);
  dev.key(kLeftShift, false);
  dev.key(kB, false);  // a release of a key that is not down changes nothing
  EXPECT_EQ(dev.queued(HidInputFunction::kKeyboard), 4u);
  EXPECT_EQ(poll_all(dev, 0x81), (std::vector<Report>{{0x02, 0, 0, 0, 0, 0, 0, 0},
                                                      {0x02, 0, kA, 0, 0, 0, 0, 0},
                                                      {0x02, 0, 0, 0, 0, 0, 0, 0},
                                                      {0, 0, 0, 0, 0, 0, 0, 0}}));
}

TEST_F(Keyboard, AQueuedPollIsAnsweredByTheNextKey) {
  Urb urb;
  urb.transfer = std::make_unique<usb::Transfer>(0x81, usb::TransferType::kInterrupt, 8);
  urb.arm();
  dev.submit(*urb.transfer);
  EXPECT_FALSE(urb.outcome.completed) << "no key yet: the poll waits";
  dev.key(kB, true);
  ASSERT_TRUE(urb.outcome.completed);
  EXPECT_EQ(urb.outcome.data, (Report{0, 0, kB, 0, 0, 0, 0, 0}));
}

TEST_F(Keyboard, SeventhKeyReportsRollOverUntilOneIsReleased) {
  for (uint8_t k = kA; k < kA + 7; ++k) dev.key(k, true);
  auto reports = poll_all(dev, 0x81);
  ASSERT_EQ(reports.size(), 7u);
  EXPECT_EQ(reports[5], (Report{0, 0, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(reports[6], (Report{0, 0, 1, 1, 1, 1, 1, 1}));  // ErrorRollOver
  dev.key(kA, false);
  EXPECT_EQ(poll_all(dev, 0x81), (std::vector<Report>{{0, 0, 5, 6, 7, 8, 9, 10}}));
}

TEST_F(Keyboard, TheHostsLedsReachTheSourceAndGetReportAnswersTheState) {
  std::vector<uint8_t> seen;
  dev.on_leds = [&](uint8_t leds) { seen.push_back(leds); };
  // hid-input's SET_REPORT(Output, id 0) with one byte of LED bits.
  auto r = class_request(dev, Direction::kOut, 0x09, 0x0200, 0, 1, {HidInputDevice::kLedCapsLock});
  EXPECT_EQ(r.status, Status::kOk);
  class_request(dev, Direction::kOut, 0x09, 0x0200, 0, 1, {HidInputDevice::kLedCapsLock});
  EXPECT_EQ(seen, (std::vector<uint8_t>{HidInputDevice::kLedCapsLock})) << "told once per change";
  EXPECT_EQ(dev.leds(), HidInputDevice::kLedCapsLock);
  dev.key(kLeftShift, true);
  auto in = class_request(dev, Direction::kIn, 0x01, 0x0100, 0, 8);
  EXPECT_EQ(in.data, (Report{0x02, 0, 0, 0, 0, 0, 0, 0}));
  // No report of other types or IDs; no boot protocol on a missing interface.
  EXPECT_EQ(class_request(dev, Direction::kIn, 0x01, 0x0301, 0, 8).status, Status::kStall);
  EXPECT_EQ(class_request(dev, Direction::kOut, 0x0b, 0, 5, 0).status, Status::kStall);
}

TEST_F(Keyboard, AFullQueueKeepsTheFinalState) {
  for (int i = 0; i < 100; ++i) {
    dev.key(kA, true);
    dev.key(kA, false);
  }
  dev.key(kB, true);
  EXPECT_LE(dev.queued(HidInputFunction::kKeyboard), HidInputDevice::kMaxQueued);
  auto reports = poll_all(dev, 0x81);
  ASSERT_FALSE(reports.empty());
  EXPECT_EQ(reports.back(), (Report{0, 0, kB, 0, 0, 0, 0, 0}));
}

class Mouse : public ::testing::Test {
 protected:
  Mouse() : dev(with({HidInputFunction::kMouse})) {
    EXPECT_EQ(set_configuration(dev, 1).status, Status::kOk);
  }
  HidInputDevice dev;
};

TEST_F(Mouse, LargeMotionGoesOutInStepsAndNoneIsLost) {
  dev.pointer(0, 300, -5, 1, 0);
  dev.pointer(0, 10, 0);  // folded into the waiting motion
  EXPECT_EQ(poll_all(dev, 0x81),
            (std::vector<Report>{{0, 127, 0xfb, 1, 0}, {0, 127, 0, 0, 0}, {0, 56, 0, 0, 0}}));
}

TEST_F(Mouse, AClickBetweenPollsIsNotLost) {
  dev.pointer(0, 5, 5);
  dev.pointer(1, 0, 0);  // press
  dev.pointer(1, 3, 0);
  dev.pointer(0, 0, 0);  // release
  EXPECT_EQ(poll_all(dev, 0x81),
            (std::vector<Report>{{0, 5, 5, 0, 0}, {1, 3, 0, 0, 0}, {0, 0, 0, 0, 0}}));
}

TEST_F(Mouse, BootProtocolSendsThreeBytes) {
  EXPECT_EQ(class_request(dev, Direction::kOut, 0x0b, 0, 0, 0).status, Status::kOk);
  EXPECT_EQ(class_request(dev, Direction::kIn, 0x03, 0, 0, 1).data, Report{0});
  dev.pointer(2, -1, 1, 3);
  EXPECT_EQ(poll_all(dev, 0x81), (std::vector<Report>{{2, 0xff, 1}}));
  // A reset configuration returns to the report protocol.
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  dev.pointer(0, 0, 0, 1);
  EXPECT_EQ(poll_all(dev, 0x81).at(0).size(), 5u);
}

class Touch : public ::testing::Test {
 protected:
  static HidInputOptions options() {
    HidInputOptions o = with({HidInputFunction::kTouch});
    o.max_contacts = 2;
    o.touch = {.min_x = 0,
               .max_x = 1079,
               .min_y = 0,
               .max_y = 2339,
               .width_tenth_mm = 680,
               .height_tenth_mm = 1470};
    return o;
  }
  Touch() : dev(options()) { EXPECT_EQ(set_configuration(dev, 1).status, Status::kOk); }
  // [1] then per contact [tip][id][x16][y16], then the count.
  static Report frame(std::vector<std::tuple<bool, uint8_t, uint16_t, uint16_t>> contacts) {
    Report r = {1};
    for (auto [tip, id, x, y] : contacts) {
      r.insert(r.end(), {static_cast<uint8_t>(tip), id, static_cast<uint8_t>(x),
                         static_cast<uint8_t>(x >> 8), static_cast<uint8_t>(y),
                         static_cast<uint8_t>(y >> 8)});
    }
    r.resize(1 + 2 * 6, 0);
    r.push_back(static_cast<uint8_t>(contacts.size()));
    return r;
  }
  HidInputDevice dev;
};

TEST_F(Touch, FramesCarryEveryContactAndEachLiftOnce) {
  dev.touch({{.id = 7, .x = 100, .y = 2000}});
  dev.touch({{.id = 7, .x = 110, .y = 1990}, {.id = 8, .x = 900, .y = 300}});
  dev.touch({{.id = 8, .x = 905, .y = 310}});
  dev.touch({});
  EXPECT_EQ(
      poll_all(dev, 0x81),
      (std::vector<Report>{
          frame({{true, 7, 100, 2000}}), frame({{true, 7, 110, 1990}, {true, 8, 900, 300}}),
          frame({{false, 7, 110, 1990}, {true, 8, 905, 310}}), frame({{false, 8, 905, 310}})}));
  // Contact Count Maximum, read by hid-multitouch with GET_REPORT(Feature, id 2).
  EXPECT_EQ(class_request(dev, Direction::kIn, 0x01, 0x0302, 0, 2).data, (Report{2, 2}));
  EXPECT_EQ(class_request(dev, Direction::kOut, 0x0b, 0, 0, 0).status, Status::kStall)
      << "a touchscreen has no boot protocol";
}

TEST_F(Touch, LiftsGoOutBeforeNewContactsTakeTheirSlots) {
  dev.touch({{.id = 1, .x = 1, .y = 1}, {.id = 2, .x = 2, .y = 2}});
  poll_all(dev, 0x81);
  dev.touch({{.id = 3, .x = 3, .y = 3}, {.id = 4, .x = 4, .y = 4}});  // two lifts, two touches
  // With both of the host's slots taken, the new contacts can only have them a report later.
  EXPECT_EQ(poll_all(dev, 0x81), (std::vector<Report>{frame({{false, 1, 1, 1}, {false, 2, 2, 2}}),
                                                      frame({{true, 3, 3, 3}, {true, 4, 4, 4}})}));
  // Positions outside the range are clamped to it; extra contacts beyond the maximum dropped.
  dev.touch({{.id = 3, .x = 5000, .y = -4}, {.id = 4, .x = 4, .y = 4}, {.id = 9, .x = 9, .y = 9}});
  EXPECT_EQ(poll_all(dev, 0x81),
            (std::vector<Report>{frame({{true, 3, 1079, 0}, {true, 4, 4, 4}})}));
}

TEST_F(Touch, AHostThatFallsBehindStillSeesEveryLift) {
  dev.touch({{.id = 1, .x = 10, .y = 10}, {.id = 2, .x = 20, .y = 20}});
  poll_all(dev, 0x81);                       // the host knows 1 and 2
  dev.touch({{.id = 2, .x = 21, .y = 21}});  // 1 lifts while the host is not polling...
  for (int i = 0; i < 200; ++i) dev.touch({{.id = 2, .x = 21 + i, .y = 21}});  // ...and 2 moves
  EXPECT_LE(dev.queued(HidInputFunction::kTouch), HidInputDevice::kMaxQueued);
  auto reports = poll_all(dev, 0x81);
  ASSERT_FALSE(reports.empty());
  bool lifted = false;
  for (const auto& r : reports) lifted |= r[1] == 0 && r[2] == 1;  // tip 0, contact 1
  EXPECT_TRUE(lifted) << "contact 1's lift survived the overflow";
  EXPECT_EQ(reports.back(), frame({{true, 2, 220, 21}}));
}

TEST_F(Touch, ResetForgetsWhatWaitedAndHostileRequestsStall) {
  dev.touch({{.id = 1, .x = 10, .y = 10}});
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  EXPECT_EQ(dev.queued(HidInputFunction::kTouch), 0u);
  // A transfer shorter than the report babbles and leaves the report queued.
  dev.touch({{.id = 1, .x = 11, .y = 10}});
  auto short_in = transfer(dev, 0x81, usb::TransferType::kInterrupt, {}, 4);
  EXPECT_EQ(short_in.status, Status::kBabble);
  EXPECT_EQ(dev.queued(HidInputFunction::kTouch), 1u);
  // GET_REPORT with an OUT data stage, SET_REPORT with an IN one, interface 0x100.
  EXPECT_EQ(class_request(dev, Direction::kOut, 0x01, 0x0302, 0, 2, {0, 0}).status, Status::kStall);
  EXPECT_EQ(class_request(dev, Direction::kIn, 0x09, 0x0302, 0, 2).status, Status::kStall);
  EXPECT_EQ(class_request(dev, Direction::kIn, 0x01, 0x0302, 0x100, 2).status, Status::kStall);
}

TEST_F(Keyboard, ASetReportWithAnInDataStageDoesNotTouchTheLeds) {
  int told = 0;
  dev.on_leds = [&](uint8_t) { ++told; };
  EXPECT_EQ(class_request(dev, Direction::kIn, 0x09, 0x0200, 0, 1).status, Status::kStall);
  EXPECT_EQ(told, 0);
}

}  // namespace
