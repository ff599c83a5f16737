#include "devices/libusb/libusb_convert.h"

#include <gtest/gtest.h>
#include <libusb.h>

#include "usb/core/descriptors.h"
#include "usb/core/status.h"

namespace devices {
namespace {

using usb::Status;

// The project's one status table (usb/core/status.cc) against the real <libusb.h> constants.
TEST(StatusTable, LibusbErrorsMapToStatuses) {
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_SUCCESS), Status::kOk);
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_ERROR_IO), Status::kIoError);
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_ERROR_INVALID_PARAM), Status::kInvalid);
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_ERROR_ACCESS), Status::kAccess);
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_ERROR_NO_DEVICE), Status::kNoDevice);
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_ERROR_NOT_FOUND), Status::kUnlinked);
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_ERROR_BUSY), Status::kBusy);
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_ERROR_TIMEOUT), Status::kTimeout);
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_ERROR_OVERFLOW), Status::kBabble);
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_ERROR_PIPE), Status::kStall);
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_ERROR_INTERRUPTED), Status::kCancelled);
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_ERROR_NO_MEM), Status::kNoMemory);
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_ERROR_NOT_SUPPORTED), Status::kNotSupported);
  EXPECT_EQ(usb::from_libusb_error(LIBUSB_ERROR_OTHER), Status::kIoError);
  EXPECT_EQ(usb::from_libusb_error(-1234), Status::kIoError);
}

TEST(StatusTable, TransferStatusesMapToStatuses) {
  EXPECT_EQ(usb::from_libusb_transfer_status(LIBUSB_TRANSFER_COMPLETED), Status::kOk);
  EXPECT_EQ(usb::from_libusb_transfer_status(LIBUSB_TRANSFER_ERROR), Status::kProtocol);
  EXPECT_EQ(usb::from_libusb_transfer_status(LIBUSB_TRANSFER_TIMED_OUT), Status::kTimeout);
  EXPECT_EQ(usb::from_libusb_transfer_status(LIBUSB_TRANSFER_CANCELLED), Status::kCancelled);
  EXPECT_EQ(usb::from_libusb_transfer_status(LIBUSB_TRANSFER_STALL), Status::kStall);
  EXPECT_EQ(usb::from_libusb_transfer_status(LIBUSB_TRANSFER_NO_DEVICE), Status::kNoDevice);
  EXPECT_EQ(usb::from_libusb_transfer_status(LIBUSB_TRANSFER_OVERFLOW), Status::kBabble);
  EXPECT_EQ(usb::from_libusb_transfer_status(99), Status::kIoError);
}

TEST(StatusTable, StatusesMapToLibusbErrors) {
  EXPECT_EQ(usb::to_libusb_error(Status::kOk), LIBUSB_SUCCESS);
  EXPECT_EQ(usb::to_libusb_error(Status::kStall), LIBUSB_ERROR_PIPE);
  EXPECT_EQ(usb::to_libusb_error(Status::kCancelled), LIBUSB_ERROR_INTERRUPTED);
  EXPECT_EQ(usb::to_libusb_error(Status::kUnlinked), LIBUSB_ERROR_NOT_FOUND);
  EXPECT_EQ(usb::to_libusb_error(Status::kNoDevice), LIBUSB_ERROR_NO_DEVICE);
  EXPECT_EQ(usb::to_libusb_error(Status::kShortPacket), LIBUSB_ERROR_IO);
  EXPECT_EQ(usb::to_libusb_error(Status::kBabble), LIBUSB_ERROR_OVERFLOW);
  EXPECT_EQ(usb::to_libusb_error(Status::kTimeout), LIBUSB_ERROR_TIMEOUT);
  EXPECT_EQ(usb::to_libusb_error(Status::kLate), LIBUSB_ERROR_TIMEOUT);
  EXPECT_EQ(usb::to_libusb_error(Status::kProtocol), LIBUSB_ERROR_IO);
  EXPECT_EQ(usb::to_libusb_error(Status::kPartialIso), LIBUSB_ERROR_IO);
  EXPECT_EQ(usb::to_libusb_error(Status::kInvalid), LIBUSB_ERROR_INVALID_PARAM);
  EXPECT_EQ(usb::to_libusb_error(Status::kNoMemory), LIBUSB_ERROR_NO_MEM);
  EXPECT_EQ(usb::to_libusb_error(Status::kBusy), LIBUSB_ERROR_BUSY);
  EXPECT_EQ(usb::to_libusb_error(Status::kNotSupported), LIBUSB_ERROR_NOT_SUPPORTED);
  EXPECT_EQ(usb::to_libusb_error(Status::kAccess), LIBUSB_ERROR_ACCESS);
  EXPECT_EQ(usb::to_libusb_error(Status::kIoError), LIBUSB_ERROR_OTHER);
}

