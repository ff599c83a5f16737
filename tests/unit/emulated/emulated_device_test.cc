// Chapter-9 engine: every standard request, halt semantics, pending transfers, the trampoline.
#include "devices/emulated/emulated_device.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "emulated_test_util.h"
#include "usb/core/descriptors.h"

namespace {

using namespace emutest;
using devices::EmulatedDevice;
using devices::SpeedDescriptors;
using usb::TransferType;

constexpr uint8_t kBulkIn = 0x81;
constexpr uint8_t kBulkOut = 0x02;
constexpr uint8_t kIntIn = 0x83;

usb::EndpointDescriptor ep(uint8_t address, uint8_t attributes, uint16_t mps, uint8_t interval,
                           bool ss) {
  usb::EndpointDescriptor e;
  e.address = address;
  e.attributes = attributes;
  e.max_packet_size = mps;
  e.interval = interval;
  if (ss) e.ss_companion = usb::SsEndpointCompanion{};
  return e;
}

// Config 1 (self-powered, remote wakeup capable): interface 0 alt 0 bulk in+out, alt 1 adds an
// interrupt IN; interface 1 alt 0 without endpoints. Config 2 (bus-powered): interface 0 only.
usb::DescriptorSet make_set(bool ss, uint16_t bcd_usb) {
  usb::DescriptorSet set;
  set.device.bcd_usb = bcd_usb;
  set.device.max_packet_size0 = ss ? 9 : 64;
  set.device.vendor_id = 0x1234;
  set.device.product_id = 0x5678;
  set.device.manufacturer_index = 1;
  set.device.product_index = 2;
  set.device.num_configurations = 2;
  const uint16_t bulk = ss ? 1024 : 512;
  usb::ConfigurationDescriptor c1;
  c1.value = 1;
  c1.num_interfaces = 2;
  c1.attributes = usb::kConfigAttrOne | usb::kConfigAttrSelfPowered | usb::kConfigAttrRemoteWakeup;
  usb::InterfaceDescriptor i0a0;
  i0a0.number = 0;
  i0a0.interface_class = 0xff;
  i0a0.endpoints = {ep(kBulkIn, 2, bulk, 0, ss), ep(kBulkOut, 2, bulk, 0, ss)};
  usb::InterfaceDescriptor i0a1 = i0a0;
  i0a1.alternate = 1;
  i0a1.endpoints.push_back(ep(kIntIn, 3, 64, 4, ss));
  usb::InterfaceDescriptor i1a0;
  i1a0.number = 1;
  i1a0.interface_class = 0xff;
  c1.interfaces = {i0a0, i0a1, i1a0};
  usb::ConfigurationDescriptor c2;
  c2.value = 2;
  c2.num_interfaces = 1;
  c2.attributes = usb::kConfigAttrOne;
  c2.interfaces = {i0a0};
  set.configurations = {c1, c2};
  set.strings = {"vusb tests", "engine"};
  if (bcd_usb >= 0x0201) {
    usb::BosDescriptor bos;
    bos.capabilities.push_back({0x02, {0x02, 0, 0, 0}});
    set.bos = bos;
  }
  return set;
}

SpeedDescriptors make_sets(bool with_full = false) {
  SpeedDescriptors s;
  s.high_speed = make_set(false, 0x0200);
  s.super_speed = make_set(true, 0x0300);
  if (with_full) {
    auto fs = make_set(false, 0x0200);
    for (auto& c : fs.configurations)
      for (auto& i : c.interfaces)
        for (auto& e : i.endpoints) e.max_packet_size = 64;
    s.full_speed = fs;
  }
  return s;
}

// A device whose bulk endpoints keep transfers pending until the test says otherwise; interrupt
// IN completes with 8 bytes. Records hook calls.
class TestDevice : public EmulatedDevice {
 public:
  explicit TestDevice(usb::Speed speed = usb::Speed::kHigh, SpeedDescriptors sets = make_sets())
      : EmulatedDevice(std::move(sets), speed, usb::DeviceLocation{1, 2, "1-2", "/test"}) {}

  using EmulatedDevice::finish;
  using EmulatedDevice::halt_endpoint;
  using EmulatedDevice::pending;

