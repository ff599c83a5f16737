// Device options as the command line and configs give them: "key=value,key=value". Header-only.
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "usb/core/error.h"

namespace devices {

// Calls each(key, value) for every item of `text`, in order; stops at the first error. An item
// without '=' is an error naming it. `device` prefixes every message ("uvc-camera: ...").
template <typename Each>
usb::Result<void> for_each_option(std::string_view text, std::string_view device, Each&& each) {
  while (!text.empty()) {
    const auto comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    const auto eq = item.find('=');
    if (eq == std::string_view::npos) {
      return usb::Error::make(
          usb::Error::Code::kInvalidArgument,
          std::string(device) + ": option '" + std::string(item) + "' has no value");
    }
    if (auto r = each(std::string(item.substr(0, eq)), std::string(item.substr(eq + 1))); !r)
      return r;
  }
  return {};
}

// A whole unsigned decimal number, or nothing.
inline std::optional<uint64_t> option_number(std::string_view value) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (value.empty() || ec != std::errc{} || end != value.data() + value.size()) return std::nullopt;
  return n;
}

}  // namespace devices
