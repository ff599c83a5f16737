// hc::VmFunction: one VM's controller function on the shared controller — a register model
// (xHCI, EHCI, ...) behind the PCI function a VMM sees — as hc::Controller needs it: ports to put
// devices on, BAR registers, and transfers that wait for their turn in the controller's fair
// queue. Each model implements it with a thin adapter beside the model (xhci/xhci_vm_function.h,
// ehci/ehci_vm_function.h), so the model itself keeps no PCI or scheduler types; a new model is
// one new class here plus one line in make_vm_function().
//
// Owned by the Controller, one per VM, for as long as the VM is added; destroying it cancels the
// VM's transfers. All calls on the controller's loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "host-controller/common/guest_memory.h"
#include "host-controller/common/irq_line.h"
#include "host-controller/pci/pci_function.h"
#include "usb/core/device.h"

namespace hc {

// Which controller a VM's function is: xHCI (PCI class 0c0330, MSI-X) or EHCI (0c0320, INTx).
enum class Model : uint8_t { kXhci, kEhci };

class VmFunction {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  // Runs `fn` after `delay` on the controller's loop (interrupt moderation, frame timers).
  using Timer = std::function<void(std::chrono::nanoseconds delay, std::function<void()> fn)>;
  // One unit of queued work in the function's own terms (xHCI: an endpoint; EHCI: a queue head).
  // Only the function that woke it interprets it; the controller just hands it back to serve().
  using WorkKey = uint32_t;
  // The function tells the scheduler that `key` has a transfer of `bytes` ready; false when the
  // fair queue refused it. Never re-entrant.
  using Wake = std::function<bool(WorkKey key, uint32_t bytes)>;

  virtual ~VmFunction() = default;

  virtual Model model() const = 0;
  virtual std::string_view model_name() const = 0;  // "xHCI", "EHCI": for logs
  // The PCI function in front of the model: config space, BAR layout, MSI-X table.
  virtual PciFunction& pci() = 0;

  // A device appears on / leaves root-hub port `port` (1-based); it outlives its attachment.
  virtual bool attach(uint32_t port, usb::Device& device) = 0;
  virtual void detach(uint32_t port) = 0;

  // The model's registers in the BAR (the controller answers MSI-X table and PBA accesses from
  // pci() before they get here).
  virtual uint64_t mmio_read(uint32_t offset, unsigned size) = 0;
  virtual void mmio_write(uint32_t offset, uint64_t value, unsigned size) = 0;

  // From now on the function only wakes work through `wake` and starts it in serve().
  virtual void set_scheduler(Wake wake) = 0;
  // `key`'s turn: starts its next transfer; its bytes, or nullopt when nothing was started. It may
  // wake `key` again from inside.
  virtual std::optional<uint32_t> serve(WorkKey key) = 0;
};

// A new function of `model` over the VM's memory and IRQ line (both outlive it).
std::unique_ptr<VmFunction> make_vm_function(Model model, GuestMemory& memory, IrqLine& irq,
                                             VmFunction::Clock clock, VmFunction::Timer timer);

}  // namespace hc
