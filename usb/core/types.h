// Basic USB vocabulary shared by every module: speeds, transfer types, directions, endpoints.
#pragma once

#include <cstdint>
#include <string_view>

namespace usb {

// Device speed. Values equal Linux's `enum usb_device_speed` (USB/IP sends them on the wire).
enum class Speed : uint8_t {
  kUnknown = 0,
  kLow = 1,
  kFull = 2,
  kHigh = 3,
  kWireless = 4,
  kSuper = 5,
  kSuperPlus = 6,
};

// Endpoint transfer type; values equal bmAttributes bits 1:0 of an endpoint descriptor.
enum class TransferType : uint8_t { kControl = 0, kIsochronous = 1, kBulk = 2, kInterrupt = 3 };

// Direction of the data stage, relative to the host.
enum class Direction : uint8_t { kOut = 0, kIn = 1 };

constexpr uint8_t kEndpointDirIn = 0x80;
constexpr uint8_t kEndpointNumberMask = 0x0f;

constexpr uint8_t endpoint_address(uint8_t number, Direction dir) {
  return static_cast<uint8_t>((number & kEndpointNumberMask) |
                              (dir == Direction::kIn ? kEndpointDirIn : 0));
}
constexpr uint8_t endpoint_number(uint8_t address) {
  return address & kEndpointNumberMask;
}
constexpr Direction endpoint_direction(uint8_t address) {
  return (address & kEndpointDirIn) ? Direction::kIn : Direction::kOut;
}

std::string_view to_string(Speed speed);
std::string_view to_string(TransferType type);

}  // namespace usb
