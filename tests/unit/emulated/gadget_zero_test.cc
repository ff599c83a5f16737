// Gadget Zero as the Linux usbtest driver drives it: each test replays what usbtest.c does for a
// case (through the same requests and URB flags) and checks the outcome the way usbtest does.
#include "devices/emulated/gadget_zero.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <string>
#include <vector>

#include "emulated_test_util.h"
#include "usb/core/descriptors.h"

namespace {

using namespace emutest;
using devices::GadgetZero;
using devices::GadgetZeroOptions;
using usb::TransferType;

constexpr uint16_t kTbufSize = 256;  // usbtest TBUF_SIZE

std::unique_ptr<GadgetZero> make(usb::Speed speed, uint8_t pattern = 0, GadgetZeroOptions o = {}) {
  o.speed = speed;
  o.pattern = pattern;
  auto gz = std::make_unique<GadgetZero>(o, usb::DeviceLocation{1, 3, "1-3", ""});
  return gz;
}

// What usbcore does when usbtest binds: configuration index 0 (source/sink), then usbtest's
// ioctl selects its alternate setting before every test.
void enumerate(GadgetZero& gz, uint8_t alt = 0) {
  auto cfg = get_descriptor(gz, usb::desc::kConfiguration, 0, 9);
  ASSERT_EQ(cfg.status, Status::kOk);
  ASSERT_EQ(set_configuration(gz, cfg.data[5]).status, Status::kOk);
  ASSERT_EQ(set_interface(gz, 0, alt).status, Status::kOk);
}

uint16_t bulk_maxp(usb::Speed s) {
  return s == usb::Speed::kSuper ? 1024 : 512;
}

// usbtest simple_io() for one URB: OUT gets the pattern + URB_ZERO_PACKET; IN gets
// URB_SHORT_NOT_OK and its data is checked with simple_check_buf(). Returns a Linux errno.
int simple_io(GadgetZero& gz, uint8_t ep, size_t length, unsigned pat, uint16_t maxp) {
  Outcome o;
  if (ep & usb::kEndpointDirIn) {
    o = transfer(gz, ep, TransferType::kBulk, {}, length, /*short_not_ok=*/true);
    if (o.status == Status::kOk && o.data != pattern(o.actual, pat, maxp)) return -EINVAL;
  } else {
    o = bulk_out(gz, ep, pattern(length, pat, maxp), /*zero_packet=*/true);
  }
  return usb::to_linux_errno(o.status);
}

// --- Descriptors ---

TEST(GadgetZero, IdentityAndLayoutAtHighSpeed) {
  auto gz = make(usb::Speed::kHigh);
  const auto& d = gz->descriptors();
  EXPECT_EQ(d.device.vendor_id, 0x0525);
  EXPECT_EQ(d.device.product_id, 0xa4a0);
  EXPECT_EQ(d.device.bcd_usb, 0x0200);
  EXPECT_EQ(d.device.device_class, 0xff);
  ASSERT_EQ(d.configurations.size(), 2u);
  EXPECT_EQ(d.configurations[0].value, 3);
  EXPECT_EQ(d.configurations[1].value, 2);
  const auto& ss = d.configurations[0];
  EXPECT_TRUE(ss.self_powered());
  EXPECT_EQ(ss.alternate_count(0), 2u);
  const auto* alt1 = ss.find(0, 1);
  ASSERT_NE(alt1, nullptr);
  ASSERT_EQ(alt1->endpoints.size(), 4u);
  EXPECT_EQ(alt1->endpoints[0].max_packet_size, 512);
  EXPECT_EQ(alt1->endpoints[2].type(), TransferType::kIsochronous);
  EXPECT_EQ(alt1->endpoints[2].max_packet_size, 1024);
  EXPECT_EQ(alt1->endpoints[2].interval, 4);
  EXPECT_EQ(d.configurations[1].alternate_count(0), 1u);

  auto product = get_descriptor(*gz, usb::desc::kString, 2, 255, false, 0x0409);
  EXPECT_EQ(usb::parse_string_descriptor(product.data).value(), "Gadget Zero");
  auto serial = get_descriptor(*gz, usb::desc::kString, 3, 255, false, 0x0409);
  EXPECT_GT(serial.actual, 64u);  // takes at least two packets
  auto name = get_descriptor(*gz, usb::desc::kString, ss.string_index, 255, false, 0x0409);
  EXPECT_EQ(usb::parse_string_descriptor(name.data).value(), "source and sink data");
}

TEST(GadgetZero, OptionsShapeIsoDescriptorsAndAreClamped) {
  GadgetZeroOptions o;
  o.isoc_maxpacket = 2000;  // clamped to 1024
  o.isoc_mult = 7;          // clamped to 2
  o.isoc_maxburst = 3;
  o.isoc_interval = 0;  // clamped to 1
  auto sets = GadgetZero::make_descriptors(o);
  const auto& hs_iso = sets.high_speed->configurations[0].find(0, 1)->endpoints[2];
  EXPECT_EQ(hs_iso.max_packet_size, 1024 | (2 << 11));
  EXPECT_EQ(hs_iso.hs_transactions(), 3);
  EXPECT_EQ(hs_iso.interval, 1);
  const auto& fs_iso = sets.full_speed->configurations[0].find(0, 1)->endpoints[2];
  EXPECT_EQ(fs_iso.max_packet_size, 1023);
  EXPECT_EQ(sets.full_speed->configurations[0].find(0, 0)->endpoints[0].max_packet_size, 64);
  const auto& ss_iso = sets.super_speed->configurations[0].find(0, 1)->endpoints[3];
  ASSERT_TRUE(ss_iso.ss_companion.has_value());
  EXPECT_EQ(ss_iso.ss_companion->attributes, 2);
  EXPECT_EQ(ss_iso.ss_companion->max_burst, 3);
  EXPECT_EQ(ss_iso.ss_companion->bytes_per_interval, 1024 * 3 * 4);
  GadgetZero gz(o);
  EXPECT_EQ(gz.options().isoc_mult, 2);
  o.loopback_first = true;
  auto swapped = GadgetZero::make_descriptors(o);
  EXPECT_EQ(swapped.high_speed->configurations[0].value, 2);
}

TEST(GadgetZero, SuperSpeedDescriptorsParseBack) {
  auto gz = make(usb::Speed::kSuper);
  auto dev = get_descriptor(*gz, usb::desc::kDevice, 0, 18);
  auto device = usb::DeviceDescriptor::parse(dev.data);
  ASSERT_TRUE(device.has_value());
  EXPECT_EQ(device->bcd_usb, 0x0300);
  EXPECT_EQ(device->max_packet_size0, 9);
  for (uint8_t i = 0; i < 2; ++i) {
    auto bytes = get_descriptor(*gz, usb::desc::kConfiguration, i, 0xffff);
    ASSERT_EQ(bytes.status, Status::kOk);
    auto config = usb::ConfigurationDescriptor::parse(bytes.data);
    ASSERT_TRUE(config.has_value()) << config.error().message;
    EXPECT_EQ(*config, gz->descriptors().configurations[i]);
    for (const auto& intf : config->interfaces) {
      for (const auto& ep : intf.endpoints) {
        ASSERT_TRUE(ep.ss_companion.has_value());
        EXPECT_EQ(ep.max_packet(), 1024);
      }
    }
  }
  const auto* alt1 = gz->descriptors().configurations[0].find(0, 1);
  EXPECT_EQ(alt1->endpoints[2].ss_companion->bytes_per_interval, 1024);

  auto head = get_descriptor(*gz, usb::desc::kBos, 0, 5);
  ASSERT_EQ(head.actual, 5u);
  const uint16_t total = static_cast<uint16_t>(head.data[2] | head.data[3] << 8);
  auto all = get_descriptor(*gz, usb::desc::kBos, 0, total);
  auto bos = usb::BosDescriptor::parse(all.data);
  ASSERT_TRUE(bos.has_value());
  ASSERT_EQ(bos->capabilities.size(), 2u);
  EXPECT_EQ(bos->capabilities[0].type, 0x02);
  EXPECT_EQ(bos->capabilities[0].data.size() + 3, 7u);  // USB_DT_USB_EXT_CAP_SIZE
  EXPECT_EQ(bos->capabilities[1].type, 0x03);
  EXPECT_EQ(bos->capabilities[1].data.size() + 3, 10u);  // USB_DT_USB_SS_CAP_SIZE
}

// --- usbtest case 9: ch9_postconfig ---

// Replays ch9_postconfig() with realworld=1; returns "" or what usbtest would complain about.
std::string ch9_postconfig(GadgetZero& gz) {
  const auto* config = gz.active_config_descriptor();
  if (!config) return "unconfigured";
  const size_t alts = config->alternate_count(0);
  for (size_t i = 0; alts > 1 && i < alts; ++i) {
    if (set_interface(gz, 0, static_cast<uint16_t>(i)).status != Status::kOk)
      return "set_interface";
    auto got = get_interface(gz, 0);
    if (got.actual != 1 || got.data[0] != i) return "get alt";
  }
  if (gz.descriptors().device.num_configurations != 1) {
    auto cfg = get_configuration(gz);
    if (cfg.actual != 1 || cfg.data[0] != config->value) return "get config";
  }
  if (get_descriptor(gz, usb::desc::kDevice, 0, 18).actual != 18) return "dev descriptor";
  const uint16_t bcd = gz.descriptors().device.bcd_usb;
  if (bcd >= 0x0210) {
    auto head = get_descriptor(gz, usb::desc::kBos, 0, 5);
    if (head.status != Status::kOk || head.actual != 5) return "bos descriptor";
    unsigned total = static_cast<unsigned>(head.data[2] | head.data[3] << 8);
    const unsigned num = head.data[4];
    total = std::min<unsigned>(total, kTbufSize);
    auto all = get_descriptor(gz, usb::desc::kBos, 0, static_cast<uint16_t>(total));
    if (all.actual != total) return "bos descriptor set";
    size_t pos = 0;
    size_t length = 5;
    for (unsigned i = 0; i < num; ++i) {
      pos += length;
      if (pos + 3 > total) break;
      length = all.data[pos];
      if (all.data[pos + 1] != usb::desc::kDeviceCapability) continue;
      const uint8_t* cap = &all.data[pos];
      if (cap[2] == 0x02) {
        const uint32_t attr = cap[3] | cap[4] << 8 | cap[5] << 16 | uint32_t{cap[6]} << 24;
        if (cap[0] != 7 || (attr & ~0xfffeu)) return "bogus usb 2.0 extension descriptor";
      } else if (cap[2] == 0x03) {
        if (cap[0] != 10 || (cap[3] & ~0x02) || ((cap[4] | cap[5] << 8) & ~0x0f)) {
          return "bogus superspeed device capability descriptor";
        }
      }
    }
  }
  auto good_config = [](const Outcome& o) {
    if (o.status != Status::kOk || o.actual < 9) return false;
    if (o.data[1] != usb::desc::kConfiguration && o.data[1] != usb::desc::kOtherSpeedConfiguration)
      return false;
    if (o.data[0] != 9 || (o.data[7] & 0x1f)) return false;
    const unsigned total = static_cast<unsigned>(o.data[2] | o.data[3] << 8);
    return total == o.actual || total >= kTbufSize;
  };
  for (uint8_t i = 0; i < gz.descriptors().device.num_configurations; ++i) {
    if (!good_config(get_descriptor(gz, usb::desc::kConfiguration, i, kTbufSize))) {
      return "config [" + std::to_string(i) + "] descriptor";
    }
  }
  if (bcd == 0x0200) {
    auto q = get_descriptor(gz, usb::desc::kDeviceQualifier, 0, 10);
    if (q.status == Status::kStall) {
      if (gz.speed() == usb::Speed::kHigh) return "hs dev qualifier";
    } else if (q.actual != 10) {
      return "dev qualifier";
    } else {
      for (uint8_t i = 0; i < q.data[8]; ++i) {
        if (!good_config(get_descriptor(gz, usb::desc::kOtherSpeedConfiguration, i, kTbufSize))) {
          return "other speed config";
        }
      }
    }
  }
  if (get_status(gz, Recipient::kDevice, 0).status != Status::kOk) return "get dev status";
  if (get_status(gz, Recipient::kInterface, 0).status != Status::kOk) return "get intf status";
  return "";
}

TEST(GadgetZero, UsbtestCase9Chapter9) {
  for (auto speed : {usb::Speed::kFull, usb::Speed::kHigh, usb::Speed::kSuper}) {
    for (uint8_t alt : {0, 1}) {
      auto gz = make(speed);
      enumerate(*gz, alt);
      for (int iteration = 0; iteration < 3; ++iteration) {
        EXPECT_EQ(ch9_postconfig(*gz), "")
            << "speed " << usb::to_string(speed) << " alt " << int{alt};
      }
    }
  }
}

// --- usbtest case 10: test_ctrl_queue's 16 subcases ---

struct Subcase {
  SetupPacket setup;
  bool in;
  int expected;  // usbtest: negative = must return it; positive = may return -it; 0 = success
};

std::vector<Subcase> ctrl_queue_subcases(GadgetZero& gz) {
  const bool super = gz.speed() == usb::Speed::kSuper;
  const uint8_t mps0 = gz.descriptors().device.max_packet_size0;
  auto get = [](uint16_t value, uint16_t len) {
    return setup(Direction::kIn, RequestType::kStandard, Recipient::kDevice,
                 usb::request::kGetDescriptor, value, 0, len);
  };
  std::vector<Subcase> v;
  v.push_back({get(usb::desc::kDevice << 8, 18), true, 0});
  v.push_back({get(usb::desc::kConfiguration << 8, 9), true, 0});
  v.push_back({setup(Direction::kIn, RequestType::kStandard, Recipient::kInterface,
                     usb::request::kGetInterface, 0, 0, 1),
               true, EPIPE});
  v.push_back({setup(Direction::kIn, RequestType::kStandard, Recipient::kInterface,
                     usb::request::kGetStatus, 0, 0, 2),
               true, 0});
  v.push_back({setup(Direction::kIn, RequestType::kStandard, Recipient::kDevice,
                     usb::request::kGetStatus, 0, 0, 2),
               true, 0});
  v.push_back({get(usb::desc::kDeviceQualifier << 8, 10), true,
               gz.speed() != usb::Speed::kHigh ? EPIPE : 0});
  v.push_back({get(usb::desc::kConfiguration << 8, 9 + 9), true, 0});
  v.push_back({get(usb::desc::kInterface << 8, 9), true, -EPIPE});
  v.push_back({setup(Direction::kOut, RequestType::kStandard, Recipient::kEndpoint,
                     usb::request::kClearFeature, 0, 0, 0),
               false, EPIPE});
  v.push_back({setup(Direction::kIn, RequestType::kStandard, Recipient::kEndpoint,
                     usb::request::kGetStatus, 0, 0, 2),
               true, 0});
  v.push_back({get(usb::desc::kConfiguration << 8, 1024), true, -EREMOTEIO});
  v.push_back({get(usb::desc::kEndpoint << 8, 9), true, EPIPE});
  v.push_back({get(usb::desc::kString << 8, 9), true, EREMOTEIO});
  v.push_back(
      {get(usb::desc::kConfiguration << 8, static_cast<uint16_t>(super ? 512 : 1024 - mps0)), true,
       -EREMOTEIO});
  uint16_t len14 = super ? 512 : mps0;
  if (len14 == 8) len14 = 24;
  if (len14 == 16) len14 = 32;
  v.push_back({get(usb::desc::kDevice << 8, len14), true, -EREMOTEIO});
  uint16_t len15 = 5;
  if (gz.descriptors().bos) len15 = static_cast<uint16_t>(gz.descriptors().bos->build().size());
  v.push_back({get(usb::desc::kBos << 8, len15), true,
               gz.descriptors().device.bcd_usb < 0x0201 ? -EPIPE : 0});
  return v;
}

TEST(GadgetZero, UsbtestCase10ControlQueue) {
  for (auto speed : {usb::Speed::kFull, usb::Speed::kHigh, usb::Speed::kSuper}) {
    auto gz = make(speed);
    enumerate(*gz);
    const auto subcases = ctrl_queue_subcases(*gz);
    ASSERT_EQ(subcases.size(), 16u);
    // Queue depth 32 (sglen), 4 rounds: every URB is submitted before any completion is checked
    // and completions must come back in FIFO order.
    constexpr size_t kDepth = 32;
    std::vector<Urb> urbs(kDepth * 4);
    std::vector<size_t> order;
    for (size_t i = 0; i < urbs.size(); ++i) {
      const Subcase& sc = subcases[i % 16];
      urbs[i].transfer = usb::Transfer::control(sc.in ? 0x80 : 0x00, sc.setup);
      urbs[i].transfer->flags.short_not_ok = sc.in;  // usbtest: URB_SHORT_NOT_OK on IN pipes
      urbs[i].arm();
      urbs[i].transfer->set_completion([&, i](usb::Transfer& t) {
        order.push_back(i);
        urbs[i].outcome.completed = true;
        urbs[i].outcome.status = t.status();
        urbs[i].outcome.actual = t.actual_length();
      });
    }
    for (auto& u : urbs) gz->submit(*u.transfer);
    ASSERT_EQ(order.size(), urbs.size());
    for (size_t i = 0; i < order.size(); ++i) EXPECT_EQ(order[i], i);
    for (size_t i = 0; i < urbs.size(); ++i) {
      const Subcase& sc = subcases[i % 16];
      const int status = usb::to_linux_errno(urbs[i].outcome.status);
      const bool good = status == sc.expected ||
                        (sc.expected > 0 && (status == -sc.expected || status == 0)) ||
                        (i % 16 == 12 && status == -EPIPE);
      EXPECT_TRUE(good) << "speed " << usb::to_string(speed) << " subcase " << i % 16 << " status "
                        << status << " expected " << sc.expected;
    }
    // Specific outcomes this device gives (not just what usbtest tolerates).
    EXPECT_EQ(urbs[2].outcome.status, Status::kOk);            // GET_INTERFACE answered
    EXPECT_EQ(urbs[8].outcome.status, Status::kOk);            // CLEAR_FEATURE(HALT) ep0 accepted
    EXPECT_EQ(urbs[12].outcome.status, Status::kShortPacket);  // 4-byte LANGID table
    EXPECT_EQ(urbs[12].outcome.actual, 4u);
  }
}

// --- usbtest case 13: halt_simple ---

int test_halt(GadgetZero& gz, uint8_t ep, size_t len, uint16_t maxp) {
  auto verify_not_halted = [&]() {
    auto st = get_status(gz, Recipient::kEndpoint, ep);
    if (st.status != Status::kOk || status_word(st) != 0) return -EINVAL;
    return simple_io(gz, ep, len, 0, maxp) == 0 ? 0 : -EINVAL;
  };
  if (verify_not_halted()) return -1;
  if (feature(gz, true, Recipient::kEndpoint, usb::feature::kEndpointHalt, ep).status !=
      Status::kOk) {
    return -2;
  }
  auto st = get_status(gz, Recipient::kEndpoint, ep);
  if (st.status != Status::kOk || status_word(st) != 1) return -3;
  if (simple_io(gz, ep, len, 0, maxp) != -EPIPE) return -4;
  if (simple_io(gz, ep, len, 0, maxp) != -EPIPE) return -5;  // verify_still_halted
  if (feature(gz, false, Recipient::kEndpoint, usb::feature::kEndpointHalt, ep).status !=
      Status::kOk) {
    return -6;
  }
  return verify_not_halted() ? -7 : 0;
}

TEST(GadgetZero, UsbtestCase13HaltSetGetClear) {
  for (auto speed : {usb::Speed::kHigh, usb::Speed::kSuper}) {
    for (uint8_t alt : {0, 1}) {
      auto gz = make(speed);
      enumerate(*gz, alt);
      const size_t len = speed == usb::Speed::kSuper ? 1024 : 512;
      for (int i = 0; i < 5; ++i) {
        EXPECT_EQ(test_halt(*gz, GadgetZero::kBulkIn, len, bulk_maxp(speed)), 0);
        EXPECT_EQ(test_halt(*gz, GadgetZero::kBulkOut, len, bulk_maxp(speed)), 0);
      }
    }
  }
}

// --- usbtest case 14 / 21: ctrl_out vendor echo ---

int ctrl_out(GadgetZero& gz, unsigned count, unsigned length, unsigned vary) {
  unsigned len = length;
  for (unsigned i = 0; i < count; ++i) {
    std::vector<uint8_t> buf(len);
    for (unsigned j = 0; j < len; ++j) buf[j] = static_cast<uint8_t>(i + j);
    auto w = control(gz,
                     setup(Direction::kOut, RequestType::kVendor, Recipient::kDevice,
                           GadgetZero::kRequestWrite, 0, 0, static_cast<uint16_t>(len)),
                     buf);
    if (w.status != Status::kOk) return usb::to_linux_errno(w.status);
    if (w.actual != len) return -EBADMSG;
    auto r = control(gz, setup(Direction::kIn, RequestType::kVendor, Recipient::kDevice,
                               GadgetZero::kRequestRead, 0, 0, static_cast<uint16_t>(len)));
    if (r.status != Status::kOk) return usb::to_linux_errno(r.status);
    if (r.actual != len || r.data != buf) return -EBADMSG;
    len += vary;
    if (len > length) len = 1;  // realworld
  }
  return 0;
}

TEST(GadgetZero, UsbtestCase14VendorControlEcho) {
  auto gz = make(usb::Speed::kHigh);
  enumerate(*gz);
  EXPECT_EQ(ctrl_out(*gz, 300, 256, 1), 0);
  EXPECT_EQ(ctrl_out(*gz, 50, 4096, 421), 0);
  EXPECT_EQ(ctrl_out(*gz, 5, 1, 0), 0);
  // More than the ep0 buffer, a wrong bmRequestType or non-zero wValue/wIndex: stall.
  EXPECT_EQ(ctrl_out(*gz, 1, 4097, 0), -EPIPE);
  auto bad_recipient = control(
      *gz, setup(Direction::kOut, RequestType::kVendor, Recipient::kInterface, 0x5b, 0, 0, 4),
      {1, 2, 3, 4});
  EXPECT_EQ(bad_recipient.status, Status::kStall);
  auto bad_value =
      control(*gz, setup(Direction::kIn, RequestType::kVendor, Recipient::kDevice, 0x5c, 1, 0, 4));
  EXPECT_EQ(bad_value.status, Status::kStall);
  auto unknown =
      control(*gz, setup(Direction::kIn, RequestType::kVendor, Recipient::kDevice, 0x5d, 0, 0, 4));
  EXPECT_EQ(unknown.status, Status::kStall);
  EXPECT_EQ(get_descriptor(*gz, usb::desc::kDevice, 0, 18).status, Status::kOk);
  // Only the source/sink configuration has them.
  ASSERT_EQ(set_configuration(*gz, GadgetZero::kLoopbackConfig).status, Status::kOk);
  EXPECT_EQ(ctrl_out(*gz, 1, 8, 0), -EPIPE);
}

// --- Bulk source / sink (usbtest 1-4, 17-20, 27/28) ---

TEST(GadgetZero, SourceAndSinkWithVaryingOddLengths) {
  for (auto speed : {usb::Speed::kHigh, usb::Speed::kSuper}) {
    for (unsigned pat : {0u, 1u}) {
      auto gz = make(speed, static_cast<uint8_t>(pat));
      enumerate(*gz, 1);
      const uint16_t maxp = bulk_maxp(speed);
      // simple_io() with vary, as cases 3 and 4 run it.
      for (uint8_t ep : {GadgetZero::kBulkOut, GadgetZero::kBulkIn}) {
        const int max = 4096;
        const int vary = 421;
        int len = max;
        for (int i = 0; i < 60; ++i) {
          ASSERT_EQ(simple_io(*gz, ep, static_cast<size_t>(len), pat, maxp), 0)
              << "len " << len << " ep " << int{ep};
          len = (len + vary) % max;
          if (len == 0) len = vary < max ? vary : max;
        }
        EXPECT_EQ(simple_io(*gz, ep, 1, pat, maxp), 0);
        EXPECT_EQ(simple_io(*gz, ep, 65536 + 7, pat, maxp), 0);
      }
      EXPECT_EQ(gz->sink_mismatches(), 0u);
      EXPECT_FALSE(gz->endpoint_halted(GadgetZero::kBulkOut));
    }
  }
}

TEST(GadgetZero, SourcePatternIsPerTransferModMaxpacket) {
  auto gz = make(usb::Speed::kHigh, 1);
  enumerate(*gz);
  auto in = bulk_in(*gz, GadgetZero::kBulkIn, 1500);
  ASSERT_EQ(in.actual, 1500u);
  EXPECT_EQ(in.data[0], 0);
  EXPECT_EQ(in.data[62], 62);
  EXPECT_EQ(in.data[63], 0);
  EXPECT_EQ(in.data[511], 511 % 63);
  EXPECT_EQ(in.data[512], 0);  // restarts every wMaxPacketSize
  auto zero = bulk_in(*gz, GadgetZero::kBulkIn, 0);
  EXPECT_EQ(zero.status, Status::kOk);
  EXPECT_EQ(zero.actual, 0u);
}

TEST(GadgetZero, SinkMismatchHaltsOutEndpoint) {
  auto gz = make(usb::Speed::kHigh, 1);
  enumerate(*gz);
  auto data = pattern(1000, 1, 512);
  data[700] ^= 0xff;
  auto bad = bulk_out(*gz, GadgetZero::kBulkOut, data);
  EXPECT_EQ(bad.status, Status::kOk);  // accepted; the halt hits what follows
  EXPECT_EQ(bad.actual, 1000u);
  EXPECT_EQ(gz->sink_mismatches(), 1u);
  EXPECT_TRUE(gz->endpoint_halted(GadgetZero::kBulkOut));
  EXPECT_EQ(status_word(get_status(*gz, Recipient::kEndpoint, GadgetZero::kBulkOut)), 1);
  EXPECT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, pattern(512, 1, 512)).status, Status::kStall);
  EXPECT_EQ(bulk_in(*gz, GadgetZero::kBulkIn, 512).status, Status::kOk);  // source unaffected
  ASSERT_EQ(
      feature(*gz, false, Recipient::kEndpoint, usb::feature::kEndpointHalt, GadgetZero::kBulkOut)
          .status,
      Status::kOk);
  EXPECT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, pattern(512, 1, 512)).status, Status::kOk);
  // Zeros against pattern 1 mismatch too (byte 1 should be 1); SET_INTERFACE, which usbtest
  // issues before every test, clears the halt.
  EXPECT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, std::vector<uint8_t>(64, 0x00)).status,
            Status::kOk);
  EXPECT_TRUE(gz->endpoint_halted(GadgetZero::kBulkOut));
  ASSERT_EQ(set_interface(*gz, 0, 0).status, Status::kOk);
  EXPECT_FALSE(gz->endpoint_halted(GadgetZero::kBulkOut));
}

