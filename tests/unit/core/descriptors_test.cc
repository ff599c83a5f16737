// Descriptor parsing and building: real descriptor sets from real devices, round trips, and every
// way a hostile device or guest can get the lengths wrong.
#include "usb/core/descriptors.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace usb {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

void expect_malformed(const Error& e, const std::string& needle) {
  EXPECT_EQ(e.code, Error::Code::kMalformed);
  EXPECT_NE(e.message.find(needle), std::string::npos)
      << "message \"" << e.message << "\" lacks \"" << needle << "\"";
}

// --- Real descriptor sets ---

// Gadget Zero (0525:a4a0), high speed.
const Bytes kGadgetZeroDevice = {0x12, 0x01, 0x00, 0x02, 0xff, 0x00, 0x00, 0x40, 0x25,
                                 0x05, 0xa0, 0xa4, 0x17, 0x05, 0x01, 0x02, 0x03, 0x02};

// Gadget Zero source/sink configuration 3 at high speed: alt 0 bulk in/out, alt 1 adds
// iso in/out (f_sourcesink defaults: 512-byte bulk, 1024-byte iso, interval 4).
const Bytes kGadgetZeroSourceSink = {
    0x09, 0x02, 0x45, 0x00, 0x01, 0x03, 0x04, 0xc0, 0x01,  // config 3, self-powered
    0x09, 0x04, 0x00, 0x00, 0x02, 0xff, 0x00, 0x00, 0x05,  // interface 0 alt 0
    0x07, 0x05, 0x81, 0x02, 0x00, 0x02, 0x00,              // bulk IN 1, 512
    0x07, 0x05, 0x01, 0x02, 0x00, 0x02, 0x00,              // bulk OUT 1, 512
    0x09, 0x04, 0x00, 0x01, 0x04, 0xff, 0x00, 0x00, 0x05,  // interface 0 alt 1
    0x07, 0x05, 0x81, 0x02, 0x00, 0x02, 0x00,              //
    0x07, 0x05, 0x01, 0x02, 0x00, 0x02, 0x00,              //
    0x07, 0x05, 0x82, 0x01, 0x00, 0x04, 0x04,              // iso IN 2, 1024, interval 4
    0x07, 0x05, 0x02, 0x01, 0x00, 0x04, 0x04,              // iso OUT 2
};

// A USB 2.0 mass-storage stick (bulk-only, SCSI transparent).
const Bytes kMassStorage = {
    0x09, 0x02, 0x20, 0x00, 0x01, 0x01, 0x00, 0x80, 0x32,  // 100 mA
    0x09, 0x04, 0x00, 0x00, 0x02, 0x08, 0x06, 0x50, 0x00,  //
    0x07, 0x05, 0x81, 0x02, 0x00, 0x02, 0x00,              //
    0x07, 0x05, 0x02, 0x02, 0x00, 0x02, 0x00,              //
};

// The same stick at SuperSpeed: every endpoint has a companion (USB 3.2 9.6.7), burst 15.
const Bytes kSsMassStorage = {
    0x09, 0x02, 0x2c, 0x00, 0x01, 0x01, 0x00, 0x80, 0x25,  //
    0x09, 0x04, 0x00, 0x00, 0x02, 0x08, 0x06, 0x50, 0x00,  //
    0x07, 0x05, 0x81, 0x02, 0x00, 0x04, 0x00,              // bulk IN, 1024
    0x06, 0x30, 0x0f, 0x00, 0x00, 0x00,                    //
    0x07, 0x05, 0x02, 0x02, 0x00, 0x04, 0x00,              //
    0x06, 0x30, 0x0f, 0x00, 0x00, 0x00,                    //
};

// CDC ACM composite: IAD, communication interface with class-specific functional descriptors,
// interrupt endpoint, data interface with two bulk endpoints.
const Bytes kCdcAcm = {
    0x09, 0x02, 0x4b, 0x00, 0x02, 0x01, 0x00, 0x80, 0xfa,  //
    0x08, 0x0b, 0x00, 0x02, 0x02, 0x02, 0x01, 0x00,        // IAD: interfaces 0-1, CDC ACM
    0x09, 0x04, 0x00, 0x00, 0x01, 0x02, 0x02, 0x01, 0x00,  //
    0x05, 0x24, 0x00, 0x10, 0x01,                          // CDC header 1.10
    0x05, 0x24, 0x01, 0x00, 0x01,                          // call management
    0x04, 0x24, 0x02, 0x02,                                // ACM
    0x05, 0x24, 0x06, 0x00, 0x01,                          // union 0 -> 1
    0x07, 0x05, 0x82, 0x03, 0x08, 0x00, 0x10,              // interrupt IN, 8 bytes
    0x09, 0x04, 0x01, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x00,  //
    0x07, 0x05, 0x03, 0x02, 0x40, 0x00, 0x00,              //
    0x07, 0x05, 0x84, 0x02, 0x40, 0x00, 0x00,              //
};

