#include "usb/usbredir/url.h"

namespace usb::usbredir {

namespace {
std::unexpected<usb::Error> bad(std::string_view text, std::string why) {
  return usb::Error::make(usb::Error::Code::kInvalidArgument,
                          "'" + std::string(text) + "': " + std::move(why));
}
}  // namespace

bool is_url(std::string_view text) {
  return text.starts_with(kTcpScheme) || text.starts_with(kUnixScheme);
}

usb::Result<usb::net::Endpoint> parse_url(std::string_view text, std::string_view default_host) {
  const bool unix_socket = text.starts_with(kUnixScheme);
  if (!unix_socket && !text.starts_with(kTcpScheme))
    return bad(text, "expected usbredir://HOST:PORT or usbredir+unix://PATH");
  const std::string_view rest = text.substr((unix_socket ? kUnixScheme : kTcpScheme).size());
  if (unix_socket) {
    if (!rest.starts_with('/')) return bad(text, "the socket's path must be absolute");
    auto e = usb::net::parse_endpoint(std::string(usb::net::kUnixPrefix) + std::string(rest));
    if (!e) return bad(text, e.error().message);
    return e;
  }
  if (rest.empty() || rest.find('/') != std::string_view::npos)
    return bad(text, "expected usbredir://HOST:PORT");
  auto hp = usb::net::parse_host_port(rest, default_host);
  if (!hp) return bad(text, hp.error().message);
  if (hp->port == 0) return bad(text, "a usbredir host needs a port (1-65535)");
  return usb::net::Endpoint(std::move(*hp));
}

std::string url(const usb::net::Endpoint& host) {
  if (host.is_unix()) return std::string(kUnixScheme) + host.path;
  return std::string(kTcpScheme) + host.tcp.to_string();
}

}  // namespace usb::usbredir
