// RemoteBackend: a device imported from a USB/IP server (vusb-stub or the kernel's usbipd), kept
// imported by Reimport (re-imported with backoff when the connection ends). Owned by vusbd's
// registry; lives on vusbd's loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>

#include "devices/remote/usbip_remote_device.h"
#include "usb/net/endpoint.h"
#include "usb/usbip/url.h"
#include "vmm-frontend/backends/device_source.h"
#include "vmm-frontend/backends/reimport.h"

namespace vusbd {

class RemoteBackend final : public DeviceSource {
 public:
  // `tls`: the client context for a TLS server (server.tls).
  RemoteBackend(boost::asio::io_context& io, usb::net::Endpoint server, std::string busid,
                std::shared_ptr<const usb::net::TlsContext> tls, OnChange on_change);

  usb::Result<void> start() override;
  usb::Device* device() const override { return reimport_.device(); }
  std::string describe() const override { return usb::usbip::url(server_, busid_); }

 private:
  usb::net::Endpoint server_;
  std::string busid_;
  Reimport<devices::UsbipRemoteDevice> reimport_;
};

}  // namespace vusbd
