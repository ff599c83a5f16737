// Parsing of "ADDR:PORT" listen/connect addresses ("0.0.0.0:3240", "[::1]:3240", "localhost:1").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "usb/core/error.h"

namespace usb::net {

struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string to_string() const;
  bool operator==(const HostPort&) const = default;
};

// Parses HOST:PORT; HOST may be a name, an IPv4 address or a bracketed IPv6 address.
// A bare port ("3240") or ":3240" means default_host.
Result<HostPort> parse_host_port(std::string_view text, std::string_view default_host = "0.0.0.0");

}  // namespace usb::net