  bool complete_inline = true;
  int transfers = 0;
  int aborted = 0;
  std::vector<int> config_changes;
  std::vector<std::pair<int, int>> interface_changes;
  std::vector<uint8_t> toggles;
  std::vector<usb::SetupPacket> class_requests;

 protected:
  ControlReply on_control_request(const usb::SetupPacket& setup, std::span<uint8_t> data) override {
    class_requests.push_back(setup);
    if (setup.type() == usb::RequestType::kClass && setup.request == 0x01) {
      for (auto& b : data) b = 0x42;
      return ok(data.size());
    }
    return stall();
  }
  void on_transfer(usb::Transfer& t, const usb::EndpointDescriptor& e) override {
    ++transfers;
    if (e.type() == TransferType::kInterrupt) {
      finish(t, Status::kOk, std::min<size_t>(8, t.length()));
      return;
    }
    if (complete_inline) finish(t, Status::kOk, t.length());
  }
  size_t on_transfer_aborted(usb::Transfer&) override {
    ++aborted;
    return 3;
  }
  void on_configuration_changed(uint8_t v) override { config_changes.push_back(v); }
  void on_interface_changed(uint8_t i, uint8_t a) override { interface_changes.push_back({i, a}); }
  void on_toggle_reset(uint8_t address) override { toggles.push_back(address); }
};

// --- GET_DESCRIPTOR ---

TEST(EmulatedDevice, DeviceDescriptorFullPrefixAndBeyondTotal) {
  TestDevice dev;
  auto full = get_descriptor(dev, usb::desc::kDevice, 0, 18);
  ASSERT_EQ(full.status, Status::kOk);
  ASSERT_EQ(full.actual, 18u);
  auto parsed = usb::DeviceDescriptor::parse(full.data);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(*parsed, dev.descriptors().device);

  auto prefix = get_descriptor(dev, usb::desc::kDevice, 0, 8);
  ASSERT_EQ(prefix.status, Status::kOk);
  EXPECT_EQ(prefix.data, std::vector<uint8_t>(full.data.begin(), full.data.begin() + 8));

  auto beyond = get_descriptor(dev, usb::desc::kDevice, 0, 255);
  EXPECT_EQ(beyond.status, Status::kOk);
  EXPECT_EQ(beyond.actual, 18u);
  auto strict = get_descriptor(dev, usb::desc::kDevice, 0, 64, /*short_not_ok=*/true);
  EXPECT_EQ(strict.status, Status::kShortPacket);  // -EREMOTEIO, data still there
  EXPECT_EQ(strict.data, full.data);
}

TEST(EmulatedDevice, ConfigurationByIndex) {
  TestDevice dev;
  for (size_t i = 0; i < 2; ++i) {
    auto head = get_descriptor(dev, usb::desc::kConfiguration, static_cast<uint8_t>(i), 9);
    ASSERT_EQ(head.status, Status::kOk);
    ASSERT_EQ(head.actual, 9u);
    const uint16_t total = static_cast<uint16_t>(head.data[2] | head.data[3] << 8);
    auto all = get_descriptor(dev, usb::desc::kConfiguration, static_cast<uint8_t>(i), 1024);
    ASSERT_EQ(all.status, Status::kOk);
    EXPECT_EQ(all.actual, total);
    auto parsed = usb::ConfigurationDescriptor::parse(all.data);
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, dev.descriptors().configurations[i]);
  }
  EXPECT_EQ(get_descriptor(dev, usb::desc::kConfiguration, 2, 9).status, Status::kStall);
}

TEST(EmulatedDevice, Strings) {
  TestDevice dev;
  auto langs = get_descriptor(dev, usb::desc::kString, 0, 255);
  ASSERT_EQ(langs.status, Status::kOk);
  EXPECT_EQ(langs.data, (std::vector<uint8_t>{4, 3, 0x09, 0x04}));
  auto s1 = get_descriptor(dev, usb::desc::kString, 1, 255, false, 0x0409);
  ASSERT_EQ(s1.status, Status::kOk);
  EXPECT_EQ(usb::parse_string_descriptor(s1.data).value(), "vusb tests");
  auto s2_short = get_descriptor(dev, usb::desc::kString, 2, 2, false, 0x0409);
  ASSERT_EQ(s2_short.actual, 2u);
  EXPECT_EQ(s2_short.data[0], 2 + 2 * 6);  // bLength of "engine"
  EXPECT_EQ(get_descriptor(dev, usb::desc::kString, 3, 255).status, Status::kStall);
}

