// Control setup packets and the standard request vocabulary (USB 2.0 chapter 9.3, 9.4).
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "usb/core/types.h"

namespace usb {

// bmRequestType fields (USB 2.0 9.3.1).
enum class RequestType : uint8_t { kStandard = 0, kClass = 1, kVendor = 2, kReserved = 3 };
enum class Recipient : uint8_t { kDevice = 0, kInterface = 1, kEndpoint = 2, kOther = 3 };

// Standard request codes (USB 2.0 table 9-4).
namespace request {
constexpr uint8_t kGetStatus = 0x00;
constexpr uint8_t kClearFeature = 0x01;
constexpr uint8_t kSetFeature = 0x03;
constexpr uint8_t kSetAddress = 0x05;
constexpr uint8_t kGetDescriptor = 0x06;
constexpr uint8_t kSetDescriptor = 0x07;
constexpr uint8_t kGetConfiguration = 0x08;
constexpr uint8_t kSetConfiguration = 0x09;
constexpr uint8_t kGetInterface = 0x0a;
constexpr uint8_t kSetInterface = 0x0b;
constexpr uint8_t kSynchFrame = 0x0c;
constexpr uint8_t kSetSel = 0x30;
constexpr uint8_t kSetIsochDelay = 0x31;
}  // namespace request

// Feature selectors (USB 2.0 table 9-6).
namespace feature {
constexpr uint16_t kEndpointHalt = 0;
constexpr uint16_t kDeviceRemoteWakeup = 1;
constexpr uint16_t kTestMode = 2;
}  // namespace feature

// Hub class request used by clients to reset a port (USB 2.0 11.24.2).
constexpr uint16_t kHubPortResetFeature = 4;

// The 8-byte SETUP packet. Fields are host order here; the wire is little-endian.
struct SetupPacket {
  uint8_t request_type = 0;  // bmRequestType
  uint8_t request = 0;       // bRequest
  uint16_t value = 0;        // wValue
  uint16_t index = 0;        // wIndex
  uint16_t length = 0;       // wLength

  static SetupPacket from_bytes(std::span<const uint8_t, 8> bytes);
  std::array<uint8_t, 8> to_bytes() const;

  Direction direction() const { return (request_type & 0x80) ? Direction::kIn : Direction::kOut; }
  RequestType type() const { return static_cast<RequestType>((request_type >> 5) & 3); }
  Recipient recipient() const { return static_cast<Recipient>(request_type & 0x1f); }
  bool is_standard(Recipient r, uint8_t req) const {
    return type() == RequestType::kStandard && (request_type & 0x1f) == static_cast<uint8_t>(r) &&
           request == req;
  }

  static constexpr uint8_t make_type(Direction d, RequestType t, Recipient r) {
    return static_cast<uint8_t>((d == Direction::kIn ? 0x80 : 0) | (static_cast<uint8_t>(t) << 5) |
                                static_cast<uint8_t>(r));
  }
  friend bool operator==(const SetupPacket&, const SetupPacket&) = default;
};

}  // namespace usb