// USB Audio 1.0 streaming alt setting: 9-byte iso endpoint followed by a class-specific
// endpoint descriptor (CS_ENDPOINT 0x25).
const Bytes kAudioStreaming = {
    0x09, 0x02, 0x32, 0x00, 0x01, 0x01, 0x00, 0x80, 0x32,  //
    0x09, 0x04, 0x01, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00,  // alt 0: no endpoints
    0x09, 0x04, 0x01, 0x01, 0x01, 0x01, 0x02, 0x00, 0x00,  // alt 1
    0x07, 0x24, 0x01, 0x01, 0x01, 0x01, 0x00,              // AS general
    0x09, 0x05, 0x01, 0x09, 0xc8, 0x00, 0x01, 0x00, 0x00,  // iso OUT, 200, adaptive
    0x07, 0x25, 0x01, 0x01, 0x00, 0x00, 0x00,              // CS endpoint
};

TEST(DeviceDescriptor, ParsesGadgetZero) {
  auto d = DeviceDescriptor::parse(kGadgetZeroDevice);
  ASSERT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(d->bcd_usb, 0x0200);
  EXPECT_EQ(d->device_class, 0xff);
  EXPECT_EQ(d->device_subclass, 0);
  EXPECT_EQ(d->device_protocol, 0);
  EXPECT_EQ(d->max_packet_size0, 64);
  EXPECT_EQ(d->vendor_id, 0x0525);
  EXPECT_EQ(d->product_id, 0xa4a0);
  EXPECT_EQ(d->bcd_device, 0x0517);
  EXPECT_EQ(d->manufacturer_index, 1);
  EXPECT_EQ(d->product_index, 2);
  EXPECT_EQ(d->serial_index, 3);
  EXPECT_EQ(d->num_configurations, 2);
  EXPECT_EQ(d->build(), kGadgetZeroDevice);
}

TEST(DeviceDescriptor, BuildDefaultsAndRoundTrip) {
  DeviceDescriptor d;
  d.vendor_id = 0x1234;
  d.bcd_usb = 0x0320;
  d.max_packet_size0 = 9;
  const auto b = d.build();
  ASSERT_EQ(b.size(), 18u);
  EXPECT_EQ(b[0], 18);
  EXPECT_EQ(b[1], desc::kDevice);
  EXPECT_EQ(b[2], 0x20);
  EXPECT_EQ(b[3], 0x03);
  EXPECT_EQ(b[8], 0x34);
  EXPECT_EQ(b[9], 0x12);
  auto back = DeviceDescriptor::parse(b);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, d);
}

TEST(DeviceDescriptor, TrailingBytesIgnored) {
  Bytes b = kGadgetZeroDevice;
  b.push_back(0xff);
  EXPECT_TRUE(DeviceDescriptor::parse(b).has_value());
}

TEST(DeviceDescriptor, Rejections) {
  EXPECT_FALSE(DeviceDescriptor::parse({}).has_value());
  expect_malformed(DeviceDescriptor::parse(Bytes{0x12}).error(), "fewer than 2");
  Bytes b = kGadgetZeroDevice;
  b[0] = 0;
  expect_malformed(DeviceDescriptor::parse(b).error(), "bLength 0");
  b[0] = 1;
  expect_malformed(DeviceDescriptor::parse(b).error(), "bLength 1");
  b[0] = 8;  // what a host sees after reading only bMaxPacketSize0 is not a device descriptor
  expect_malformed(DeviceDescriptor::parse(b).error(), "expected 18");
  b[0] = 19;
  expect_malformed(DeviceDescriptor::parse(b).error(), "runs past the end");
  b = kGadgetZeroDevice;
  b[1] = desc::kConfiguration;
  expect_malformed(DeviceDescriptor::parse(b).error(), "bDescriptorType 2");
  b = kGadgetZeroDevice;
  b.pop_back();
  expect_malformed(DeviceDescriptor::parse(b).error(), "runs past the end");
}