TEST(EmulatedDevice, BosOnlyFromUsb201) {
  TestDevice hs;  // bcdUSB 0x0200
  EXPECT_EQ(get_descriptor(hs, usb::desc::kBos, 0, 5).status, Status::kStall);
  TestDevice ss(usb::Speed::kSuper);
  auto head = get_descriptor(ss, usb::desc::kBos, 0, 5);
  ASSERT_EQ(head.status, Status::kOk);
  const uint16_t total = static_cast<uint16_t>(head.data[2] | head.data[3] << 8);
  auto all = get_descriptor(ss, usb::desc::kBos, 0, total);
  ASSERT_EQ(all.actual, total);
  auto bos = usb::BosDescriptor::parse(all.data);
  ASSERT_TRUE(bos.has_value());
  EXPECT_EQ(*bos, *ss.descriptors().bos);
}

TEST(EmulatedDevice, QualifierAndOtherSpeedAtHighSpeed) {
  TestDevice dev(usb::Speed::kHigh, make_sets(/*with_full=*/true));
  auto q = get_descriptor(dev, usb::desc::kDeviceQualifier, 0, 10);
  ASSERT_EQ(q.status, Status::kOk);
  ASSERT_EQ(q.actual, 10u);
  EXPECT_EQ(q.data[0], 10);
  EXPECT_EQ(q.data[1], usb::desc::kDeviceQualifier);
  EXPECT_EQ(q.data[2] | q.data[3] << 8, 0x0200);
  EXPECT_EQ(q.data[7], 64);
  EXPECT_EQ(q.data[8], 2);  // bNumConfigurations at the other speed
  auto other = get_descriptor(dev, usb::desc::kOtherSpeedConfiguration, 0, 255);
  ASSERT_EQ(other.status, Status::kOk);
  EXPECT_EQ(other.data[1], usb::desc::kOtherSpeedConfiguration);
  auto parsed = usb::ConfigurationDescriptor::parse(other.data);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->interfaces[0].endpoints[0].max_packet_size, 64);
  EXPECT_EQ(get_descriptor(dev, usb::desc::kOtherSpeedConfiguration, 2, 255).status,
            Status::kStall);
}

TEST(EmulatedDevice, OtherSpeedDerivedWhenFullSpeedMissing) {
  TestDevice dev;  // no full-speed tables
  auto other = get_descriptor(dev, usb::desc::kOtherSpeedConfiguration, 0, 255);
  ASSERT_EQ(other.status, Status::kOk);
  auto parsed = usb::ConfigurationDescriptor::parse(other.data);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->interfaces[0].endpoints[0].max_packet_size, 64);  // bulk 512 -> 64
  EXPECT_EQ(parsed->interfaces[1].endpoints[2].interval, 1);          // 2^3 uframes -> 1 ms
}

TEST(EmulatedDevice, NoQualifierAtSuperSpeed) {
  TestDevice dev(usb::Speed::kSuper);
  EXPECT_EQ(get_descriptor(dev, usb::desc::kDeviceQualifier, 0, 10).status, Status::kStall);
  EXPECT_EQ(get_descriptor(dev, usb::desc::kOtherSpeedConfiguration, 0, 9).status, Status::kStall);
  EXPECT_EQ(get_descriptor(dev, usb::desc::kDevice, 0, 18).data[7], 9);  // SS tables served
}

