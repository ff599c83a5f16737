// Endpoint: where a listener binds or a connector connects — a TCP "HOST:PORT" or a UNIX-domain
// socket "unix:/path", either one behind TLS when written with "tls:" in front ("tls:0.0.0.0:3241",
// "tls:unix:/run/vusb.sock"). Every address a user writes (vusb-stub --listen, a VM's listen, the
// control API, a usbip:// source) is parsed here, so every listener takes every form; the TLS
// certificates or PSKs come from the program's [tls] configuration (tls.h).
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
  bool tls = false;  // a TLS 1.3 session runs over the connection

  bool is_unix() const { return !path.empty(); }
  // "HOST:PORT" or "unix:PATH", with "tls:" in front for TLS (what parse_endpoint() reads back).
  std::string to_string() const;
  bool operator==(const Endpoint&) const = default;
};

inline constexpr std::string_view kUnixPrefix = "unix:";
inline constexpr std::string_view kTlsPrefix = "tls:";

// "unix:/run/vusb.sock" (an absolute or relative path, at most 107 bytes as sockaddr_un allows)
// or HOST:PORT as parse_host_port() reads it.
Result<Endpoint> parse_endpoint(std::string_view text, std::string_view default_host = "0.0.0.0");

}  // namespace usb::net