TEST(ConfigurationDescriptor, ParsesGadgetZeroSourceSink) {
  auto c = ConfigurationDescriptor::parse(kGadgetZeroSourceSink);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(c->descriptor_type, desc::kConfiguration);
  EXPECT_EQ(c->value, 3);
  EXPECT_EQ(c->num_interfaces, 1);
  EXPECT_EQ(c->string_index, 4);
  EXPECT_EQ(c->attributes, 0xc0);
  EXPECT_TRUE(c->self_powered());
  EXPECT_EQ(c->max_power, 1);
  EXPECT_TRUE(c->extra.empty());
  ASSERT_EQ(c->interfaces.size(), 2u);
  EXPECT_EQ(c->alternate_count(0), 2u);
  EXPECT_EQ(c->alternate_count(1), 0u);
  const auto* alt0 = c->find(0, 0);
  const auto* alt1 = c->find(0, 1);
  ASSERT_NE(alt0, nullptr);
  ASSERT_NE(alt1, nullptr);
  EXPECT_EQ(c->find(0, 2), nullptr);
  EXPECT_EQ(c->find(1, 0), nullptr);
  EXPECT_EQ(alt0->interface_class, 0xff);
  EXPECT_EQ(alt0->string_index, 5);
  ASSERT_EQ(alt0->endpoints.size(), 2u);
  ASSERT_EQ(alt1->endpoints.size(), 4u);
  const auto& in = alt0->endpoints[0];
  EXPECT_EQ(in.address, 0x81);
  EXPECT_EQ(in.direction(), Direction::kIn);
  EXPECT_EQ(in.type(), TransferType::kBulk);
  EXPECT_EQ(in.max_packet(), 512);
  EXPECT_EQ(in.length, 7);
  EXPECT_FALSE(in.ss_companion.has_value());
  EXPECT_EQ(alt0->endpoints[1].direction(), Direction::kOut);
  const auto& iso = alt1->endpoints[2];
  EXPECT_EQ(iso.type(), TransferType::kIsochronous);
  EXPECT_EQ(iso.max_packet(), 1024);
  EXPECT_EQ(iso.interval, 4);
  EXPECT_EQ(iso.hs_transactions(), 1);
  EXPECT_EQ(c->build(), kGadgetZeroSourceSink);
}

TEST(ConfigurationDescriptor, ParsesMassStorage) {
  auto c = ConfigurationDescriptor::parse(kMassStorage);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_FALSE(c->self_powered());
  EXPECT_EQ(c->max_power, 0x32);
  ASSERT_EQ(c->interfaces.size(), 1u);
  const auto& i = c->interfaces[0];
  EXPECT_EQ(i.interface_class, 0x08);
  EXPECT_EQ(i.interface_subclass, 0x06);
  EXPECT_EQ(i.interface_protocol, 0x50);
  EXPECT_FALSE(i.association.has_value());
  EXPECT_EQ(i.endpoints.size(), 2u);
  EXPECT_EQ(c->build(), kMassStorage);
}

TEST(ConfigurationDescriptor, ParsesSuperSpeedCompanions) {
  auto c = ConfigurationDescriptor::parse(kSsMassStorage);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  for (const auto& ep : c->interfaces[0].endpoints) {
    ASSERT_TRUE(ep.ss_companion.has_value());
    EXPECT_EQ(ep.ss_companion->max_burst, 15);
    EXPECT_EQ(ep.ss_companion->attributes, 0);
    EXPECT_EQ(ep.ss_companion->bytes_per_interval, 0);
    EXPECT_TRUE(ep.extra.empty());
    EXPECT_EQ(ep.max_packet(), 1024);
  }
  EXPECT_EQ(c->build(), kSsMassStorage);
}

