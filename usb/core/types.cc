#include "usb/core/types.h"

#include "usb/core/error.h"

namespace usb {

std::string_view to_string(Speed speed) {
  switch (speed) {
    case Speed::kLow:
      return "low";
    case Speed::kFull:
      return "full";
    case Speed::kHigh:
      return "high";
    case Speed::kWireless:
      return "wireless";
    case Speed::kSuper:
      return "super";
    case Speed::kSuperPlus:
      return "super-plus";
    case Speed::kUnknown:
      break;
  }
  return "unknown";
}

std::string_view to_string(TransferType type) {
  switch (type) {
    case TransferType::kControl:
      return "control";
    case TransferType::kIsochronous:
      return "isochronous";
    case TransferType::kBulk:
      return "bulk";
    case TransferType::kInterrupt:
      return "interrupt";
  }
  return "?";
}

std::string_view to_string(Error::Code code) {
  switch (code) {
    case Error::Code::kInvalidArgument:
      return "invalid-argument";
    case Error::Code::kMalformed:
      return "malformed";
    case Error::Code::kTooLarge:
      return "too-large";
    case Error::Code::kNotFound:
      return "not-found";
    case Error::Code::kBusy:
      return "busy";
    case Error::Code::kIo:
      return "io";
    case Error::Code::kUnsupported:
      return "unsupported";
    case Error::Code::kClosed:
      return "closed";
    case Error::Code::kDenied:
      return "denied";
  }
  return "?";
}

}  // namespace usb