TEST(EmulatedDevice, BadRequestsStallAndDeviceKeepsAnswering) {
  TestDevice dev;
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  EXPECT_EQ(get_descriptor(dev, 0x42, 0, 64).status, Status::kStall);
  EXPECT_EQ(get_descriptor(dev, usb::desc::kDevice, 0, 18).status, Status::kOk);
  EXPECT_EQ(feature(dev, true, Recipient::kDevice, 0x66, 0).status, Status::kStall);
  EXPECT_EQ(feature(dev, true, Recipient::kEndpoint, 0x66, kBulkIn).status, Status::kStall);
  EXPECT_EQ(feature(dev, false, Recipient::kInterface, 0x66, 0).status, Status::kStall);
  EXPECT_EQ(get_status(dev, Recipient::kDevice, 0).status, Status::kOk);
  EXPECT_EQ(get_descriptor(dev, usb::desc::kInterface, 0, 9).status, Status::kStall);
  EXPECT_EQ(get_descriptor(dev, usb::desc::kEndpoint, 0, 7).status, Status::kStall);
  EXPECT_EQ(
      control(dev, setup(Direction::kIn, RequestType::kStandard, Recipient::kDevice, 0x77, 0, 0, 4))
          .status,
      Status::kStall);
  EXPECT_EQ(get_configuration(dev).data, std::vector<uint8_t>{1});
}

TEST(EmulatedDevice, SetAddress) {
  TestDevice dev;
  auto s = setup(Direction::kOut, RequestType::kStandard, Recipient::kDevice,
                 usb::request::kSetAddress, 17, 0, 0);
  EXPECT_EQ(control(dev, s).status, Status::kOk);
  EXPECT_EQ(dev.address(), 17);
  s.value = 200;
  EXPECT_EQ(control(dev, s).status, Status::kStall);
  EXPECT_EQ(dev.address(), 17);
}

TEST(EmulatedDevice, SetGetConfiguration) {
  TestDevice dev;
  EXPECT_EQ(dev.active_configuration(), 0);
  EXPECT_EQ(get_configuration(dev).data, std::vector<uint8_t>{0});
  EXPECT_EQ(set_configuration(dev, 7).status, Status::kStall);
  EXPECT_EQ(dev.active_configuration(), 0);
  EXPECT_EQ(set_configuration(dev, 2).status, Status::kOk);
  EXPECT_EQ(get_configuration(dev).data, std::vector<uint8_t>{2});
  EXPECT_EQ(set_configuration(dev, 1).status, Status::kOk);
  EXPECT_EQ(set_configuration(dev, 0x0101).status, Status::kStall);  // high byte reserved
  EXPECT_EQ(dev.active_configuration(), 1);
  EXPECT_EQ(set_configuration(dev, 0).status, Status::kOk);
  EXPECT_EQ(dev.active_configuration(), 0);
  EXPECT_EQ(dev.config_changes, (std::vector<int>{2, 1, 0}));
  // Unconfigured: data endpoints are gone.
  EXPECT_EQ(bulk_in(dev, kBulkIn, 512).status, Status::kStall);
}

TEST(EmulatedDevice, SetGetInterface) {
  TestDevice dev;
  EXPECT_EQ(set_interface(dev, 0, 1).status, Status::kStall);  // unconfigured
  EXPECT_EQ(get_interface(dev, 0).status, Status::kStall);
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  EXPECT_EQ(get_interface(dev, 0).data, std::vector<uint8_t>{0});
  EXPECT_EQ(transfer(dev, kIntIn, TransferType::kInterrupt, {}, 8).status, Status::kStall);
  EXPECT_EQ(set_interface(dev, 0, 2).status, Status::kStall);  // unknown alt
  EXPECT_EQ(set_interface(dev, 5, 0).status, Status::kStall);  // unknown interface
  EXPECT_EQ(set_interface(dev, 0, 1).status, Status::kOk);
  EXPECT_EQ(get_interface(dev, 0).data, std::vector<uint8_t>{1});
  EXPECT_EQ(dev.alternate_setting(0), 1);
  EXPECT_EQ(get_interface(dev, 1).data, std::vector<uint8_t>{0});
  EXPECT_EQ(get_interface(dev, 9).status, Status::kStall);
  auto in = transfer(dev, kIntIn, TransferType::kInterrupt, {}, 64);
  EXPECT_EQ(in.status, Status::kOk);
  EXPECT_EQ(in.actual, 8u);
  EXPECT_EQ(dev.interface_changes, (std::vector<std::pair<int, int>>{{0, 1}}));
}

