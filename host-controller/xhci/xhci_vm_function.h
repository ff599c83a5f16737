// hc::xhci::XhciVmFunction: an xHCI function as the shared controller sees it (hc::VmFunction) —
// the XhciFunction register model behind a PciFunction with QEMU qemu-xhci's identity (1b36:000d,
// class 0c0330, 16 KiB BAR, MSI-X table at 0x3000). A work key is one endpoint (slot, DCI); the
// adapter keeps at most one queue entry per endpoint and asks the model for the bytes of the
// endpoint's next TD before it wakes it.
//
// The glue between model and controller, so XhciFunction has no PCI or scheduler types. Owned by
// the Controller (one per xHCI VM); all calls on the controller's loop.
#pragma once

#include <array>
#include <cstdint>

#include "host-controller/vm_function.h"
#include "host-controller/xhci/xhci_function.h"

namespace hc::xhci {

class XhciVmFunction final : public VmFunction {
 public:
  XhciVmFunction(GuestMemory& memory, IrqLine& vm_irq, Clock clock, Timer timer);
  ~XhciVmFunction() override { wake_ = nullptr; }  // the model's teardown wakes nothing

  Model model() const override { return Model::kXhci; }
  std::string_view model_name() const override { return "xHCI"; }
  PciFunction& pci() override { return pci_; }
  bool attach(uint32_t port, usb::Device& device) override { return xhci_.attach(port, device); }
  void detach(uint32_t port) override { xhci_.detach(port); }
  uint64_t mmio_read(uint32_t offset, unsigned size) override {
    return xhci_.mmio_read(offset, size);
  }
  void mmio_write(uint32_t offset, uint64_t value, unsigned size) override {
    xhci_.mmio_write(offset, value, size);
  }
  void set_scheduler(Wake wake) override;
  std::optional<uint32_t> serve(WorkKey key) override;

  XhciFunction& function() { return xhci_; }

 private:
  void wake(uint8_t slot, uint8_t dci);

  // Declared before the model, which uses them until its destructor returns.
  PciFunction pci_;  // the model raises its interrupts on pci_.device_irq()
  Wake wake_;
  std::array<uint32_t, XhciFunction::kMaxSlots + 1> queued_{};  // DCI bits waiting in the queue
  XhciFunction xhci_;
};

}  // namespace hc::xhci
