#include "host-controller/vm_function.h"

#include "host-controller/ehci/ehci_vm_function.h"
#include "host-controller/xhci/xhci_vm_function.h"

namespace hc {

std::unique_ptr<VmFunction> make_vm_function(Model model, GuestMemory& memory, IrqLine& irq,
                                             VmFunction::Clock clock, VmFunction::Timer timer) {
  switch (model) {
    case Model::kEhci:
      return std::make_unique<ehci::EhciVmFunction>(memory, irq, std::move(clock),
                                                    std::move(timer));
    case Model::kXhci:
      break;
  }
  return std::make_unique<xhci::XhciVmFunction>(memory, irq, std::move(clock), std::move(timer));
}

}  // namespace hc