TEST(EmulatedDevice, GetStatusDeviceInterfaceEndpoint) {
  TestDevice dev;
  // Unconfigured: the first configuration's power source.
  EXPECT_EQ(status_word(get_status(dev, Recipient::kDevice, 0)), 0x0001);
  ASSERT_EQ(set_configuration(dev, 2).status, Status::kOk);  // bus-powered
  EXPECT_EQ(status_word(get_status(dev, Recipient::kDevice, 0)), 0x0000);
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  EXPECT_EQ(status_word(get_status(dev, Recipient::kDevice, 0)), 0x0001);
  EXPECT_EQ(feature(dev, true, Recipient::kDevice, usb::feature::kDeviceRemoteWakeup, 0).status,
            Status::kOk);
  EXPECT_TRUE(dev.remote_wakeup_enabled());
  EXPECT_EQ(status_word(get_status(dev, Recipient::kDevice, 0)), 0x0003);
  EXPECT_EQ(feature(dev, false, Recipient::kDevice, usb::feature::kDeviceRemoteWakeup, 0).status,
            Status::kOk);
  EXPECT_EQ(status_word(get_status(dev, Recipient::kDevice, 0)), 0x0001);

  EXPECT_EQ(status_word(get_status(dev, Recipient::kInterface, 0)), 0);
  EXPECT_EQ(status_word(get_status(dev, Recipient::kInterface, 1)), 0);
  EXPECT_EQ(get_status(dev, Recipient::kInterface, 2).status, Status::kStall);
  EXPECT_EQ(status_word(get_status(dev, Recipient::kEndpoint, 0)), 0);
  EXPECT_EQ(status_word(get_status(dev, Recipient::kEndpoint, 0x80)), 0);
  EXPECT_EQ(status_word(get_status(dev, Recipient::kEndpoint, kBulkIn)), 0);
  EXPECT_EQ(get_status(dev, Recipient::kEndpoint, kIntIn).status, Status::kStall);  // alt 1 only
  EXPECT_EQ(get_status(dev, Recipient::kEndpoint, 0x01).status, Status::kStall);
}

TEST(EmulatedDevice, HaltSetGetClear) {
  TestDevice dev;
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  const uint32_t toggles = dev.toggle_resets(kBulkOut);
  EXPECT_EQ(bulk_out(dev, kBulkOut, std::vector<uint8_t>(10)).status, Status::kOk);
  ASSERT_EQ(feature(dev, true, Recipient::kEndpoint, usb::feature::kEndpointHalt, kBulkOut).status,
            Status::kOk);
  EXPECT_TRUE(dev.endpoint_halted(kBulkOut));
  EXPECT_EQ(status_word(get_status(dev, Recipient::kEndpoint, kBulkOut)), 1);
  EXPECT_EQ(bulk_out(dev, kBulkOut, std::vector<uint8_t>(10)).status, Status::kStall);
  EXPECT_EQ(bulk_out(dev, kBulkOut, std::vector<uint8_t>(10)).status, Status::kStall);
  EXPECT_EQ(bulk_in(dev, kBulkIn, 10).status, Status::kOk);  // the other one is fine
  ASSERT_EQ(feature(dev, false, Recipient::kEndpoint, usb::feature::kEndpointHalt, kBulkOut).status,
            Status::kOk);
  EXPECT_FALSE(dev.endpoint_halted(kBulkOut));
  EXPECT_EQ(status_word(get_status(dev, Recipient::kEndpoint, kBulkOut)), 0);
  EXPECT_EQ(dev.toggle_resets(kBulkOut), toggles + 1);
  EXPECT_EQ(bulk_out(dev, kBulkOut, std::vector<uint8_t>(10)).status, Status::kOk);
  // Clearing a halt that is not set still resets the toggle; ep0 halt is accepted, ignored.
  ASSERT_EQ(feature(dev, false, Recipient::kEndpoint, usb::feature::kEndpointHalt, kBulkOut).status,
            Status::kOk);
  EXPECT_EQ(dev.toggle_resets(kBulkOut), toggles + 2);
  EXPECT_EQ(feature(dev, false, Recipient::kEndpoint, usb::feature::kEndpointHalt, 0).status,
            Status::kOk);
  EXPECT_EQ(feature(dev, true, Recipient::kEndpoint, usb::feature::kEndpointHalt, 0x05).status,
            Status::kStall);
}

