// ControlApi: vusbd's control API on HTTP/1.1 and WebSocket (Boost.Beast; this is the only
// translation unit of vusbd that includes Beast). Requests go to `route()` (control_routes.h);
// GET / serves the dashboard; GET /api/v1/events upgrades to a WebSocket that streams every
// registry event (hotplug, attach/detach, import/release, mode) and, once a second, the stats.
//
// Every request is checked against ApiAccess: a UNIX-socket peer is admin, a TCP peer is what
// its bearer token says (or the anonymous role); refusals are 401 / 403 with the reason, logged.
// Hardening: at most 64 connections, 8 KiB of headers, 64 KiB of body, 30 s to send a request;
// a WebSocket client that falls 256 messages behind is dropped (logged) rather than buffered
// without bound. Owned by main beside the Vusbd it serves; lives on vusbd's loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <nlohmann/json.hpp>

#include "usb/core/error.h"
#include "usb/net/endpoint.h"
#include "usb/net/tls.h"
#include "vmm-frontend/api_access.h"

namespace vusbd {

class Vusbd;

class ControlApi {
 public:
  // `access`: who may do what (api_access.h). `tls`: the server context for a tls: address.
  ControlApi(boost::asio::io_context& io, Vusbd& daemon, ApiAccess access,
             std::shared_ptr<const usb::net::TlsContext> tls = nullptr);
  ~ControlApi();

  // TCP HOST:PORT, or unix:PATH (admits the daemon's own uid and root; others get 403).
  usb::Result<void> listen(const usb::net::Endpoint& at);
  uint16_t local_port() const;
  // Closes the listener and every connection.
  void stop();
  // Sends an event to every WebSocket subscriber (vusbd's event sink calls this).
  void publish(const nlohmann::json& event);

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// The dashboard page (a static page that reads the API).
std::string_view dashboard_html();

}  // namespace vusbd
