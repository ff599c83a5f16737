#include "usb/usbip/url.h"

namespace usb::usbip {

namespace {
std::unexpected<usb::Error> bad(std::string_view text, std::string why) {
  return usb::Error::make(usb::Error::Code::kInvalidArgument,
                          "'" + std::string(text) + "': " + std::move(why));
}
}  // namespace

bool is_url(std::string_view text) {
  return text.starts_with(kTcpScheme) || text.starts_with(kUnixScheme) ||
         text.starts_with(kTlsScheme) || text.starts_with(kTlsUnixScheme);
}

usb::Result<Url> parse_url(std::string_view text, std::string_view default_host) {
  const bool tls = text.starts_with(kTlsScheme) || text.starts_with(kTlsUnixScheme);
  const bool unix_socket = text.starts_with(kUnixScheme) || text.starts_with(kTlsUnixScheme);
  if (!tls && !unix_socket && !text.starts_with(kTcpScheme))
    return bad(text, "expected usbip[s]://HOST:PORT/BUSID or usbip[s]+unix://PATH/BUSID");
  const std::string_view scheme = tls ? (unix_socket ? kTlsUnixScheme : kTlsScheme)
                                      : (unix_socket ? kUnixScheme : kTcpScheme);
  const std::string_view rest = text.substr(scheme.size());
  // TCP: the first '/' ends HOST:PORT; UNIX: the last one ends the path (bus ids have none).
  const size_t slash = unix_socket ? rest.rfind('/') : rest.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 >= rest.size())
    return bad(text, unix_socket ? "expected usbip+unix://PATH/BUSID (an absolute PATH)"
                                 : "expected usbip://HOST:PORT/BUSID");
  Url u;
  u.busid = std::string(rest.substr(slash + 1));
  if (u.busid.size() >= 32) return bad(text, "bus id longer than 31 bytes");
  if (u.busid.find('/') != std::string::npos) return bad(text, "a bus id has no '/'");
  const std::string_view where = rest.substr(0, slash);
  if (unix_socket) {
    if (!where.starts_with('/')) return bad(text, "the socket's path must be absolute");
    auto e = usb::net::parse_endpoint(std::string(usb::net::kUnixPrefix) + std::string(where));
    if (!e) return bad(text, e.error().message);
    u.server = std::move(*e);
    u.server.tls = tls;
    return u;
  }
  auto hp = usb::net::parse_host_port(std::string(where), std::string(default_host));
  if (!hp) return bad(text, hp.error().message);
  u.server = usb::net::Endpoint(std::move(*hp));
  u.server.tls = tls;
  return u;
}

std::string url(const usb::net::Endpoint& server, std::string_view busid) {
  if (server.is_unix())
    return std::string(server.tls ? kTlsUnixScheme : kUnixScheme) + server.path + "/" +
           std::string(busid);
  return std::string(server.tls ? kTlsScheme : kTcpScheme) + server.tcp.to_string() + "/" +
         std::string(busid);
}

}  // namespace usb::usbip