TEST(ConfigurationDescriptor, ParsesIadAndClassSpecific) {
  auto c = ConfigurationDescriptor::parse(kCdcAcm);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  ASSERT_EQ(c->interfaces.size(), 2u);
  const auto& comm = c->interfaces[0];
  ASSERT_TRUE(comm.association.has_value());
  EXPECT_EQ(*comm.association, (InterfaceAssociation{0, 2, 2, 2, 1, 0}));
  EXPECT_EQ(comm.extra, Bytes(kCdcAcm.begin() + 26, kCdcAcm.begin() + 45));
  ASSERT_EQ(comm.endpoints.size(), 1u);
  EXPECT_EQ(comm.endpoints[0].type(), TransferType::kInterrupt);
  EXPECT_EQ(comm.endpoints[0].interval, 0x10);
  const auto& data = c->interfaces[1];
  EXPECT_FALSE(data.association.has_value());
  EXPECT_EQ(data.interface_class, 0x0a);
  EXPECT_EQ(data.endpoints.size(), 2u);
  EXPECT_EQ(c->build(), kCdcAcm);
}

TEST(ConfigurationDescriptor, ParsesAudioEndpoints) {
  auto c = ConfigurationDescriptor::parse(kAudioStreaming);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  ASSERT_EQ(c->interfaces.size(), 2u);
  EXPECT_TRUE(c->interfaces[0].endpoints.empty());
  const auto& alt1 = c->interfaces[1];
  EXPECT_EQ(alt1.extra.size(), 7u);
  ASSERT_EQ(alt1.endpoints.size(), 1u);
  const auto& ep = alt1.endpoints[0];
  EXPECT_EQ(ep.length, 9);
  EXPECT_EQ(ep.audio_extra[0], 0);
  EXPECT_EQ(ep.max_packet(), 200);
  EXPECT_EQ(ep.extra, (Bytes{0x07, 0x25, 0x01, 0x01, 0x00, 0x00, 0x00}));
  EXPECT_EQ(c->alternate_count(1), 2u);
  EXPECT_EQ(c->build(), kAudioStreaming);
}

TEST(ConfigurationDescriptor, OtherSpeedConfiguration) {
  Bytes b = kMassStorage;
  b[1] = desc::kOtherSpeedConfiguration;
  auto c = ConfigurationDescriptor::parse(b);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(c->descriptor_type, desc::kOtherSpeedConfiguration);
  EXPECT_EQ(c->build(), b);
}

TEST(ConfigurationDescriptor, ExtraBeforeFirstInterface) {
  // An OTG descriptor (USB OTG 6.4) between the header and the first interface.
  const Bytes b = {0x09, 0x02, 0x15, 0x00, 0x01, 0x01, 0x00, 0x80, 0x32, 0x03, 0x09,
                   0x03, 0x09, 0x04, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00};
  auto c = ConfigurationDescriptor::parse(b);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(c->extra, (Bytes{0x03, 0x09, 0x03}));
  EXPECT_EQ(c->build(), b);
}

TEST(ConfigurationDescriptor, HighBandwidthEndpoint) {
  EndpointDescriptor ep;
  ep.max_packet_size = 0x1400;  // 1024 × 3 transactions
  EXPECT_EQ(ep.max_packet(), 1024);
  EXPECT_EQ(ep.hs_transactions(), 3);
}

TEST(ConfigurationDescriptor, BufferLongerThanTotalLength) {
  Bytes b = kMassStorage;
  b.insert(b.end(), {0xde, 0xad});
  auto c = ConfigurationDescriptor::parse(b);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->build(), kMassStorage);
}

TEST(ConfigurationDescriptor, HeaderOnly) {
  const Bytes b = {0x09, 0x02, 0x09, 0x00, 0x00, 0x01, 0x00, 0x80, 0x00};
  auto c = ConfigurationDescriptor::parse(b);
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(c->interfaces.empty());
  EXPECT_EQ(c->build(), b);
}

TEST(ConfigurationDescriptor, BuildComputesTotalLengthAndEndpointCount) {
  ConfigurationDescriptor c;
  c.num_interfaces = 1;
  InterfaceDescriptor i;
  i.interface_class = 0xff;
  EndpointDescriptor ep;
  ep.address = 0x81;
  ep.attributes = 2;
  ep.max_packet_size = 512;
  ep.ss_companion = SsEndpointCompanion{3, 0x04, 0};
  ep.extra = {0x03, 0x99, 0x00};
  i.endpoints = {ep, ep};
  i.association = InterfaceAssociation{0, 1, 0xff, 0, 0, 0};
  c.interfaces = {i};
  const auto b = c.build();
  ASSERT_EQ(b.size(), 9u + 8 + 9 + 2 * (7 + 6 + 3));
  EXPECT_EQ(b[2], b.size());
  EXPECT_EQ(b[3], 0);
  EXPECT_EQ(b[9 + 8 + 4], 2);  // bNumEndpoints
  auto back = ConfigurationDescriptor::parse(b);
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(*back, c);
}