TEST(GadgetZero, SinkZeroPatternRejectsNonZero) {
  auto gz = make(usb::Speed::kHigh, 0);
  enumerate(*gz);
  EXPECT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, std::vector<uint8_t>(10, 1)).status, Status::kOk);
  EXPECT_TRUE(gz->endpoint_halted(GadgetZero::kBulkOut));
  ASSERT_EQ(set_interface(*gz, 0, 0).status, Status::kOk);
  EXPECT_FALSE(gz->endpoint_halted(GadgetZero::kBulkOut));
}

TEST(GadgetZero, UsbtestCase29ToggleResetBetweenWrites) {
  auto gz = make(usb::Speed::kHigh);
  enumerate(*gz);
  const uint32_t before = gz->toggle_resets(GadgetZero::kBulkOut);
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(
        feature(*gz, false, Recipient::kEndpoint, usb::feature::kEndpointHalt, GadgetZero::kBulkOut)
            .status,
        Status::kOk);
    ASSERT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, pattern(2 * 512, 0, 512), true).status,
              Status::kOk);
    ASSERT_EQ(
        feature(*gz, false, Recipient::kEndpoint, usb::feature::kEndpointHalt, GadgetZero::kBulkOut)
            .status,
        Status::kOk);
    ASSERT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, pattern(2 * 512, 0, 512), true).status,
              Status::kOk);
  }
  EXPECT_EQ(gz->toggle_resets(GadgetZero::kBulkOut), before + 20);
}

