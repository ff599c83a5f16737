// hc::ehci::EhciVmFunction: an EHCI function as the shared controller sees it (hc::VmFunction) —
// the EhciFunction register model behind a PciFunction with QEMU usb-ehci's identity (8086:24cd,
// class 0c0320, 4 KiB BAR, INTx only, no MSI-X). A work key is an async queue head's guest
// address; the model itself keeps one queue entry per QH and says how many bytes it carries.
//
// The glue between model and controller, so EhciFunction has no PCI or scheduler types. Owned by
// the Controller (one per EHCI VM); all calls on the controller's loop.
#pragma once

#include "host-controller/ehci/ehci_function.h"
#include "host-controller/vm_function.h"

namespace hc::ehci {

class EhciVmFunction final : public VmFunction {
 public:
  EhciVmFunction(GuestMemory& memory, IrqLine& vm_irq, Clock clock, Timer timer);
  ~EhciVmFunction() override { wake_ = nullptr; }  // the model's teardown wakes nothing

  Model model() const override { return Model::kEhci; }
  std::string_view model_name() const override { return "EHCI"; }
  PciFunction& pci() override { return pci_; }
  bool attach(uint32_t port, usb::Device& device) override { return ehci_.attach(port, device); }
  void detach(uint32_t port) override { ehci_.detach(port); }
  uint64_t mmio_read(uint32_t offset, unsigned size) override {
    return ehci_.mmio_read(offset, size);
  }
  void mmio_write(uint32_t offset, uint64_t value, unsigned size) override {
    ehci_.mmio_write(offset, value, size);
  }
  void set_scheduler(Wake wake) override;
  std::optional<uint32_t> serve(WorkKey key) override { return ehci_.serve(key); }

  EhciFunction& function() { return ehci_; }

 private:
  // Declared before the model, which uses them until its destructor returns.
  PciFunction pci_;  // the model raises its interrupt on pci_.device_irq()
  Wake wake_;
  EhciFunction ehci_;
};

}  // namespace hc::ehci