TEST(ConfigurationDescriptor, IadNotFollowedByInterfaceStaysRaw) {
  const Bytes b = {0x09, 0x02, 0x1a, 0x00, 0x01, 0x01, 0x00, 0x80, 0x32,  //
                   0x09, 0x04, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00,  //
                   0x08, 0x0b, 0x00, 0x02, 0x02, 0x02, 0x01, 0x00};       // IAD at the end
  auto c = ConfigurationDescriptor::parse(b);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(c->interfaces[0].extra.size(), 8u);
  EXPECT_EQ(c->build(), b);
}

TEST(ConfigurationDescriptor, CompanionNotDirectlyAfterEndpointStaysRaw) {
  const Bytes b = {0x09, 0x02, 0x22, 0x00, 0x01, 0x01, 0x00, 0x80, 0x32,  //
                   0x09, 0x04, 0x00, 0x00, 0x01, 0xff, 0x00, 0x00, 0x00,  //
                   0x07, 0x05, 0x81, 0x02, 0x00, 0x04, 0x00,              //
                   0x03, 0x25, 0x00,                                      // class-specific
                   0x06, 0x30, 0x00, 0x00, 0x00, 0x00};                   // companion
  auto c = ConfigurationDescriptor::parse(b);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  const auto& ep = c->interfaces[0].endpoints[0];
  EXPECT_FALSE(ep.ss_companion.has_value());
  EXPECT_EQ(ep.extra.size(), 9u);
  EXPECT_EQ(c->build(), b);
}

TEST(ConfigurationDescriptor, EndpointCountMismatchIsTolerated) {
  Bytes b = kMassStorage;
  b[9 + 4] = 3;  // claims three endpoints, two follow (Linux warns and carries on)
  auto c = ConfigurationDescriptor::parse(b);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(c->interfaces[0].endpoints.size(), 2u);
  EXPECT_EQ(c->build(), kMassStorage);  // rebuilt with the true count
}

// --- Rejections ---

TEST(ConfigurationDescriptorRejects, ShortHeader) {
  for (size_t n = 0; n < 9; ++n) {
    auto c = ConfigurationDescriptor::parse(Bytes(kMassStorage.begin(), kMassStorage.begin() + n));
    ASSERT_FALSE(c.has_value()) << n;
    expect_malformed(c.error(), "need at least 9");
  }
}

TEST(ConfigurationDescriptorRejects, HeaderFields) {
  Bytes b = kMassStorage;
  b[0] = 0;
  expect_malformed(ConfigurationDescriptor::parse(b).error(), "bLength 0");
  b[0] = 10;
  expect_malformed(ConfigurationDescriptor::parse(b).error(), "bLength 10");
  b = kMassStorage;
  b[1] = desc::kDevice;
  expect_malformed(ConfigurationDescriptor::parse(b).error(), "bDescriptorType 1");
}

TEST(ConfigurationDescriptorRejects, TotalLength) {
  Bytes b = kMassStorage;
  b[2] = 8;
  expect_malformed(ConfigurationDescriptor::parse(b).error(), "wTotalLength 8 is smaller");
  b[2] = 0;
  expect_malformed(ConfigurationDescriptor::parse(b).error(), "wTotalLength 0");
  b[2] = 33;
  expect_malformed(ConfigurationDescriptor::parse(b).error(), "wTotalLength 33 exceeds the 32");
  b[2] = 0xff;
  b[3] = 0xff;
  expect_malformed(ConfigurationDescriptor::parse(b).error(), "wTotalLength 65535");
}

TEST(ConfigurationDescriptorRejects, ZeroOrOneLengthDescriptor) {
  for (uint8_t len : {0, 1}) {
    Bytes b = kMassStorage;
    b[18] = len;  // first endpoint
    auto c = ConfigurationDescriptor::parse(b);
    ASSERT_FALSE(c.has_value());
    expect_malformed(c.error(), "bLength " + std::to_string(len) + " (< 2) at offset 18");
  }
}

TEST(ConfigurationDescriptorRejects, LengthBeyondTotal) {
  Bytes b = kMassStorage;
  b[25] = 8;  // last endpoint claims one byte more than is left
  auto c = ConfigurationDescriptor::parse(b);
  ASSERT_FALSE(c.has_value());
  expect_malformed(c.error(), "runs past the end (7 bytes left) at offset 25");
  // wTotalLength cuts a descriptor in half although the buffer has the bytes.
  b = kMassStorage;
  b[2] = 30;
  expect_malformed(ConfigurationDescriptor::parse(b).error(), "runs past the end");
}

