#include "host-controller/ehci/ehci_vm_function.h"

namespace hc::ehci {
namespace {

PciFunction::Identity ehci_identity() {
  PciFunction::Identity identity;
  identity.vendor = 0x8086;  // as QEMU's usb-ehci
  identity.device = 0x24cd;
  identity.class_code = PciFunction::kEhciClass;
  return identity;
}

PciFunction::Layout ehci_layout() {
  PciFunction::Layout layout;
  layout.bar_size = EhciFunction::kBarSize;
  layout.msix_vectors = 0;
  return layout;
}

}  // namespace

EhciVmFunction::EhciVmFunction(GuestMemory& memory, IrqLine& vm_irq, Clock clock, Timer timer)
    : pci_(ehci_identity(), ehci_layout(), vm_irq),
      ehci_(memory, pci_.device_irq(), std::move(clock), std::move(timer)) {}

void EhciVmFunction::set_scheduler(Wake wake) {
  wake_ = std::move(wake);
  ehci_.set_scheduler([this](uint32_t qh, uint32_t bytes) {
    if (wake_) wake_(qh, bytes);
  });
}

}  // namespace hc::ehci
