// Helpers for driving an emulated usb::Device the way a host (usbtest through USB/IP) does:
// one call per URB, completion captured synchronously (emulated devices complete inline).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "usb/core/device.h"
#include "usb/core/setup.h"
#include "usb/core/transfer.h"

namespace emutest {

using usb::Direction;
using usb::Recipient;
using usb::RequestType;
using usb::SetupPacket;
using usb::Status;

struct Outcome {
  bool completed = false;
  Status status = Status::kIoError;
  std::vector<uint8_t> data;  // IN: bytes returned
  size_t actual = 0;
  int completions = 0;
};

// Owns a transfer and records its completion.
struct Urb {
  std::unique_ptr<usb::Transfer> transfer;
  Outcome outcome;

  void arm() {
    transfer->set_completion([this](usb::Transfer& t) {
      outcome.completed = true;
      ++outcome.completions;
      outcome.status = t.status();
      outcome.actual = t.actual_length();
      outcome.data.assign(t.data().begin(), t.data().end());
    });
  }
};

inline Outcome control(usb::Device& dev, const SetupPacket& setup,
                       const std::vector<uint8_t>& out = {}, bool short_not_ok = false) {
  Urb urb;
  urb.transfer = usb::Transfer::control(setup.direction() == Direction::kIn ? 0x80 : 0x00, setup);
  auto buf = urb.transfer->buffer();
  for (size_t i = 0; i < out.size() && i < buf.size(); ++i) buf[i] = out[i];
  urb.transfer->flags.short_not_ok = short_not_ok;
  urb.arm();
  dev.submit(*urb.transfer);
  EXPECT_TRUE(urb.outcome.completed) << "control request did not complete inline";
  return urb.outcome;
}

inline SetupPacket setup(Direction d, RequestType t, Recipient r, uint8_t request, uint16_t value,
                         uint16_t index, uint16_t length) {
  return SetupPacket{SetupPacket::make_type(d, t, r), request, value, index, length};
}

inline Outcome get_descriptor(usb::Device& dev, uint8_t type, uint8_t index, uint16_t length,
                              bool short_not_ok = false, uint16_t lang = 0) {
  return control(
      dev,
      setup(Direction::kIn, RequestType::kStandard, Recipient::kDevice,
            usb::request::kGetDescriptor, static_cast<uint16_t>(type << 8 | index), lang, length),
      {}, short_not_ok);
}

inline Outcome get_status(usb::Device& dev, Recipient r, uint16_t index) {
  return control(
      dev, setup(Direction::kIn, RequestType::kStandard, r, usb::request::kGetStatus, 0, index, 2));
}

inline uint16_t status_word(const Outcome& o) {
  return o.data.size() >= 2 ? static_cast<uint16_t>(o.data[0] | o.data[1] << 8) : 0xffff;
}

inline Outcome feature(usb::Device& dev, bool set, Recipient r, uint16_t selector, uint16_t index) {
  return control(dev, setup(Direction::kOut, RequestType::kStandard, r,
                            set ? usb::request::kSetFeature : usb::request::kClearFeature, selector,
                            index, 0));
}

inline Outcome set_configuration(usb::Device& dev, uint16_t value) {
  return control(dev, setup(Direction::kOut, RequestType::kStandard, Recipient::kDevice,
                            usb::request::kSetConfiguration, value, 0, 0));
}

inline Outcome get_configuration(usb::Device& dev) {
  return control(dev, setup(Direction::kIn, RequestType::kStandard, Recipient::kDevice,
                            usb::request::kGetConfiguration, 0, 0, 1));
}

inline Outcome set_interface(usb::Device& dev, uint16_t interface, uint16_t alternate) {
  return control(dev, setup(Direction::kOut, RequestType::kStandard, Recipient::kInterface,
                            usb::request::kSetInterface, alternate, interface, 0));
}

inline Outcome get_interface(usb::Device& dev, uint16_t interface) {
  return control(dev, setup(Direction::kIn, RequestType::kStandard, Recipient::kInterface,
                            usb::request::kGetInterface, 0, interface, 1));
}

// A bulk/interrupt transfer submitted and expected to complete inline.
inline Outcome transfer(usb::Device& dev, uint8_t endpoint, usb::TransferType type,
                        const std::vector<uint8_t>& out, size_t in_length = 0,
                        bool short_not_ok = false, bool zero_packet = false) {
  const bool in = endpoint & usb::kEndpointDirIn;
  Urb urb;
  urb.transfer = std::make_unique<usb::Transfer>(endpoint, type, in ? in_length : out.size());
  if (!in) std::copy(out.begin(), out.end(), urb.transfer->buffer().begin());
  if (in) std::fill(urb.transfer->buffer().begin(), urb.transfer->buffer().end(), 0xa5);
  urb.transfer->flags.short_not_ok = short_not_ok;
  urb.transfer->flags.zero_packet = zero_packet;
  urb.arm();
  dev.submit(*urb.transfer);
  EXPECT_TRUE(urb.outcome.completed) << "transfer did not complete inline";
  return urb.outcome;
}

inline Outcome bulk_out(usb::Device& dev, uint8_t ep, const std::vector<uint8_t>& data,
                        bool zero_packet = false) {
  return transfer(dev, ep, usb::TransferType::kBulk, data, 0, false, zero_packet);
}

inline Outcome bulk_in(usb::Device& dev, uint8_t ep, size_t length, bool short_not_ok = false) {
  return transfer(dev, ep, usb::TransferType::kBulk, {}, length, short_not_ok);
}

// usbtest's data pattern: 0 = zeros, 1 = (i % maxpacket) % 63.
inline std::vector<uint8_t> pattern(size_t length, unsigned kind, unsigned maxpacket) {
  std::vector<uint8_t> v(length, 0);
  if (kind == 1) {
    for (size_t i = 0; i < length; ++i) v[i] = static_cast<uint8_t>((i % maxpacket) % 63);
  }
  return v;
}

}  // namespace emutest
