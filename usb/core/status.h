// usb::Status: the outcome of a transfer or request, and its ONE mapping table to Linux errno
// values (what USB/IP carries) and libusb codes.
#pragma once

#include <cstdint>
#include <string_view>

namespace usb {

// Outcome of a USB transfer. Data carried by a completed Transfer, not an error.
enum class Status : uint8_t {
  kOk,
  kStall,         // endpoint halted / request refused (EPIPE)
  kCancelled,     // unlinked asynchronously (ECONNRESET)
  kUnlinked,      // unlinked synchronously / never started (ENOENT)
  kNoDevice,      // device vanished (ESHUTDOWN)
  kShortPacket,   // short transfer with short-not-ok set (EREMOTEIO)
  kBabble,        // device sent more than asked (EOVERFLOW)
  kTimeout,       // ETIMEDOUT
  kLate,          // isochronous packet missed its frame (ETIME)
  kProtocol,      // CRC / bit stuffing / no response (EPROTO)
  kPartialIso,    // some iso packets failed (EXDEV)
  kInvalid,       // request invalid for this endpoint (EINVAL)
  kNoMemory,      // ENOMEM
  kBusy,          // EBUSY
  kNotSupported,  // EOPNOTSUPP
  kAccess,        // EACCES
  kNoBandwidth,   // periodic bandwidth would be over-committed (ENOSPC)
  kIoError,       // anything else (EIO)
};

// Negative Linux errno for a status (0 for kOk), as USB/IP RET_SUBMIT carries it.
int to_linux_errno(Status status);
// Status for a Linux errno; accepts either sign. Unknown values become kIoError.
Status from_linux_errno(int err);

// libusb_error value (LIBUSB_SUCCESS, LIBUSB_ERROR_*) for a status.
int to_libusb_error(Status status);
// Status for a libusb_error value. Unknown values become kIoError.
Status from_libusb_error(int err);
// Status for a libusb_transfer_status value (LIBUSB_TRANSFER_*).
Status from_libusb_transfer_status(int transfer_status);

std::string_view to_string(Status status);

}  // namespace usb
