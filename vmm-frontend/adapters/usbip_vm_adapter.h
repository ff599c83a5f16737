// UsbipVmAdapter: a VM reaches its devices over USB/IP — the guest runs `usbip attach` and the
// kernel's vhci-hcd imports them from this VM's own server (its own address, its own export table,
// its own bus ids from AddressMap). A view is exported with itself as the claim, so an exclusive
// device held by another VM answers the import with "busy".
//
// Owned by Vusbd (one per VM, the first in its adapter list); lives on vusbd's loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>

#include "usb/net/endpoint.h"
#include "usb/usbip/export_table.h"
#include "usb/usbip/server.h"
#include "vmm-frontend/adapters/vm_adapter.h"

namespace vusbd {

class UsbipVmAdapter final : public VmAdapter {
 public:
  // `listener`: who may connect (the VM's allow-list) and the TLS context for a tls: port.
  UsbipVmAdapter(boost::asio::io_context& io, std::string vm, usb::net::Endpoint listen,
                 usb::net::Listener::Options listener = {});

  std::string_view kind() const override { return "usbip"; }
  usb::Result<void> start() override;
  void stop() override;
  usb::Result<std::string> offer(const std::string& device, DeviceView& view) override;
  bool withdraw(DeviceView& view) override;
  void place_reservations(usb::Device& device) override;
  void unplace_reservations(usb::Device& device) override;
  void describe(nlohmann::json& vm) const override;

  uint16_t local_port() const { return server_->local_port(); }

 private:
  std::string vm_;
  usb::net::Endpoint listen_;
  std::unique_ptr<usb::usbip::ExportTable> table_;
  std::unique_ptr<usb::usbip::Server> server_;
};

}  // namespace vusbd
