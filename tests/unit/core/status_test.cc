#include "usb/core/status.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace usb {
namespace {

TEST(StatusTest, LinuxErrnoValuesMatchUsbipWire) {
  EXPECT_EQ(to_linux_errno(Status::kOk), 0);
  EXPECT_EQ(to_linux_errno(Status::kStall), -32);
  EXPECT_EQ(to_linux_errno(Status::kShortPacket), -121);
  EXPECT_EQ(to_linux_errno(Status::kCancelled), -104);
  EXPECT_EQ(to_linux_errno(Status::kUnlinked), -2);
  EXPECT_EQ(to_linux_errno(Status::kNoDevice), -108);
  EXPECT_EQ(to_linux_errno(Status::kProtocol), -71);
  EXPECT_EQ(to_linux_errno(Status::kBabble), -75);
  EXPECT_EQ(to_linux_errno(Status::kLate), -62);
  EXPECT_EQ(to_linux_errno(Status::kPartialIso), -18);
}

TEST(StatusTest, ErrnoRoundTripsForEveryStatus) {
  for (int i = 0; i <= static_cast<int>(Status::kIoError); ++i) {
    auto s = static_cast<Status>(i);
    EXPECT_EQ(from_linux_errno(to_linux_errno(s)), s) << to_string(s);
    EXPECT_EQ(from_linux_errno(-to_linux_errno(s)), s) << "positive errno accepted";
  }
}

TEST(StatusTest, UnknownErrnoIsIoError) {
  EXPECT_EQ(from_linux_errno(-9999), Status::kIoError);
  EXPECT_EQ(from_linux_errno(EAGAIN), Status::kIoError);
}

TEST(StatusTest, LibusbCodes) {
  EXPECT_EQ(to_libusb_error(Status::kStall), -9);
  EXPECT_EQ(from_libusb_error(-9), Status::kStall);
  EXPECT_EQ(from_libusb_error(-4), Status::kNoDevice);
  EXPECT_EQ(from_libusb_error(-1), Status::kIoError);
  EXPECT_EQ(from_libusb_error(12345), Status::kIoError);
  EXPECT_EQ(from_libusb_transfer_status(0), Status::kOk);
  EXPECT_EQ(from_libusb_transfer_status(3), Status::kCancelled);
  EXPECT_EQ(from_libusb_transfer_status(4), Status::kStall);
  EXPECT_EQ(from_libusb_transfer_status(5), Status::kNoDevice);
  EXPECT_EQ(from_libusb_transfer_status(6), Status::kBabble);
  EXPECT_EQ(from_libusb_transfer_status(2), Status::kTimeout);
  EXPECT_EQ(from_libusb_transfer_status(1), Status::kProtocol);
  EXPECT_EQ(from_libusb_transfer_status(-1), Status::kIoError);
  EXPECT_EQ(from_libusb_transfer_status(99), Status::kIoError);
}

TEST(StatusTest, EveryStatusHasAName) {
  for (int i = 0; i <= static_cast<int>(Status::kIoError); ++i)
    EXPECT_FALSE(to_string(static_cast<Status>(i)).empty());
}

}  // namespace
}  // namespace usb