TEST(GadgetZero, UnlinkOfCompletedUrbIsHarmless) {
  // usbtest 11/12/24: the emulated source/sink completes at once, so an unlink finds nothing
  // pending and the URB keeps its real outcome.
  auto gz = make(usb::Speed::kHigh);
  enumerate(*gz);
  Urb u;
  u.transfer = std::make_unique<usb::Transfer>(GadgetZero::kBulkIn, TransferType::kBulk, 512);
  u.arm();
  gz->submit(*u.transfer);
  EXPECT_FALSE(u.transfer->cancel());
  gz->cancel(*u.transfer);
  EXPECT_EQ(u.outcome.completions, 1);
  EXPECT_EQ(u.outcome.status, Status::kOk);
}

// --- Isochronous (usbtest 15/16 with alt=1) ---

struct IsoUrb {
  std::unique_ptr<usb::Transfer> transfer;
  bool completed = false;
};

IsoUrb iso_urb(uint8_t ep, size_t bytes, size_t maxp_total) {
  // iso_alloc_urb(): packets of maxp * transactions, only the last one short.
  IsoUrb u;
  const size_t packets = (bytes + maxp_total - 1) / maxp_total;
  u.transfer = std::make_unique<usb::Transfer>(ep, TransferType::kIsochronous, bytes);
  size_t left = bytes;
  for (size_t i = 0; i < packets; ++i) {
    usb::IsoPacket p;
    p.offset = static_cast<uint32_t>(maxp_total * i);
    p.length = static_cast<uint32_t>(std::min(left, maxp_total));
    left -= p.length;
    u.transfer->iso_packets.push_back(p);
  }
  if (ep & usb::kEndpointDirIn) {
    std::fill(u.transfer->buffer().begin(), u.transfer->buffer().end(), 0xa5);
  } else {
    std::fill(u.transfer->buffer().begin(), u.transfer->buffer().end(), 0);
  }
  return u;
}

