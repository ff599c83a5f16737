#include "vmm-frontend/backends/remote_backend.h"

namespace vusbd {

RemoteBackend::RemoteBackend(boost::asio::io_context& io, usb::net::Endpoint server,
                             std::string busid, OnChange on_change)
    : server_(std::move(server)),
      busid_(std::move(busid)),
      reimport_(
          io, usb::usbip::url(server_, busid_), {},
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
