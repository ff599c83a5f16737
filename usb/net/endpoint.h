// Endpoint: where a listener binds or a connector connects — a TCP "HOST:PORT" or a UNIX-domain
// socket "unix:/path". Every address a user writes (vusb-stub --listen, a VM's listen, the
// control API, a usbip:// source) is parsed here, so every listener takes both forms.
#pragma once

#include <string>
#include <string_view>

#include "usb/core/error.h"
#include "usb/net/address.h"

namespace usb::net {

struct Endpoint {
  Endpoint() = default;
  Endpoint(HostPort host_port) : tcp(std::move(host_port)) {}  // NOLINT: a HostPort is TCP's
  Endpoint(std::string host, uint16_t port) : tcp{std::move(host), port} {}
  static Endpoint unix_socket(std::string path) {
    Endpoint e;
    e.path = std::move(path);
    return e;
  }

  // TCP when `path` is empty, else a UNIX-domain socket at `path` (`tcp` unused).
  HostPort tcp;
  std::string path;

  bool is_unix() const { return !path.empty(); }
  // "HOST:PORT" or "unix:PATH" (what parse_endpoint() reads back).
  std::string to_string() const;
  bool operator==(const Endpoint&) const = default;
};

inline constexpr std::string_view kUnixPrefix = "unix:";

// "unix:/run/vusb.sock" (an absolute or relative path, at most 107 bytes as sockaddr_un allows)
// or HOST:PORT as parse_host_port() reads it.
Result<Endpoint> parse_endpoint(std::string_view text, std::string_view default_host = "0.0.0.0");

}  // namespace usb::net