TEST(GadgetZero, UsbtestCase15And16Iso) {
  struct Case {
    usb::Speed speed;
    uint8_t mult;
    uint8_t burst;
    size_t per_packet;
  };
  for (const Case& c :
       {Case{usb::Speed::kHigh, 0, 0, 1024}, Case{usb::Speed::kHigh, 2, 0, 3072},
        Case{usb::Speed::kSuper, 1, 3, 8192}, Case{usb::Speed::kFull, 0, 0, 1023}}) {
    GadgetZeroOptions o;
    o.isoc_mult = c.mult;
    o.isoc_maxburst = c.burst;
    auto gz = make(c.speed, 1, o);
    enumerate(*gz, 1);
    for (uint8_t ep : {GadgetZero::kIsoIn, GadgetZero::kIsoOut}) {
      // 8 queued URBs (sglen), 64 packets each, the last one short.
      std::vector<IsoUrb> urbs;
      for (int i = 0; i < 8; ++i) {
        urbs.push_back(iso_urb(ep, c.per_packet * 64 - 100, c.per_packet));
      }
      for (auto& u : urbs) {
        u.transfer->set_completion([&u](usb::Transfer&) { u.completed = true; });
        gz->submit(*u.transfer);
      }
      for (auto& u : urbs) {
        ASSERT_TRUE(u.completed);
        const usb::Transfer& t = *u.transfer;
        EXPECT_EQ(t.status(), Status::kOk);
        // complicated_callback(): no packet errors and actual == transfer_buffer_length.
        EXPECT_EQ(t.actual_length(), t.length());
        ASSERT_EQ(t.iso_packets.size(), 64u);
        for (const auto& p : t.iso_packets) {
          EXPECT_EQ(p.status, Status::kOk);
          EXPECT_EQ(p.actual_length, p.length);
          if (ep & usb::kEndpointDirIn) {
            const auto* d = t.buffer().data() + p.offset;
            const uint16_t maxp =
                gz->active_config_descriptor()->find(0, 1)->endpoints[2].max_packet();
            for (size_t k = 0; k < p.length; ++k) {
              ASSERT_EQ(d[k], (k % maxp) % 63) << "packet at " << p.offset << " byte " << k;
            }
          }
        }
      }
    }
    // usbtest sends zeros on iso OUT whatever its pattern; only counted, nothing halts.
    EXPECT_GT(gz->iso_out_mismatches(), 0u);
    EXPECT_FALSE(gz->endpoint_halted(GadgetZero::kIsoOut));
  }
}

