#include "vmm-frontend/backends/remote_backend.h"

namespace vusbd {

namespace {
devices::UsbipRemoteDevice::Options options_with(std::shared_ptr<const usb::net::TlsContext> tls) {
  devices::UsbipRemoteDevice::Options o;
  o.tls = std::move(tls);
  return o;
}
}  // namespace

RemoteBackend::RemoteBackend(boost::asio::io_context& io, usb::net::Endpoint server,
                             std::string busid, std::shared_ptr<const usb::net::TlsContext> tls,
                             OnChange on_change)
    : server_(std::move(server)),
      busid_(std::move(busid)),
      reimport_(
          io, usb::usbip::url(server_, busid_), options_with(std::move(tls)),
          [&io, server = server_, busid = busid_](auto options, auto done) {
            devices::UsbipRemoteDevice::import(io, server, busid, std::move(options),
                                               std::move(done));
          },
          std::move(on_change)) {}

usb::Result<void> RemoteBackend::start() {
  reimport_.start();
  return {};
}

}  // namespace vusbd
