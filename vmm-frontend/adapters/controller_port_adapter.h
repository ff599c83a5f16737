// ControllerPortAdapter: a VM reaches its devices through its own register set on vusbd's shared
// host controller (hc::Controller) — the guest's own xhci_hcd or ehci_hcd drives it; every device
// vusbd gives the VM sits on one of the function's root-hub ports (USB 2 or USB 3 by its speed),
// with the same sharing, fair queueing and periodic bandwidth admission as over USB/IP (xHCI
// Configure Endpoint answers Bandwidth Error where USB/IP gets -ENOSPC). A view is plugged only
// if the VM may claim it (an exclusive device held by another VM stays out).
//
// Created by Vusbd::attach_controller with the VM's guest memory and IRQ line (both outlive it);
// adds the VM's function to the controller and removes it when destroyed. Lives on vusbd's loop.
#pragma once

#include <map>
#include <string>

#include "host-controller/controller.h"
#include "vmm-frontend/adapters/vm_adapter.h"

namespace vusbd {

class ControllerPortAdapter final : public VmAdapter {
 public:
  ControllerPortAdapter(hc::Controller& controller, std::string vm, hc::GuestMemory& memory,
                        hc::IrqLine& irq, uint32_t weight, hc::Controller::Model model);
  ~ControllerPortAdapter() override;
  ControllerPortAdapter(const ControllerPortAdapter&) = delete;
  ControllerPortAdapter& operator=(const ControllerPortAdapter&) = delete;

  std::string_view kind() const override { return "controller"; }
  usb::Result<std::string> offer(const std::string& device, DeviceView& view) override;
  bool withdraw(DeviceView& view) override;
  void place_reservations(usb::Device& device) override;
  void unplace_reservations(usb::Device& device) override;
  void describe(nlohmann::json& vm) const override;

  hc::Controller::VmId id() const { return id_; }
  // The root-hub port `view` is plugged into (0: none); the reservation device's.
  uint32_t port_of(const DeviceView* view) const;
  uint32_t reservation_port() const { return reservation_port_; }

 private:
  // A free root-hub port for a device of `speed` (0: none).
  uint32_t free_port(usb::Speed speed) const;

  hc::Controller& controller_;
  std::string vm_;
  hc::Controller::Model model_;
  hc::Controller::VmId id_;
  std::map<uint32_t, DeviceView*> ports_;  // root-hub ports in use
  uint32_t reservation_port_ = 0;
};

}  // namespace vusbd
