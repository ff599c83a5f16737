// Infrastructure failures (not USB outcomes): a small typed error for std::expected.
#pragma once

#include <expected>
#include <string>
#include <string_view>

namespace usb {

// What went wrong outside the USB protocol itself: bad input, a closed socket, a full queue.
// USB outcomes such as a stall are a usb::Status carried by the Transfer, never an Error.
struct Error {
  enum class Code {
    kInvalidArgument,  // caller passed something meaningless
    kMalformed,        // bytes from a peer or guest do not parse
    kTooLarge,         // a length exceeds a configured bound
    kNotFound,
    kBusy,
    kIo,  // OS or library call failed
    kUnsupported,
    kClosed,  // connection or device is gone
    kDenied,  // the peer is not allowed to (a listener's peer check)
  };
  Code code;
  std::string message;

  static std::unexpected<Error> make(Code code, std::string message) {
    return std::unexpected(Error{code, std::move(message)});
  }
};

template <typename T>
using Result = std::expected<T, Error>;

std::string_view to_string(Error::Code code);

}  // namespace usb