TEST(GadgetZero, IsoNeedsAlt1AndSanePackets) {
  auto gz = make(usb::Speed::kHigh);
  enumerate(*gz, 0);
  auto u = iso_urb(GadgetZero::kIsoIn, 4096, 1024);
  Status got = Status::kOk;
  u.transfer->set_completion([&](usb::Transfer& t) { got = t.status(); });
  gz->submit(*u.transfer);
  EXPECT_EQ(got, Status::kStall);  // not in alt 0

  ASSERT_EQ(set_interface(*gz, 0, 1).status, Status::kOk);
  auto bad = iso_urb(GadgetZero::kIsoIn, 4096, 1024);
  bad.transfer->iso_packets[1].offset = 4000;  // runs past the buffer
  bad.transfer->iso_packets.push_back({100000, 10, 0, Status::kOk});
  bad.transfer->set_completion([&](usb::Transfer& t) { got = t.status(); });
  gz->submit(*bad.transfer);
  EXPECT_EQ(got, Status::kOk);
  EXPECT_EQ(bad.transfer->iso_packets[1].status, Status::kInvalid);
  EXPECT_EQ(bad.transfer->iso_packets[4].status, Status::kInvalid);
  EXPECT_EQ(bad.transfer->actual_length(), 3u * 1024);

  auto none = std::make_unique<usb::Transfer>(GadgetZero::kIsoIn, TransferType::kIsochronous, 8);
  none->set_completion([&](usb::Transfer& t) { got = t.status(); });
  gz->submit(*none);
  EXPECT_EQ(got, Status::kInvalid);
}

