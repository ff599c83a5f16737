// SETUP packet layout (USB 2.0 9.3, table 9-2) and the bmRequestType helpers.
#include "usb/core/setup.h"

#include <gtest/gtest.h>

#include <array>

namespace usb {
namespace {

TEST(SetupPacket, GetDeviceDescriptorFromWire) {
  // GET_DESCRIPTOR(DEVICE, index 0), wLength 18, as every host sends it first.
  const std::array<uint8_t, 8> b = {0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00};
  const auto s = SetupPacket::from_bytes(b);
  EXPECT_EQ(s.request_type, 0x80);
  EXPECT_EQ(s.request, request::kGetDescriptor);
  EXPECT_EQ(s.value, 0x0100);  // type in the high byte, index in the low byte
  EXPECT_EQ(s.index, 0);
  EXPECT_EQ(s.length, 18);
  EXPECT_EQ(s.direction(), Direction::kIn);
  EXPECT_EQ(s.type(), RequestType::kStandard);
  EXPECT_EQ(s.recipient(), Recipient::kDevice);
  EXPECT_TRUE(s.is_standard(Recipient::kDevice, request::kGetDescriptor));
  EXPECT_FALSE(s.is_standard(Recipient::kInterface, request::kGetDescriptor));
  EXPECT_FALSE(s.is_standard(Recipient::kDevice, request::kSetDescriptor));
  EXPECT_EQ(s.to_bytes(), b);
}

TEST(SetupPacket, FieldsAreLittleEndian) {
  const SetupPacket s{0x21, 0x09, 0x0201, 0x0403, 0x0605};
  EXPECT_EQ(s.to_bytes(), (std::array<uint8_t, 8>{0x21, 0x09, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}));
  EXPECT_EQ(SetupPacket::from_bytes(s.to_bytes()), s);
}

TEST(SetupPacket, ClearEndpointHalt) {
  // CLEAR_FEATURE(ENDPOINT_HALT) on endpoint 0x81 (USB 2.0 9.4.1).
  const std::array<uint8_t, 8> b = {0x02, 0x01, 0x00, 0x00, 0x81, 0x00, 0x00, 0x00};
  const auto s = SetupPacket::from_bytes(b);
  EXPECT_EQ(s.direction(), Direction::kOut);
  EXPECT_EQ(s.recipient(), Recipient::kEndpoint);
  EXPECT_TRUE(s.is_standard(Recipient::kEndpoint, request::kClearFeature));
  EXPECT_EQ(s.value, feature::kEndpointHalt);
  EXPECT_EQ(s.index, 0x81);
}

TEST(SetupPacket, VendorAndClassRequests) {
  // Gadget Zero's vendor control read (usbtest case 14: bRequest 0x5c).
  const auto vendor = SetupPacket::from_bytes(
      std::array<uint8_t, 8>{0xc0, 0x5c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04});
  EXPECT_EQ(vendor.type(), RequestType::kVendor);
  EXPECT_EQ(vendor.direction(), Direction::kIn);
  EXPECT_EQ(vendor.length, 0x0400);
  EXPECT_FALSE(vendor.is_standard(Recipient::kDevice, 0x5c));
  // Hub class SET_FEATURE(PORT_RESET) to a port (USB 2.0 11.24.2.13): recipient "other".
  const SetupPacket reset{0x23, request::kSetFeature, kHubPortResetFeature, 1, 0};
  EXPECT_EQ(reset.type(), RequestType::kClass);
  EXPECT_EQ(reset.recipient(), Recipient::kOther);
}

TEST(SetupPacket, MakeType) {
  static_assert(
      SetupPacket::make_type(Direction::kIn, RequestType::kStandard, Recipient::kDevice) == 0x80);
  static_assert(
      SetupPacket::make_type(Direction::kOut, RequestType::kClass, Recipient::kInterface) == 0x21);
  static_assert(
      SetupPacket::make_type(Direction::kIn, RequestType::kVendor, Recipient::kEndpoint) == 0xc2);
  static_assert(
      SetupPacket::make_type(Direction::kOut, RequestType::kReserved, Recipient::kOther) == 0x63);
  for (int t = 0; t < 256; ++t) {
    const SetupPacket s{static_cast<uint8_t>(t)};
    if ((t & 0x1f) > 3) continue;  // reserved recipients have no enum value
    EXPECT_EQ(SetupPacket::make_type(s.direction(), s.type(), s.recipient()), t);
  }
}

TEST(SetupPacket, ReservedRecipientBitsFailIsStandard) {
  // Recipient values 4..31 are reserved: never mistaken for a standard device request.
  const SetupPacket s{0x84, request::kGetDescriptor};
  EXPECT_FALSE(s.is_standard(Recipient::kDevice, request::kGetDescriptor));
}

TEST(Endpoints, AddressHelpers) {
  EXPECT_EQ(endpoint_address(1, Direction::kIn), 0x81);
  EXPECT_EQ(endpoint_address(2, Direction::kOut), 0x02);
  EXPECT_EQ(endpoint_address(0x1f, Direction::kOut), 0x0f);
  EXPECT_EQ(endpoint_number(0x8f), 0x0f);
  EXPECT_EQ(endpoint_direction(0x81), Direction::kIn);
  EXPECT_EQ(endpoint_direction(0x01), Direction::kOut);
}

}  // namespace
}  // namespace usb