TEST(EmulatedDevice, SetInterfaceClearsHalt) {
  TestDevice dev;
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  ASSERT_EQ(feature(dev, true, Recipient::kEndpoint, usb::feature::kEndpointHalt, kBulkIn).status,
            Status::kOk);
  EXPECT_EQ(bulk_in(dev, kBulkIn, 4).status, Status::kStall);
  ASSERT_EQ(set_interface(dev, 0, 0).status, Status::kOk);
  EXPECT_FALSE(dev.endpoint_halted(kBulkIn));
  EXPECT_EQ(bulk_in(dev, kBulkIn, 4).status, Status::kOk);
}

TEST(EmulatedDevice, DeviceMethodsChangeStateDirectly) {
  TestDevice dev;
  Status got = Status::kIoError;
  auto cb = [&got](Status s) { got = s; };
  dev.set_configuration(9, cb);
  EXPECT_EQ(got, Status::kStall);
  dev.set_configuration(1, cb);
  EXPECT_EQ(got, Status::kOk);
  EXPECT_EQ(dev.active_configuration(), 1);
  dev.set_interface(0, 1, cb);
  EXPECT_EQ(got, Status::kOk);
  EXPECT_EQ(dev.alternate_setting(0), 1);
  dev.set_interface(0, 3, cb);
  EXPECT_EQ(got, Status::kStall);
  dev.set_halt(kIntIn, cb);
  EXPECT_EQ(got, Status::kOk);
  EXPECT_TRUE(dev.endpoint_halted(kIntIn));
  EXPECT_EQ(transfer(dev, kIntIn, TransferType::kInterrupt, {}, 8).status, Status::kStall);
  dev.clear_halt(kIntIn, cb);
  EXPECT_EQ(got, Status::kOk);
  EXPECT_FALSE(dev.endpoint_halted(kIntIn));
  dev.clear_halt(0x07, cb);
  EXPECT_EQ(got, Status::kStall);
  ASSERT_EQ(feature(dev, true, Recipient::kDevice, usb::feature::kDeviceRemoteWakeup, 0).status,
            Status::kOk);
  dev.reset(cb);
  EXPECT_EQ(got, Status::kOk);
  EXPECT_EQ(dev.active_configuration(), 0);
  EXPECT_EQ(dev.alternate_setting(0), 0);
  EXPECT_FALSE(dev.remote_wakeup_enabled());
  EXPECT_EQ(dev.location().busid, "1-2");
}

TEST(EmulatedDevice, EndpointChecksOnSubmit) {
  TestDevice dev;
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  EXPECT_EQ(bulk_in(dev, 0x85, 4).status, Status::kStall);  // not in the configuration
  EXPECT_EQ(transfer(dev, kBulkIn, TransferType::kInterrupt, {}, 4).status,
            Status::kInvalid);  // type mismatch
  EXPECT_EQ(transfer(dev, 0x80, TransferType::kBulk, {}, 4).status, Status::kInvalid);
  EXPECT_EQ(dev.transfers, 0);
}

TEST(EmulatedDevice, ShortNotOkOnBulkIn) {
  TestDevice dev;
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  dev.complete_inline = false;
  Urb urb;
  urb.transfer = std::make_unique<usb::Transfer>(kBulkIn, TransferType::kBulk, 100);
  urb.transfer->flags.short_not_ok = true;
  urb.arm();
  dev.submit(*urb.transfer);
  ASSERT_FALSE(urb.outcome.completed);
  dev.finish(*urb.transfer, Status::kOk, 40);
  EXPECT_EQ(urb.outcome.status, Status::kShortPacket);
  EXPECT_EQ(urb.outcome.actual, 40u);
}