// --- Loopback (configuration 2) ---

class Loopback : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }
  void start(GadgetZeroOptions o) {
    o.speed = usb::Speed::kHigh;
    gz = std::make_unique<GadgetZero>(o);
    ASSERT_EQ(set_configuration(*gz, GadgetZero::kLoopbackConfig).status, Status::kOk);
  }
  Urb submit_in(size_t length, bool short_not_ok = false) {
    Urb u;
    u.transfer = std::make_unique<usb::Transfer>(GadgetZero::kBulkIn, TransferType::kBulk, length);
    u.transfer->flags.short_not_ok = short_not_ok;
    return u;
  }
  static std::vector<uint8_t> bytes(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
    return v;
  }
  std::unique_ptr<GadgetZero> gz;
};

TEST_F(Loopback, ShortWriteReadsBack) {
  auto data = bytes(100, 1);
  ASSERT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, data).status, Status::kOk);
  auto in = bulk_in(*gz, GadgetZero::kBulkIn, 512);
  EXPECT_EQ(in.status, Status::kOk);
  EXPECT_EQ(in.data, data);
  auto strict_data = bytes(33, 9);
  ASSERT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, strict_data).status, Status::kOk);
  auto strict = bulk_in(*gz, GadgetZero::kBulkIn, 512, /*short_not_ok=*/true);
  EXPECT_EQ(strict.status, Status::kShortPacket);
  EXPECT_EQ(strict.data, strict_data);
}