TEST(StatusTable, EveryStatusSurvivesARoundTripWhereLibusbHasACode) {
  // Statuses that own a distinct libusb error come back unchanged.
  for (Status s :
       {Status::kOk, Status::kStall, Status::kCancelled, Status::kUnlinked, Status::kNoDevice,
        Status::kBabble, Status::kTimeout, Status::kInvalid, Status::kNoMemory, Status::kBusy,
        Status::kNotSupported, Status::kAccess, Status::kIoError}) {
    EXPECT_EQ(usb::from_libusb_error(usb::to_libusb_error(s)), s) << usb::to_string(s);
  }
}

TEST(Speed, FromLibusb) {
  EXPECT_EQ(speed_from_libusb(LIBUSB_SPEED_UNKNOWN), usb::Speed::kUnknown);
  EXPECT_EQ(speed_from_libusb(LIBUSB_SPEED_LOW), usb::Speed::kLow);
  EXPECT_EQ(speed_from_libusb(LIBUSB_SPEED_FULL), usb::Speed::kFull);
  EXPECT_EQ(speed_from_libusb(LIBUSB_SPEED_HIGH), usb::Speed::kHigh);
  // libusb has no "wireless": SUPER is 4 there, 5 in usb::Speed (Linux numbering).
  EXPECT_EQ(speed_from_libusb(LIBUSB_SPEED_SUPER), usb::Speed::kSuper);
  EXPECT_EQ(speed_from_libusb(LIBUSB_SPEED_SUPER_PLUS), usb::Speed::kSuperPlus);
  EXPECT_EQ(speed_from_libusb(42), usb::Speed::kUnknown);
}

// A mass-storage-like configuration with a class descriptor after the config header, an
// interface with class bytes, a SuperSpeed companion after an endpoint and an audio endpoint.
TEST(RawConfig, RebuiltFromLibusbStructsMatchesTheOriginalBytes) {
  const std::vector<uint8_t> original = {
      9, 2,    0,    0, 2,    1,    4, 0xc0, 50,  // config (wTotalLength patched below)
      4, 0x24, 1,    2,                           // class-specific, in the config's extra
      9, 4,    0,    0, 2,    8,    6, 0x50, 5,   // interface 0 alt 0
      5, 0x25, 1,    2, 3,                        // class-specific, in the interface's extra
      7, 5,    0x81, 2, 0x00, 0x04, 0,            // bulk IN 1024
      6, 0x30, 15,   0, 0,    0,                  // SS companion, in the endpoint's extra
      7, 5,    0x02, 2, 0x00, 0x04, 0,            // bulk OUT 1024
      9, 4,    1,    0, 0,    1,    1, 0,    0,   // interface 1 alt 0, no endpoints
      9, 4,    1,    1, 1,    1,    2, 0,    0,   // interface 1 alt 1
      9, 5,    0x83, 5, 0xc0, 0x00, 4, 0,    0,   // iso IN, audio layout (bRefresh, bSynchAddress)
  };
  std::vector<uint8_t> bytes = original;
  bytes[2] = static_cast<uint8_t>(bytes.size());

  libusb_endpoint_descriptor ep0[2] = {};
  ep0[0] = {7, 5, 0x81, 2, 0x400, 0, 0, 0, &bytes[34], 6};
  ep0[1] = {7, 5, 0x02, 2, 0x400, 0, 0, 0, nullptr, 0};
  libusb_endpoint_descriptor ep1[1] = {};
  ep1[0] = {9, 5, 0x83, 5, 0xc0, 4, 0, 0, nullptr, 0};
  libusb_interface_descriptor alts0[1] = {};
  alts0[0] = {9, 4, 0, 0, 2, 8, 6, 0x50, 5, ep0, &bytes[22], 5};
  libusb_interface_descriptor alts1[2] = {};
  alts1[0] = {9, 4, 1, 0, 0, 1, 1, 0, 0, nullptr, nullptr, 0};
  alts1[1] = {9, 4, 1, 1, 1, 1, 2, 0, 0, ep1, nullptr, 0};
  libusb_interface itfs[2] = {{alts0, 1}, {alts1, 2}};
  libusb_config_descriptor config = {
      9, 2, static_cast<uint16_t>(bytes.size()), 2, 1, 4, 0xc0, 50, itfs, &bytes[9], 4};

  std::vector<uint8_t> rebuilt = raw_config_from_libusb(config);
  EXPECT_EQ(rebuilt, bytes);
  auto parsed = usb::ConfigurationDescriptor::parse(rebuilt);
  ASSERT_TRUE(parsed.has_value()) << parsed.error().message;
  EXPECT_EQ(parsed->value, 1);
  EXPECT_EQ(parsed->alternate_count(1), 2u);
  EXPECT_EQ(parsed->build(), bytes);
}

TEST(ErrorText, NamesTheError) {
  EXPECT_EQ(libusb_error_text(LIBUSB_ERROR_PIPE), "LIBUSB_ERROR_PIPE (-9)");
}

}  // namespace
}  // namespace devices
