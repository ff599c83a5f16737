// ApiClient: vusbctl's side of vusbd's control API — one HTTP request at a time, and the
// WebSocket event stream — over TCP, a UNIX socket or TLS (usb::net's connector and streams). Blocking calls with a deadline (a CLI has nothing else to do). The
// only Beast translation unit of vusbctl.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "usb/core/error.h"
#include "usb/net/endpoint.h"
#include "usb/net/tls.h"

namespace vusbctl {

// Where vusbd's control API is and the bearer token to show it (empty: none; the UNIX socket
// needs none).
struct Api {
  usb::net::Endpoint at;  // TCP, unix:PATH, or either behind tls:
  std::string token;
  std::shared_ptr<const usb::net::TlsContext> tls;  // for a tls: address
};

struct Reply {
  unsigned status = 0;
  std::string body;
};

// `api` is vusbd's control address: HOST:PORT or a UNIX socket (unix:PATH).
// kIo when vusbd cannot be reached or does not answer within `timeout`.
usb::Result<Reply> request(const Api& api, std::string_view method,
                           std::string_view target, std::string_view body = {},
                           std::chrono::seconds timeout = std::chrono::seconds(10));

// Follows GET /api/v1/events, calling `on_message` with every text message until it returns
// false, the stream ends, or `timeout` (zero: never) passes.
usb::Result<void> follow_events(const Api& api,
                                const std::function<bool(const std::string&)>& on_message,
                                std::chrono::seconds timeout = std::chrono::seconds(0));

}  // namespace vusbctl