TEST_F(Loopback, InWaitsForDataAndRequestBoundaries) {
  Urb in = submit_in(8192);
  in.arm();
  gz->submit(*in.transfer);
  EXPECT_FALSE(in.outcome.completed);  // nothing to read yet: pending
  // A maxpacket multiple below buflen without ZLP leaves the gadget request open.
  auto a = bytes(1024, 3);
  ASSERT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, a).status, Status::kOk);
  EXPECT_FALSE(in.outcome.completed);
  auto b = bytes(10, 50);
  ASSERT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, b).status, Status::kOk);  // short: closes it
  ASSERT_TRUE(in.outcome.completed);
  a.insert(a.end(), b.begin(), b.end());
  EXPECT_EQ(in.outcome.data, a);
}

TEST_F(Loopback, ZeroLengthPacketsAreLoopedBack) {
  auto data = bytes(512, 5);
  ASSERT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, data, /*zero_packet=*/true).status, Status::kOk);
  auto first = bulk_in(*gz, GadgetZero::kBulkIn, 512);
  EXPECT_EQ(first.data, data);
  auto zlp = bulk_in(*gz, GadgetZero::kBulkIn, 512);  // the ZLP ends the next read
  EXPECT_EQ(zlp.status, Status::kOk);
  EXPECT_EQ(zlp.actual, 0u);
  // A full request (buflen) is returned without a terminator: the read continues into the next.
  auto full = bytes(4096, 7);
  ASSERT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, full).status, Status::kOk);
  Urb in = submit_in(8192);
  in.arm();
  gz->submit(*in.transfer);
  EXPECT_FALSE(in.outcome.completed);
  ASSERT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, {}).status, Status::kOk);  // explicit ZLP
  ASSERT_TRUE(in.outcome.completed);
  EXPECT_EQ(in.outcome.data, full);
}

