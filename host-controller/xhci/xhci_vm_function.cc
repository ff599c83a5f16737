#include "host-controller/xhci/xhci_vm_function.h"

namespace hc::xhci {
namespace {

// An endpoint as a work key: slot in bits 8..15, DCI in bits 0..7.
VmFunction::WorkKey key_of(uint8_t slot, uint8_t dci) {
  return uint32_t{slot} << 8 | dci;
}

}  // namespace

XhciVmFunction::XhciVmFunction(GuestMemory& memory, IrqLine& vm_irq, Clock clock, Timer timer)
    : pci_(PciFunction::Identity{}, PciFunction::Layout{}, vm_irq),
      xhci_(memory, pci_.device_irq(), std::move(clock)) {
  if (timer) xhci_.set_timer(std::move(timer));
}

void XhciVmFunction::set_scheduler(Wake wake) {
  wake_ = std::move(wake);
  xhci_.set_scheduler([this](uint8_t slot, uint8_t dci) { this->wake(slot, dci); });
}

void XhciVmFunction::wake(uint8_t slot, uint8_t dci) {
  if (!wake_ || slot > XhciFunction::kMaxSlots || dci >= 32) return;
  if (queued_[slot] & (1u << dci)) return;  // already waiting for its turn
  auto bytes = xhci_.next_td_bytes(slot, dci);
  if (!bytes) return;  // nothing complete on the ring yet: the next doorbell wakes it again
  if (!wake_(key_of(slot, dci), *bytes)) return;  // cannot happen: one entry per endpoint
  queued_[slot] |= 1u << dci;
}

std::optional<uint32_t> XhciVmFunction::serve(WorkKey key) {
  const auto slot = static_cast<uint8_t>(key >> 8);
  const auto dci = static_cast<uint8_t>(key & 0xff);
  if (slot > XhciFunction::kMaxSlots || dci >= 32) return std::nullopt;
  queued_[slot] &= ~(1u << dci);
  return xhci_.serve(slot, dci);  // may wake this endpoint again
}

}  // namespace hc::xhci
