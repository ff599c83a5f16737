// Where a usbredir host (usbredirect --as, or anything else speaking usbredirhost's side) listens,
// written as one string: "usbredir://HOST:PORT" over TCP, "usbredir+unix://PATH" over a
// UNIX-domain socket (PATH absolute). vusbd's usbredir sources take these; parse_url(url(x)) == x.
// Pure functions.
#pragma once

#include <string>
#include <string_view>

#include "usb/core/error.h"
#include "usb/net/endpoint.h"

namespace usb::usbredir {

inline constexpr std::string_view kTcpScheme = "usbredir://";
inline constexpr std::string_view kUnixScheme = "usbredir+unix://";

// Whether `text` names a usbredir host at all (either scheme).
bool is_url(std::string_view text);
// Refusals say what was expected.
usb::Result<usb::net::Endpoint> parse_url(std::string_view text,
                                          std::string_view default_host = "127.0.0.1");
std::string url(const usb::net::Endpoint& host);

}  // namespace usb::usbredir