TEST(ConfigurationDescriptorRejects, TrailingByte) {
  Bytes b = kMassStorage;
  b.push_back(0x01);
  b[2] = 33;
  expect_malformed(ConfigurationDescriptor::parse(b).error(), "1 trailing byte");
}

TEST(ConfigurationDescriptorRejects, TruncatedInterface) {
  const Bytes b = {0x09, 0x02, 0x11, 0x00, 0x01, 0x01, 0x00, 0x80, 0x32,
                   0x08, 0x04, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00};
  expect_malformed(ConfigurationDescriptor::parse(b).error(),
                   "interface descriptor has bLength 8 (expected 9) at offset 9");
}

TEST(ConfigurationDescriptorRejects, TruncatedEndpoint) {
  Bytes b = kMassStorage;
  b[25] = 6;
  b.erase(b.begin() + 31);
  b[2] = 31;
  expect_malformed(ConfigurationDescriptor::parse(b).error(),
                   "endpoint descriptor has bLength 6 (expected 7 or 9) at offset 25");
  // An 8-byte endpoint is neither the standard nor the audio layout.
  b = kMassStorage;
  b.push_back(0);
  b[25] = 8;
  b[2] = 33;
  expect_malformed(ConfigurationDescriptor::parse(b).error(), "bLength 8 (expected 7 or 9)");
}

TEST(ConfigurationDescriptorRejects, EndpointBeforeInterface) {
  const Bytes b = {0x09, 0x02, 0x10, 0x00, 0x01, 0x01, 0x00, 0x80,
                   0x32, 0x07, 0x05, 0x81, 0x02, 0x00, 0x02, 0x00};
  expect_malformed(ConfigurationDescriptor::parse(b).error(),
                   "endpoint descriptor before any interface descriptor at offset 9");
}

TEST(ConfigurationDescriptorRejects, BadIadLength) {
  Bytes b = kCdcAcm;
  b[9] = 7;
  b.erase(b.begin() + 16);
  b[2] = static_cast<uint8_t>(b.size());
  expect_malformed(ConfigurationDescriptor::parse(b).error(),
                   "interface association descriptor has bLength 7");
}

TEST(ConfigurationDescriptorRejects, BadCompanionLength) {
  Bytes b = kSsMassStorage;
  b[25] = 5;
  b.erase(b.begin() + 30);
  b[2] = static_cast<uint8_t>(b.size());
  expect_malformed(ConfigurationDescriptor::parse(b).error(),
                   "SuperSpeed endpoint companion has bLength 5");
}

TEST(ConfigurationDescriptorRejects, EveryTruncationOfRealDescriptors) {
  // Cutting wTotalLength and the buffer anywhere inside a real descriptor set never reads out
  // of bounds and either fails or parses a prefix that ends on a descriptor boundary.
  for (const Bytes* full : {&kGadgetZeroSourceSink, &kSsMassStorage, &kCdcAcm, &kAudioStreaming}) {
    for (size_t n = 9; n < full->size(); ++n) {
      Bytes b(full->begin(), full->begin() + n);
      b[2] = static_cast<uint8_t>(n);
      auto c = ConfigurationDescriptor::parse(b);
      if (!c) continue;
      // Only bNumEndpoints may differ (rebuilt from the endpoints actually present).
      const auto rebuilt = c->build();
      EXPECT_EQ(rebuilt.size(), n);
      auto again = ConfigurationDescriptor::parse(rebuilt);
      ASSERT_TRUE(again.has_value()) << n;
      EXPECT_EQ(*again, *c) << n;
    }
  }
}

// --- BOS ---

// A USB 3.x device's BOS: USB 2.0 extension (LPM) and SuperSpeed USB capability.
const Bytes kBos = {0x05, 0x0f, 0x16, 0x00, 0x02,                                 //
                    0x07, 0x10, 0x02, 0x06, 0x00, 0x00, 0x00,                     // USB 2.0 ext
                    0x0a, 0x10, 0x03, 0x00, 0x0e, 0x00, 0x01, 0x0a, 0xff, 0x07};  // SS USB

