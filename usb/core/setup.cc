#include "usb/core/setup.h"

#include "usb/core/byte_order.h"

namespace usb {

SetupPacket SetupPacket::from_bytes(std::span<const uint8_t, 8> b) {
  return SetupPacket{b[0], b[1], load_le16(&b[2]), load_le16(&b[4]), load_le16(&b[6])};
}

std::array<uint8_t, 8> SetupPacket::to_bytes() const {
  std::array<uint8_t, 8> b{};
  b[0] = request_type;
  b[1] = request;
  store_le16(&b[2], value);
  store_le16(&b[4], index);
  store_le16(&b[6], length);
  return b;
}

}  // namespace usb
