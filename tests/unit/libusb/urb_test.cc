#include "devices/libusb/urb.h"

#include <gtest/gtest.h>

#include <cstring>

#include "usb/core/setup.h"

namespace devices {
namespace {

using usb::Status;
using usb::Transfer;
using usb::TransferType;

void LIBUSB_CALL ignore(libusb_transfer*) {}

usb::SetupPacket get_descriptor(uint16_t length) {
  return {usb::SetupPacket::make_type(usb::Direction::kIn, usb::RequestType::kStandard,
                                      usb::Recipient::kDevice),
          usb::request::kGetDescriptor, 0x0100, 0, length};
}

TEST(Urb, ControlInPutsTheSetupFirstAndCopiesDataBack) {
  auto t = Transfer::control(0x80, get_descriptor(18));
  auto urb = Urb::prepare(*t, nullptr, &ignore);
  ASSERT_TRUE(urb.has_value());
  libusb_transfer* x = (*urb)->libusb();
  EXPECT_EQ(x->type, LIBUSB_TRANSFER_TYPE_CONTROL);
  EXPECT_EQ(x->endpoint, 0);
  EXPECT_EQ(x->length, 8 + 18);
  EXPECT_EQ(x->user_data, urb->get());
  EXPECT_TRUE((*urb)->bounced());
  const uint8_t setup[8] = {0x80, 6, 0x00, 0x01, 0, 0, 18, 0};
  EXPECT_EQ(std::memcmp(x->buffer, setup, 8), 0);

  // libusb writes the data stage after the setup and reports its length without the setup.
  for (int i = 0; i < 18; ++i) x->buffer[8 + i] = static_cast<uint8_t>(i + 1);
  x->status = LIBUSB_TRANSFER_COMPLETED;
  x->actual_length = 12;
  Urb::Outcome o = (*urb)->finish();
  EXPECT_EQ(o.status, Status::kOk);
  EXPECT_EQ(o.actual_length, 12u);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(t->buffer()[i], i + 1);
}

TEST(Urb, ControlOutCopiesTheDataStageIn) {
  usb::SetupPacket s{0x21, 0x09, 0x0200, 0, 3};  // HID SET_REPORT
  auto t = Transfer::control(0x00, s);
  t->buffer()[0] = 0xaa;
  t->buffer()[1] = 0xbb;
  t->buffer()[2] = 0xcc;
  auto urb = Urb::prepare(*t, nullptr, &ignore);
  ASSERT_TRUE(urb.has_value());
  libusb_transfer* x = (*urb)->libusb();
  EXPECT_EQ(x->length, 11);
  EXPECT_EQ(x->buffer[0], 0x21);
  EXPECT_EQ(x->buffer[8], 0xaa);
  EXPECT_EQ(x->buffer[10], 0xcc);
  x->status = LIBUSB_TRANSFER_STALL;
  x->actual_length = 0;
  EXPECT_EQ((*urb)->finish().status, Status::kStall);
}

TEST(Urb, ControlToAnotherEndpointIsNotSupported) {
  auto t = Transfer::control(0x81, get_descriptor(8));
  auto urb = Urb::prepare(*t, nullptr, &ignore);
  ASSERT_FALSE(urb.has_value());
  EXPECT_EQ(urb.error(), Status::kNotSupported);
}

TEST(Urb, BulkIsZeroCopyWithFlags) {
  Transfer in(0x81, TransferType::kBulk, 512);
  in.flags.short_not_ok = true;
  auto urb = Urb::prepare(in, nullptr, &ignore);
  ASSERT_TRUE(urb.has_value());
  libusb_transfer* x = (*urb)->libusb();
  EXPECT_EQ(x->type, LIBUSB_TRANSFER_TYPE_BULK);
  EXPECT_EQ(x->endpoint, 0x81);
  EXPECT_EQ(x->buffer, in.buffer().data());
  EXPECT_EQ(x->length, 512);
  EXPECT_FALSE((*urb)->bounced());
  EXPECT_TRUE(x->flags & LIBUSB_TRANSFER_SHORT_NOT_OK);
  EXPECT_FALSE(x->flags & LIBUSB_TRANSFER_ADD_ZERO_PACKET);

  Transfer out(0x02, TransferType::kBulk, 1024);
  out.flags.zero_packet = true;
  out.flags.short_not_ok = true;  // meaningless for OUT: not passed on
  auto urb2 = Urb::prepare(out, nullptr, &ignore);
  ASSERT_TRUE(urb2.has_value());
  EXPECT_TRUE((*urb2)->libusb()->flags & LIBUSB_TRANSFER_ADD_ZERO_PACKET);
  EXPECT_FALSE((*urb2)->libusb()->flags & LIBUSB_TRANSFER_SHORT_NOT_OK);
}

TEST(Urb, ShortInWithShortNotOkBecomesShortPacket) {
  Transfer in(0x81, TransferType::kBulk, 512);
  in.flags.short_not_ok = true;
  auto urb = Urb::prepare(in, nullptr, &ignore);
  ASSERT_TRUE(urb.has_value());
  libusb_transfer* x = (*urb)->libusb();
  x->status = LIBUSB_TRANSFER_ERROR;  // what libusb reports for a short transfer with the flag
  x->actual_length = 100;
  Urb::Outcome o = (*urb)->finish();
  EXPECT_EQ(o.status, Status::kShortPacket);
  EXPECT_EQ(o.actual_length, 100u);
}

TEST(Urb, InterruptAndBabble) {
  Transfer in(0x83, TransferType::kInterrupt, 8);
  auto urb = Urb::prepare(in, nullptr, &ignore);
  ASSERT_TRUE(urb.has_value());
  libusb_transfer* x = (*urb)->libusb();
  EXPECT_EQ(x->type, LIBUSB_TRANSFER_TYPE_INTERRUPT);
  x->status = LIBUSB_TRANSFER_OVERFLOW;
  x->actual_length = 64;  // never trusted beyond the buffer
  Urb::Outcome o = (*urb)->finish();
  EXPECT_EQ(o.status, Status::kBabble);
  EXPECT_EQ(o.actual_length, 8u);
}

TEST(Urb, IsoBackToBackIsZeroCopyWithPerPacketResults) {
  Transfer t(0x81, TransferType::kIsochronous, 3 * 192);
  for (uint32_t i = 0; i < 3; ++i) t.iso_packets.push_back({i * 192, 192, 0, Status::kOk});
  auto urb = Urb::prepare(t, nullptr, &ignore);
  ASSERT_TRUE(urb.has_value());
  libusb_transfer* x = (*urb)->libusb();
  EXPECT_EQ(x->type, LIBUSB_TRANSFER_TYPE_ISOCHRONOUS);
  EXPECT_EQ(x->num_iso_packets, 3);
  EXPECT_EQ(x->buffer, t.buffer().data());
  EXPECT_FALSE((*urb)->bounced());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(x->iso_packet_desc[i].length, 192u);

  x->status = LIBUSB_TRANSFER_COMPLETED;
  x->iso_packet_desc[0] = {192, 192, LIBUSB_TRANSFER_COMPLETED};
  x->iso_packet_desc[1] = {192, 10, LIBUSB_TRANSFER_COMPLETED};
  x->iso_packet_desc[2] = {192, 0, LIBUSB_TRANSFER_ERROR};
  Urb::Outcome o = (*urb)->finish();
  EXPECT_EQ(o.status, Status::kOk);
  EXPECT_EQ(o.actual_length, 202u);
  EXPECT_EQ(t.iso_packets[1].actual_length, 10u);
  EXPECT_EQ(t.iso_packets[2].status, Status::kProtocol);
}

TEST(Urb, IsoWithGapsGoesThroughABounceBuffer) {
  // Packets at 0 and 100, 50 bytes each: libusb wants them at 0 and 50.
  Transfer in(0x81, TransferType::kIsochronous, 200);
  in.iso_packets = {{0, 50, 0, Status::kOk}, {100, 50, 0, Status::kOk}};
  auto urb = Urb::prepare(in, nullptr, &ignore);
  ASSERT_TRUE(urb.has_value());
  libusb_transfer* x = (*urb)->libusb();
  EXPECT_TRUE((*urb)->bounced());
  EXPECT_EQ(x->length, 100);
  std::memset(x->buffer, 0x11, 50);
  std::memset(x->buffer + 50, 0x22, 50);
  x->status = LIBUSB_TRANSFER_COMPLETED;
  x->iso_packet_desc[0] = {50, 50, LIBUSB_TRANSFER_COMPLETED};
  x->iso_packet_desc[1] = {50, 20, LIBUSB_TRANSFER_COMPLETED};
  Urb::Outcome o = (*urb)->finish();
  EXPECT_EQ(o.actual_length, 70u);
  EXPECT_EQ(in.buffer()[0], 0x11);
  EXPECT_EQ(in.buffer()[49], 0x11);
  EXPECT_EQ(in.buffer()[100], 0x22);
  EXPECT_EQ(in.buffer()[119], 0x22);

  Transfer out(0x02, TransferType::kIsochronous, 200);
  out.iso_packets = {{10, 4, 0, Status::kOk}, {150, 4, 0, Status::kOk}};
  std::memset(out.buffer().data(), 0, 200);
  std::memset(out.buffer().data() + 10, 0xaa, 4);
  std::memset(out.buffer().data() + 150, 0xbb, 4);
  auto urb2 = Urb::prepare(out, nullptr, &ignore);
  ASSERT_TRUE(urb2.has_value());
  const uint8_t gathered[8] = {0xaa, 0xaa, 0xaa, 0xaa, 0xbb, 0xbb, 0xbb, 0xbb};
  EXPECT_EQ(std::memcmp((*urb2)->libusb()->buffer, gathered, 8), 0);
}

TEST(Urb, IsoPacketsOutsideTheBufferAreInvalid) {
  Transfer a(0x81, TransferType::kIsochronous, 100);
  a.iso_packets = {{90, 20, 0, Status::kOk}};
  EXPECT_EQ(Urb::prepare(a, nullptr, &ignore).error(), Status::kInvalid);
  Transfer b(0x81, TransferType::kIsochronous, 100);
  b.iso_packets = {{0xffffffffu, 2, 0, Status::kOk}};
  EXPECT_EQ(Urb::prepare(b, nullptr, &ignore).error(), Status::kInvalid);
  Transfer c(0x81, TransferType::kIsochronous, 100);  // overlapping: sum exceeds the buffer
  c.iso_packets = {{0, 80, 0, Status::kOk}, {10, 80, 0, Status::kOk}};
  EXPECT_EQ(Urb::prepare(c, nullptr, &ignore).error(), Status::kInvalid);
  Transfer d(0x81, TransferType::kIsochronous, 100);  // no packets
  EXPECT_EQ(Urb::prepare(d, nullptr, &ignore).error(), Status::kInvalid);
}

}  // namespace
}  // namespace devices