TEST(BosDescriptor, ParsesRealBos) {
  auto bos = BosDescriptor::parse(kBos);
  ASSERT_TRUE(bos.has_value()) << bos.error().message;
  ASSERT_EQ(bos->capabilities.size(), 2u);
  EXPECT_EQ(bos->capabilities[0].type, 0x02);
  EXPECT_EQ(bos->capabilities[0].data, (Bytes{0x06, 0x00, 0x00, 0x00}));
  EXPECT_EQ(bos->capabilities[1].type, 0x03);
  EXPECT_EQ(bos->capabilities[1].data.size(), 7u);
  EXPECT_EQ(bos->build(), kBos);
}

TEST(BosDescriptor, EmptyAndRoundTrip) {
  BosDescriptor bos;
  EXPECT_EQ(bos.build(), (Bytes{0x05, 0x0f, 0x05, 0x00, 0x00}));
  bos.capabilities.push_back({0x0a, {1, 2, 3}});
  bos.capabilities.push_back({0x05, {}});
  auto back = BosDescriptor::parse(bos.build());
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(*back, bos);
}

TEST(BosDescriptor, Rejections) {
  expect_malformed(BosDescriptor::parse(Bytes{0x05, 0x0f, 0x05, 0x00}).error(), "need at least 5");
  Bytes b = kBos;
  b[0] = 4;
  expect_malformed(BosDescriptor::parse(b).error(), "bLength 4");
  b = kBos;
  b[1] = 0x02;
  expect_malformed(BosDescriptor::parse(b).error(), "bDescriptorType 2");
  b = kBos;
  b[2] = 4;
  expect_malformed(BosDescriptor::parse(b).error(), "wTotalLength 4 is smaller");
  b[2] = 0x17;
  expect_malformed(BosDescriptor::parse(b).error(), "wTotalLength 23 exceeds");
  b = kBos;
  b[5] = 0;
  expect_malformed(BosDescriptor::parse(b).error(), "bLength 0");
  b = kBos;
  b[5] = 2;
  expect_malformed(BosDescriptor::parse(b).error(), "(< 3)");
  b = kBos;
  b[6] = 0x04;
  expect_malformed(BosDescriptor::parse(b).error(), "not a device capability");
  b = kBos;
  b[12] = 0x0b;
  expect_malformed(BosDescriptor::parse(b).error(), "runs past the end");
}

// --- Strings ---

TEST(StringDescriptor, AsciiAsDevicesSendIt) {
  // "Gadget Zero" as the gadget framework encodes it.
  const Bytes b = {0x18, 0x03, 'G', 0, 'a', 0, 'd', 0, 'g', 0, 'e', 0,
                   't',  0,    ' ', 0, 'Z', 0, 'e', 0, 'r', 0, 'o', 0};
  EXPECT_EQ(build_string_descriptor("Gadget Zero"), b);
  auto s = parse_string_descriptor(b);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(*s, "Gadget Zero");
}

TEST(StringDescriptor, Empty) {
  EXPECT_EQ(build_string_descriptor(""), (Bytes{0x02, 0x03}));
  auto s = parse_string_descriptor(Bytes{0x02, 0x03});
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(*s, "");
}

TEST(StringDescriptor, BmpAndSurrogatePairs) {
  // "é€😀": U+00E9, U+20AC, U+1F600 (D83D DE00).
  const std::string utf8 = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
  const Bytes b = {0x0a, 0x03, 0xe9, 0x00, 0xac, 0x20, 0x3d, 0xd8, 0x00, 0xde};
  EXPECT_EQ(build_string_descriptor(utf8), b);
  auto s = parse_string_descriptor(b);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(*s, utf8);
  // The highest code point, U+10FFFF = DBFF DFFF.
  const std::string max = "\xf4\x8f\xbf\xbf";
  EXPECT_EQ(build_string_descriptor(max), (Bytes{0x06, 0x03, 0xff, 0xdb, 0xff, 0xdf}));
  EXPECT_EQ(*parse_string_descriptor(build_string_descriptor(max)), max);
}

TEST(StringDescriptor, UnpairedSurrogatesBecomeReplacement) {
  const std::string fffd = "\xef\xbf\xbd";
  auto s = parse_string_descriptor(Bytes{0x06, 0x03, 0x3d, 0xd8, 'A', 0x00});  // lone high
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(*s, fffd + "A");
  s = parse_string_descriptor(Bytes{0x04, 0x03, 0x00, 0xde});  // lone low
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(*s, fffd);
  s = parse_string_descriptor(Bytes{0x04, 0x03, 0x3d, 0xd8});  // high at the end
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(*s, fffd);
}

