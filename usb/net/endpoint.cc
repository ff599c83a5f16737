#include "usb/net/endpoint.h"

#include <sys/un.h>

namespace usb::net {

std::string Endpoint::to_string() const {
  return (tls ? std::string(kTlsPrefix) : std::string()) +
         (is_unix() ? std::string(kUnixPrefix) + path : tcp.to_string());
}

Result<Endpoint> parse_endpoint(std::string_view text, std::string_view default_host) {
  if (text.starts_with(kTlsPrefix)) {
    auto e = parse_endpoint(text.substr(kTlsPrefix.size()), default_host);
    if (e) e->tls = true;
    return e;
  }
  if (text.starts_with(kUnixPrefix)) {
    std::string path(text.substr(kUnixPrefix.size()));
    if (path.empty())
      return Error::make(Error::Code::kInvalidArgument,
                         "bad address '" + std::string(text) + "': unix: needs a path");
    if (path.size() >= sizeof(sockaddr_un{}.sun_path))
      return Error::make(Error::Code::kInvalidArgument,
                         "UNIX socket path '" + path + "' is longer than " +
                             std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes");
    if (path.find('\0') != std::string::npos)
      return Error::make(Error::Code::kInvalidArgument, "UNIX socket path contains a NUL byte");
    return Endpoint::unix_socket(std::move(path));
  }
  auto hp = parse_host_port(text, default_host);
  if (!hp) return std::unexpected(hp.error());
  return Endpoint(*hp);
}

}  // namespace usb::net