TEST_F(Loopback, BoundedQueueHoldsWritesUntilRead) {
  GadgetZeroOptions o;
  o.loopback_qlen = 2;
  o.bulk_buflen = 512;
  start(o);
  auto data = bytes(3 * 512 + 20, 11);
  Urb out;
  out.transfer =
      std::make_unique<usb::Transfer>(GadgetZero::kBulkOut, TransferType::kBulk, data.size());
  std::copy(data.begin(), data.end(), out.transfer->buffer().begin());
  out.arm();
  gz->submit(*out.transfer);
  EXPECT_FALSE(out.outcome.completed);  // two requests full, the rest waits
  EXPECT_EQ(gz->loopback_queued_chunks(), 2u);
  std::vector<uint8_t> back;
  while (back.size() < data.size()) {
    auto in = bulk_in(*gz, GadgetZero::kBulkIn, 512);
    ASSERT_EQ(in.status, Status::kOk);
    back.insert(back.end(), in.data.begin(), in.data.end());
  }
  EXPECT_TRUE(out.outcome.completed);
  EXPECT_EQ(out.outcome.actual, data.size());
  EXPECT_EQ(back, data);
}

TEST_F(Loopback, CancelPendingReadAndResetOnSetInterface) {
  Urb in = submit_in(512);
  in.arm();
  gz->submit(*in.transfer);
  ASSERT_FALSE(in.outcome.completed);
  EXPECT_TRUE(in.transfer->cancel());
  EXPECT_EQ(in.outcome.status, Status::kCancelled);
  EXPECT_EQ(in.outcome.completions, 1);
  ASSERT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, bytes(10, 1)).status, Status::kOk);
  EXPECT_EQ(gz->loopback_queued_chunks(), 1u);
  ASSERT_EQ(set_interface(*gz, 0, 0).status, Status::kOk);  // set_alt frees the requests
  EXPECT_EQ(gz->loopback_queued_chunks(), 0u);
  Urb later = submit_in(512);
  later.arm();
  gz->submit(*later.transfer);
  EXPECT_FALSE(later.outcome.completed);
  gz->disconnect();
  EXPECT_EQ(later.outcome.status, Status::kNoDevice);
}

TEST_F(Loopback, HaltWorksOnLoopbackEndpoints) {
  ASSERT_EQ(
      feature(*gz, true, Recipient::kEndpoint, usb::feature::kEndpointHalt, GadgetZero::kBulkIn)
          .status,
      Status::kOk);
  EXPECT_EQ(bulk_in(*gz, GadgetZero::kBulkIn, 512).status, Status::kStall);
  ASSERT_EQ(
      feature(*gz, false, Recipient::kEndpoint, usb::feature::kEndpointHalt, GadgetZero::kBulkIn)
          .status,
      Status::kOk);
  ASSERT_EQ(bulk_out(*gz, GadgetZero::kBulkOut, bytes(7, 1)).status, Status::kOk);
  EXPECT_EQ(bulk_in(*gz, GadgetZero::kBulkIn, 512).actual, 7u);
}

}  // namespace
