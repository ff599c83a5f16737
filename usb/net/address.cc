#include "usb/net/address.h"

#include <cctype>
#include <charconv>

namespace usb::net {

std::string HostPort::to_string() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<HostPort> parse_host_port(std::string_view text, std::string_view default_host) {
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return Error::make(Error::Code::kInvalidArgument,
                         "bad address '" + std::string(text) + "': expected [IPv6]:PORT");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else if (auto colon = text.rfind(':'); colon != std::string_view::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  } else {
    port = text;
  }
  // A name, an IPv4 address or an IPv6 address (with a zone): what a resolver could take, and
  // nothing that would print back as another address.
  for (char c : host)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_' &&
        c != ':' && c != '%')
      return Error::make(Error::Code::kInvalidArgument,
                         "bad host in '" + std::string(text) +
                             "': expected a name, an IPv4 address or [IPv6]");
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc{} || ptr != port.data() + port.size() || value > 65535)
    return Error::make(Error::Code::kInvalidArgument,
                       "bad port in '" + std::string(text) + "': expected 0-65535");
  return HostPort{host.empty() ? std::string(default_host) : std::string(host),
                  static_cast<uint16_t>(value)};
}

}  // namespace usb::net
