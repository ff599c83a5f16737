#include "usb/core/status.h"

#include <array>
#include <cerrno>

namespace usb {
namespace {

// The one table. libusb values are spelled as numbers so usb/core needs no libusb header;
// devices/libusb static_asserts them against <libusb.h>. A libusb_transfer_status of -1 means
// "no transfer status maps here".
struct Row {
  Status status;
  int linux_errno;  // positive errno
  int libusb_error;
  int libusb_transfer_status;
  std::string_view name;
};

constexpr std::array<Row, 18> kTable{{
    {Status::kOk, 0, 0 /*SUCCESS*/, 0 /*COMPLETED*/, "ok"},
    {Status::kStall, EPIPE, -9 /*PIPE*/, 4 /*STALL*/, "stall"},
    {Status::kCancelled, ECONNRESET, -10 /*INTERRUPTED*/, 3 /*CANCELLED*/, "cancelled"},
    {Status::kUnlinked, ENOENT, -5 /*NOT_FOUND*/, -1, "unlinked"},
    {Status::kNoDevice, ESHUTDOWN, -4 /*NO_DEVICE*/, 5 /*NO_DEVICE*/, "no-device"},
    {Status::kShortPacket, EREMOTEIO, -1 /*IO*/, -1, "short-packet"},
    {Status::kBabble, EOVERFLOW, -8 /*OVERFLOW*/, 6 /*OVERFLOW*/, "babble"},
    {Status::kTimeout, ETIMEDOUT, -7 /*TIMEOUT*/, 2 /*TIMED_OUT*/, "timeout"},
    {Status::kLate, ETIME, -7 /*TIMEOUT*/, -1, "late"},
    {Status::kProtocol, EPROTO, -1 /*IO*/, 1 /*ERROR*/, "protocol-error"},
    {Status::kPartialIso, EXDEV, -1 /*IO*/, -1, "partial-iso"},
    {Status::kInvalid, EINVAL, -2 /*INVALID_PARAM*/, -1, "invalid"},
    {Status::kNoMemory, ENOMEM, -11 /*NO_MEM*/, -1, "no-memory"},
    {Status::kBusy, EBUSY, -6 /*BUSY*/, -1, "busy"},
    {Status::kNotSupported, EOPNOTSUPP, -12 /*NOT_SUPPORTED*/, -1, "not-supported"},
    {Status::kAccess, EACCES, -3 /*ACCESS*/, -1, "access"},
    {Status::kNoBandwidth, ENOSPC, -11 /*NO_MEM*/, -1, "no-bandwidth"},
    {Status::kIoError, EIO, -99 /*OTHER*/, -1, "io-error"},
}};

constexpr const Row& row(Status s) {
  return kTable[static_cast<size_t>(s)];
}

static_assert(
    [] {
      for (size_t i = 0; i < kTable.size(); ++i)
        if (static_cast<size_t>(kTable[i].status) != i) return false;
      return true;
    }(),
    "kTable rows must be in enum order");

}  // namespace

int to_linux_errno(Status s) {
  return -row(s).linux_errno;
}

Status from_linux_errno(int err) {
  if (err < 0) err = -err;
  for (const Row& r : kTable)
    if (r.linux_errno == err) return r.status;
  return Status::kIoError;
}

int to_libusb_error(Status s) {
  return row(s).libusb_error;
}

Status from_libusb_error(int err) {
  // LIBUSB_ERROR_IO is shared by several rows (short packet, protocol, partial iso); on its own
  // it says only "I/O error".
  if (err == -1) return Status::kIoError;
  for (const Row& r : kTable)
    if (r.libusb_error == err) return r.status;
  return Status::kIoError;
}

Status from_libusb_transfer_status(int ts) {
  for (const Row& r : kTable)
    if (r.libusb_transfer_status == ts && ts >= 0) return r.status;
  return Status::kIoError;
}

std::string_view to_string(Status s) {
  return row(s).name;
}

}  // namespace usb
