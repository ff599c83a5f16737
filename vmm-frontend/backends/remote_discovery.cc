#include "vmm-frontend/backends/remote_discovery.h"

#include <spdlog/spdlog.h>

#include "usb/usbip/client_channel.h"
#include "usb/usbip/url.h"

namespace vusbd {

RemoteDiscovery::RemoteDiscovery(boost::asio::io_context& io, usb::net::Endpoint server,
                                 std::chrono::milliseconds interval, OnList on_list,
                                 std::shared_ptr<const usb::net::TlsContext> tls)
    : io_(io),
      server_(std::move(server)),
      interval_(interval),
      on_list_(std::move(on_list)),
      tls_(std::move(tls)),
      timer_(io) {}

RemoteDiscovery::~RemoteDiscovery() {
  *alive_ = false;
  timer_.cancel();
}

void RemoteDiscovery::start() {
  poll();
}

void RemoteDiscovery::poll() {
  usb::usbip::list_devices(
      io_, server_, std::chrono::seconds(5), [this, alive = alive_](auto result) {
        if (!*alive) return;
        if (!result) {
          if (!failing_)
            spdlog::warn("vusbd: cannot list {}: {} (retrying every {} ms)",
                         usb::usbip::url(server_, "*"), result.error().message,
                         interval_.count());
          failing_ = true;
        } else {
          if (failing_) spdlog::info("vusbd: {} answers again", usb::usbip::url(server_, "*"));
          failing_ = false;
          listed_ = true;
          if (result->size() > kMaxDevices) {
            if (!capped_)
              spdlog::warn("vusbd: {} lists {} devices; importing the first {} only",
                           usb::usbip::url(server_, "*"), result->size(), kMaxDevices);
            capped_ = true;
            result->resize(kMaxDevices);
          }
          on_list_(*result);
        }
        if (!*alive) return;
        timer_.expires_after(interval_);
        timer_.async_wait([this, alive](boost::system::error_code ec) {
          if (!ec && *alive) poll();
        });
      },
      tls_);
}

}  // namespace vusbd
