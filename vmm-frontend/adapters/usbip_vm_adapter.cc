#include "vmm-frontend/adapters/usbip_vm_adapter.h"

#include <spdlog/spdlog.h>

#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd {

UsbipVmAdapter::UsbipVmAdapter(boost::asio::io_context& io, std::string vm,
                               usb::net::Endpoint listen, usb::net::Listener::Options listener)
    : vm_(std::move(vm)),
      listen_(std::move(listen)),
      table_(std::make_unique<usb::usbip::ExportTable>()) {
  usb::usbip::ConnectionLimits limits;
  limits.label = "vm " + vm_;
  listener.label = limits.label;
  server_ = std::make_unique<usb::usbip::Server>(io, *table_, limits, std::move(listener));
}

usb::Result<void> UsbipVmAdapter::start() {
  if (auto r = server_->listen(listen_); !r) return r;
  spdlog::info("vusbd: vm {} served on {}", vm_, server_->local_endpoint().to_string());
  return {};
}

void UsbipVmAdapter::stop() { server_->stop(); }

usb::Result<std::string> UsbipVmAdapter::offer(const std::string&, DeviceView& view) {
  return table_->add(view, &view);
}

bool UsbipVmAdapter::withdraw(DeviceView& view) {
  return table_->remove(view);
}

void UsbipVmAdapter::place_reservations(usb::Device& device) {
  if (auto r = table_->add(device); !r)
    spdlog::warn("vusbd: vm {}: bandwidth device not offered: {}", vm_, r.error().message);
}

void UsbipVmAdapter::unplace_reservations(usb::Device& device) { table_->remove(device); }

void UsbipVmAdapter::describe(nlohmann::json& vm) const {
  vm["listen"] = listen_.to_string();
  vm["port"] = server_->local_port();
}

}  // namespace vusbd
