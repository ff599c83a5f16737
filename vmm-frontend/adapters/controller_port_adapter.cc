#include "vmm-frontend/adapters/controller_port_adapter.h"

#include <spdlog/spdlog.h>

#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd {

ControllerPortAdapter::ControllerPortAdapter(hc::Controller& controller, std::string vm,
                                             hc::GuestMemory& memory, hc::IrqLine& irq,
                                             uint32_t weight, hc::Controller::Model model)
    : controller_(controller),
      vm_(std::move(vm)),
      model_(model),
      id_(controller.add_vm(vm_, memory, irq, weight, model)) {
  if (auto* xhci = controller_.xhci(id_))  // an EHCI function admits nothing itself
    xhci->set_admission(
        [this](uint32_t port, std::span<const usb::EndpointDescriptor> eps) {
          auto it = ports_.find(port);
          if (it == ports_.end()) return true;  // the reservation device: it claims nothing
          return it->second->admit_endpoints(eps) == usb::Status::kOk;
        });
  spdlog::info("vusbd: vm {} has an {} function on vusbd's controller", vm_,
               model == hc::Controller::Model::kXhci ? "xHCI" : "EHCI");
}

ControllerPortAdapter::~ControllerPortAdapter() {
  for (auto& [port, view] : ports_) {
    controller_.detach(id_, port);
    view->release();
  }
  controller_.remove_vm(id_);
}

uint32_t ControllerPortAdapter::free_port(usb::Speed speed) const {
  using hc::xhci::XhciFunction;
  uint32_t first = 1, last = hc::ehci::EhciFunction::kPorts;
  if (model_ == hc::Controller::Model::kXhci) {
    const bool super = speed == usb::Speed::kSuper || speed == usb::Speed::kSuperPlus;
    first = super ? XhciFunction::kUsb2Ports + 1 : 1;
    last = super ? XhciFunction::kPorts : XhciFunction::kUsb2Ports;
  }
  for (uint32_t port = first; port <= last; ++port)
    if (!ports_.contains(port) && port != reservation_port_) return port;
  return 0;
}

usb::Result<std::string> ControllerPortAdapter::offer(const std::string&, DeviceView& view) {
  const uint32_t port = free_port(view.speed());
  if (!port)
    return usb::Error::make(usb::Error::Code::kBusy,
                            "vm " + vm_ + "'s host controller function has no free port for it");
  if (!view.try_acquire())  // exclusive mode, held by another VM
    return usb::Error::make(usb::Error::Code::kBusy, "held by another VM; not plugged in");
  if (!controller_.attach(id_, port, view)) {
    view.release();
    return usb::Error::make(usb::Error::Code::kBusy, "port " + std::to_string(port) +
                                                         " refused it");
  }
  ports_[port] = &view;
  return "port " + std::to_string(port);
}

bool ControllerPortAdapter::withdraw(DeviceView& view) {
  for (auto it = ports_.begin(); it != ports_.end(); ++it) {
    if (it->second != &view) continue;
    controller_.detach(id_, it->first);  // the guest sees the port disconnect
    view.release();
    spdlog::info("vusbd: vm {}: port {} unplugged", vm_, it->first);
    ports_.erase(it);
    return true;
  }
  return false;
}

void ControllerPortAdapter::place_reservations(usb::Device& device) {
  const uint32_t port = free_port(device.speed());
  if (port && controller_.attach(id_, port, device)) {
    reservation_port_ = port;
    spdlog::info("vusbd: vm {}: bandwidth device on its controller's port {}", vm_, port);
  } else {
    spdlog::warn("vusbd: vm {}: no free port for the bandwidth device", vm_);
  }
}

void ControllerPortAdapter::unplace_reservations(usb::Device&) {
  if (!reservation_port_) return;
  controller_.detach(id_, reservation_port_);  // the guest sees it unplugged
  reservation_port_ = 0;
}

void ControllerPortAdapter::describe(nlohmann::json& vm) const {
  vm["controller"] = {{"model", model_ == hc::Controller::Model::kXhci ? "xhci" : "ehci"},
                      {"ports_in_use", ports_.size() + (reservation_port_ ? 1 : 0)}};
}

uint32_t ControllerPortAdapter::port_of(const DeviceView* view) const {
  for (const auto& [port, v] : ports_)
    if (v == view) return port;
  return 0;
}

}  // namespace vusbd