TEST(StringDescriptor, InvalidUtf8BecomesReplacement) {
  const Bytes fffd = {0xfd, 0xff};
  auto one = [&](std::string s) { return build_string_descriptor(s); };
  EXPECT_EQ(one("\xff"), cat({{0x04, 0x03}, fffd}));
  EXPECT_EQ(one("\xc0\xaf"), cat({{0x06, 0x03}, fffd, fffd}));            // overlong '/'
  EXPECT_EQ(one("\xed\xa0\x80"), cat({{0x08, 0x03}, fffd, fffd, fffd}));  // UTF-8 surrogate
  EXPECT_EQ(one("\xe2\x82"), cat({{0x06, 0x03}, fffd, fffd}));            // truncated
  EXPECT_EQ(one("\xf4\x90\x80\x80"), cat({{0x0a, 0x03}, fffd, fffd, fffd, fffd}));  // > 10FFFF
}

TEST(StringDescriptor, TruncatesTo126Units) {
  auto b = build_string_descriptor(std::string(300, 'x'));
  EXPECT_EQ(b.size(), 254u);
  EXPECT_EQ(b[0], 254);
  // 125 units then an astral character: the pair does not fit and is dropped whole.
  b = build_string_descriptor(std::string(125, 'x') + "\xf0\x9f\x98\x80");
  EXPECT_EQ(b[0], 2 + 2 * 125);
  b = build_string_descriptor(std::string(124, 'x') + "\xf0\x9f\x98\x80");
  EXPECT_EQ(b[0], 254);
  EXPECT_EQ(*parse_string_descriptor(b), std::string(124, 'x') + "\xf0\x9f\x98\x80");
}

TEST(StringDescriptor, Rejections) {
  expect_malformed(parse_string_descriptor({}).error(), "fewer than 2");
  expect_malformed(parse_string_descriptor(Bytes{0x00, 0x03}).error(), "bLength 0");
  expect_malformed(parse_string_descriptor(Bytes{0x01, 0x03}).error(), "bLength 1");
  expect_malformed(parse_string_descriptor(Bytes{0x05, 0x03, 'a', 0, 'b'}).error(),
                   "odd bLength 5");
  expect_malformed(parse_string_descriptor(Bytes{0x06, 0x03, 'a', 0}).error(), "runs past the end");
  expect_malformed(parse_string_descriptor(Bytes{0x04, 0x02, 'a', 0}).error(), "bDescriptorType 2");
  // Trailing bytes past bLength are not part of the string.
  EXPECT_EQ(*parse_string_descriptor(Bytes{0x04, 0x03, 'a', 0, 'b', 0}), "a");
}

TEST(LanguageDescriptor, EnglishUs) {
  const uint16_t ids[] = {0x0409};
  EXPECT_EQ(build_language_descriptor(ids), (Bytes{0x04, 0x03, 0x09, 0x04}));
  auto back = parse_language_descriptor(Bytes{0x04, 0x03, 0x09, 0x04});
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, (std::vector<uint16_t>{0x0409}));
}

TEST(LanguageDescriptor, SeveralAndLimits) {
  const std::vector<uint16_t> ids = {0x0409, 0x0407, 0x040c};
  auto back = parse_language_descriptor(build_language_descriptor(ids));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, ids);
  const std::vector<uint16_t> many(200, 0x0409);
  EXPECT_EQ(build_language_descriptor(many).size(), 254u);
  EXPECT_EQ(build_language_descriptor({}), (Bytes{0x02, 0x03}));
  expect_malformed(parse_language_descriptor(Bytes{0x03, 0x03, 0x09}).error(), "odd bLength");
}

TEST(DescriptorSet, FindConfiguration) {
  DescriptorSet set;
  set.configurations.resize(2);
  set.configurations[0].value = 3;
  set.configurations[1].value = 2;
  EXPECT_EQ(set.find_configuration(3), &set.configurations[0]);
  EXPECT_EQ(set.find_configuration(2), &set.configurations[1]);
  EXPECT_EQ(set.find_configuration(1), nullptr);
  EXPECT_EQ(set.find_configuration(0), nullptr);
}

}  // namespace
}  // namespace usb