TEST(EmulatedDevice, ClassAndVendorRequestsReachTheSubclass) {
  TestDevice dev;
  auto r = control(
      dev, setup(Direction::kIn, RequestType::kClass, Recipient::kInterface, 0x01, 0, 0, 3));
  EXPECT_EQ(r.status, Status::kOk);
  EXPECT_EQ(r.data, (std::vector<uint8_t>{0x42, 0x42, 0x42}));
  EXPECT_EQ(
      control(dev, setup(Direction::kOut, RequestType::kVendor, Recipient::kDevice, 0x09, 0, 0, 0))
          .status,
      Status::kStall);
  // A standard GET_DESCRIPTOR aimed at an interface (class descriptors) goes there too.
  EXPECT_EQ(control(dev, setup(Direction::kIn, RequestType::kStandard, Recipient::kInterface,
                               usb::request::kGetDescriptor, 0x2200, 0, 64))
                .status,
            Status::kStall);
  EXPECT_EQ(dev.class_requests.size(), 3u);
}

// --- Pending transfers ---

TEST(EmulatedDevice, CancelCompletesPendingExactlyOnce) {
  TestDevice dev;
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  dev.complete_inline = false;
  Urb a, b;
  a.transfer = std::make_unique<usb::Transfer>(kBulkIn, TransferType::kBulk, 64);
  b.transfer = std::make_unique<usb::Transfer>(kBulkIn, TransferType::kBulk, 64);
  a.arm();
  b.arm();
  dev.submit(*a.transfer);
  dev.submit(*b.transfer);
  EXPECT_EQ(dev.pending_count(), 2u);
  EXPECT_EQ(dev.pending(kBulkIn).front(), a.transfer.get());
  EXPECT_TRUE(a.transfer->cancel());
  EXPECT_EQ(a.outcome.completions, 1);
  EXPECT_EQ(a.outcome.status, Status::kCancelled);
  EXPECT_EQ(a.outcome.actual, 3u);  // what on_transfer_aborted reported
  EXPECT_FALSE(a.transfer->cancel());
  dev.cancel(*a.transfer);  // a stray second cancel from a peer
  EXPECT_EQ(a.outcome.completions, 1);
  EXPECT_EQ(dev.pending_count(), 1u);
  dev.finish(*b.transfer, Status::kOk, 64);
  EXPECT_EQ(b.outcome.status, Status::kOk);
  EXPECT_FALSE(b.transfer->cancel());  // already done: nothing happens
  EXPECT_EQ(b.outcome.completions, 1);
  EXPECT_EQ(dev.aborted, 1);
}

TEST(EmulatedDevice, DisconnectCompletesPendingWithNoDevice) {
  TestDevice dev;
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  dev.complete_inline = false;
  std::vector<Urb> urbs(4);
  for (size_t i = 0; i < urbs.size(); ++i) {
    urbs[i].transfer =
        std::make_unique<usb::Transfer>(i % 2 ? kBulkIn : kBulkOut, TransferType::kBulk, 32);
    urbs[i].arm();
    dev.submit(*urbs[i].transfer);
  }
  EXPECT_EQ(dev.pending_count(), 4u);
  dev.disconnect();
  EXPECT_FALSE(dev.connected());
  for (auto& u : urbs) {
    EXPECT_EQ(u.outcome.completions, 1);
    EXPECT_EQ(u.outcome.status, Status::kNoDevice);
  }
  dev.disconnect();  // idempotent
  EXPECT_EQ(bulk_in(dev, kBulkIn, 4).status, Status::kNoDevice);
  EXPECT_EQ(get_descriptor(dev, usb::desc::kDevice, 0, 18).status, Status::kNoDevice);
  Status got = Status::kOk;
  dev.set_configuration(1, [&](Status s) { got = s; });
  EXPECT_EQ(got, Status::kNoDevice);
}

