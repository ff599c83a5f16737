// Conversions between libusb's vocabulary and usb/core's. Transfer and error statuses are NOT
// here: they go through the project's one table (usb::from_libusb_error,
// usb::from_libusb_transfer_status in usb/core/status.h); libusb_convert.cc static_asserts that
// the numbers in that table are libusb's.
#pragma once

#include <libusb.h>

#include <cstdint>
#include <string>
#include <vector>

#include "usb/core/types.h"

namespace devices {

// libusb_speed (LIBUSB_SPEED_*) to usb::Speed; unknown values become kUnknown.
usb::Speed speed_from_libusb(int libusb_speed);

// Rebuilds the raw bytes of a configuration descriptor from libusb's parsed form (used when the
// device does not answer GET_DESCRIPTOR). libusb keeps every non-standard descriptor in the
// `extra` of the standard descriptor it follows, so concatenating header, extra, interfaces
// (each alternate setting with its endpoints and their extras) gives back the original bytes for
// a well-formed descriptor. wTotalLength is recomputed.
std::vector<uint8_t> raw_config_from_libusb(const libusb_config_descriptor& config);

// "LIBUSB_ERROR_PIPE (-9)" for logs and Error messages.
std::string libusb_error_text(int libusb_error);

}  // namespace devices
