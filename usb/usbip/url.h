// Where a USB/IP device (or a whole server) is, written as one string: "usbip://HOST:PORT/BUSID"
// over TCP, "usbip+unix://PATH/BUSID" over a UNIX-domain socket (PATH absolute; the bus id is what
// follows its last '/'), BUSID "*" meaning every device the server exports. vusbd's sources and
// vusbctl's -r take these; "usbips://" and "usbips+unix://" are the same over TLS;
// parse_url(url(x)) == x. Pure functions.
#pragma once

#include <string>
#include <string_view>

#include "usb/core/error.h"
#include "usb/net/endpoint.h"

namespace usb::usbip {

inline constexpr std::string_view kTcpScheme = "usbip://";
inline constexpr std::string_view kUnixScheme = "usbip+unix://";
// The same behind TLS 1.3 (vusb-stub's TLS port): the server Endpoint's tls is set.
inline constexpr std::string_view kTlsScheme = "usbips://";
inline constexpr std::string_view kTlsUnixScheme = "usbips+unix://";

struct Url {
  usb::net::Endpoint server;
  std::string busid;  // "*": every device
  bool operator==(const Url&) const = default;
};

// Whether `text` names a USB/IP location at all (any scheme).
bool is_url(std::string_view text);
// Refusals say what was expected. A bus id is 1..31 bytes without '/'.
usb::Result<Url> parse_url(std::string_view text, std::string_view default_host = "127.0.0.1");
std::string url(const usb::net::Endpoint& server, std::string_view busid);

}  // namespace usb::usbip