TEST(EmulatedDevice, HaltAndReconfigureAbortPending) {
  TestDevice dev;
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  dev.complete_inline = false;
  Urb a, b;
  a.transfer = std::make_unique<usb::Transfer>(kBulkOut, TransferType::kBulk, 8);
  b.transfer = std::make_unique<usb::Transfer>(kBulkIn, TransferType::kBulk, 8);
  a.arm();
  b.arm();
  dev.submit(*a.transfer);
  dev.submit(*b.transfer);
  dev.halt_endpoint(kBulkOut);  // device-side halt
  EXPECT_EQ(a.outcome.status, Status::kStall);
  EXPECT_TRUE(dev.endpoint_halted(kBulkOut));
  EXPECT_FALSE(b.outcome.completed);
  ASSERT_EQ(set_configuration(dev, 2).status, Status::kOk);
  EXPECT_EQ(b.outcome.status, Status::kNoDevice);  // endpoint disabled (-ESHUTDOWN)
  EXPECT_EQ(dev.pending_count(), 0u);
}

TEST(EmulatedDevice, DestructionCompletesPending) {
  Urb a;
  {
    TestDevice dev;
    ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
    dev.complete_inline = false;
    a.transfer = std::make_unique<usb::Transfer>(kBulkIn, TransferType::kBulk, 8);
    a.arm();
    dev.submit(*a.transfer);
  }
  EXPECT_EQ(a.outcome.completions, 1);
  EXPECT_EQ(a.outcome.status, Status::kNoDevice);
}

TEST(EmulatedDevice, ResubmittingCompletionDoesNotRecurse) {
  TestDevice dev;
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  usb::Transfer t(kBulkIn, TransferType::kBulk, 16);
  int left = 200000;
  int done = 0;
  // usbtest-style: resubmit the same URB from its completion. A fresh Transfer is needed per
  // submission (a completed Transfer cannot restart), so chain new ones.
  std::vector<std::unique_ptr<usb::Transfer>> chain;
  std::function<void(usb::Transfer&)> on_done = [&](usb::Transfer& tr) {
    ASSERT_EQ(tr.status(), Status::kOk);
    ++done;
    if (--left == 0) return;
    chain.push_back(std::make_unique<usb::Transfer>(kBulkIn, TransferType::kBulk, 16));
    chain.back()->set_completion([&](usb::Transfer& x) { on_done(x); });
    dev.submit(*chain.back());
  };
  t.set_completion([&](usb::Transfer& x) { on_done(x); });
  dev.submit(t);
  EXPECT_EQ(done, 200000);
}

TEST(EmulatedDevice, DoubleSubmitIsIgnored) {
  TestDevice dev;
  ASSERT_EQ(set_configuration(dev, 1).status, Status::kOk);
  dev.complete_inline = false;
  Urb a;
  a.transfer = std::make_unique<usb::Transfer>(kBulkIn, TransferType::kBulk, 8);
  a.arm();
  dev.submit(*a.transfer);
  dev.submit(*a.transfer);
  EXPECT_EQ(dev.pending_count(), 1u);
  EXPECT_FALSE(a.outcome.completed);
  dev.finish(*a.transfer, Status::kOk, 8);
  EXPECT_EQ(a.outcome.completions, 1);
}

TEST(EmulatedDevice, SuperSpeedOnlyRequests) {
  TestDevice ss(usb::Speed::kSuper);
  auto isoch_delay = setup(Direction::kOut, RequestType::kStandard, Recipient::kDevice,
                           usb::request::kSetIsochDelay, 40, 0, 0);
  EXPECT_EQ(control(ss, isoch_delay).status, Status::kOk);
  auto sel = setup(Direction::kOut, RequestType::kStandard, Recipient::kDevice,
                   usb::request::kSetSel, 0, 0, 6);
  EXPECT_EQ(control(ss, sel, {1, 2, 3, 4, 5, 6}).status, Status::kOk);
  ASSERT_EQ(set_configuration(ss, 1).status, Status::kOk);
  EXPECT_EQ(feature(ss, true, Recipient::kDevice, 48, 0).status, Status::kOk);  // U1_ENABLE
  EXPECT_EQ(status_word(get_status(ss, Recipient::kDevice, 0)), 0x0005);
  TestDevice hs;
  EXPECT_EQ(control(hs, isoch_delay).status, Status::kStall);
  EXPECT_EQ(feature(hs, true, Recipient::kDevice, usb::feature::kTestMode, 0x0400).status,
            Status::kStall);
}

}  // namespace
