// hc::PciFunction: the PCI side of one VM's controller function (PCI Local Bus 3.0 / PCI Express
// type 0 header, MSI-X from the PCI 3.0 spec section 6.8.2): the configuration space a VMM
// forwards config cycles to — identity, class code, command/status, one 64-bit memory BAR
// (sized by the usual all-ones probe), the interrupt pin — and an MSI-X capability whose table
// and pending-bit array live inside that BAR (as QEMU's qemu-xhci places them: table at 0x3000,
// PBA at 0x3800 of its 16 KiB BAR).
//
// It sits between a controller model and the VM's IrqLine: the model raises its interrupter
// lines on device_irq(); the function delivers them as MSI-X messages (address/data from the
// guest-programmed table, masked ones held as pending bits and sent on unmask) when MSI-X is
// enabled, otherwise as the INTx level (unless the command register's Interrupt Disable is set).
// Owned by the controller beside the model it fronts; all calls on the controller's loop.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "host-controller/common/irq_line.h"

namespace hc {

class PciFunction {
 public:
  // An EHCI function: serial bus / USB / EHCI, as QEMU's usb-ehci (8086:24cd) identifies it.
  static constexpr uint32_t kEhciClass = 0x0c0320;
  struct Identity {
    uint16_t vendor = 0x1b36;  // register-compatible with QEMU's qemu-xhci (1b36:000d): guests
    uint16_t device = 0x000d;  // apply the quirks they have for it; a VMM may set its own
    uint32_t class_code = 0x0c0330;  // serial bus / USB / xHCI
    uint8_t revision = 1;
    uint16_t subsystem_vendor = 0x1af4;
    uint16_t subsystem = 0x1100;
  };
  struct Layout {
    uint32_t bar_size = 0x4000;    // power of two
    uint16_t msix_vectors = 1;     // 0: no MSI-X capability (INTx only, as EHCI functions)
    uint32_t msix_table = 0x3000;  // offsets in the BAR
    uint32_t msix_pba = 0x3800;
  };
  static constexpr uint8_t kMsixCapability = 0x90;

  PciFunction(Identity identity, Layout layout, IrqLine& vm_irq);

  uint32_t config_read(uint32_t offset, unsigned size) const;
  void config_write(uint32_t offset, uint32_t value, unsigned size);

  // The BAR's MSI-X table and PBA: true when `offset` is theirs (the model's registers are not).
  bool msix_contains(uint32_t offset) const;
  uint64_t msix_read(uint32_t offset, unsigned size) const;
  void msix_write(uint32_t offset, uint64_t value, unsigned size);

  // What the model raises its interrupts on.
  IrqLine& device_irq() { return device_irq_; }

  // State a VMM (or a test) may look at.
  uint64_t bar_address() const;
  bool memory_enabled() const { return command_ & 0x2; }
  bool bus_master() const { return command_ & 0x4; }
  bool msix_enabled() const { return msix_control_ & 0x8000; }
  const Layout& layout() const { return layout_; }

 private:
  struct Entry {
    uint32_t address_lo = 0, address_hi = 0, data = 0, control = 1;  // masked at reset
  };
  // The model's side: routes to MSI-X or INTx.
  class DeviceIrq : public IrqLine {
   public:
    explicit DeviceIrq(PciFunction& f) : f_(f) {}
    void set_level(bool asserted) override;
    void message(uint16_t vector) override;
    bool message_signalled() const override;

   private:
    PciFunction& f_;
  };
  void deliver(uint16_t vector);
  void deliver_pending();
  bool masked(uint16_t vector) const;
  uint32_t read_dword(uint32_t offset) const;
  void write_dword(uint32_t offset, uint32_t value, uint32_t byte_mask);

  Identity identity_;
  Layout layout_;
  IrqLine& vm_irq_;
  DeviceIrq device_irq_{*this};
  uint16_t command_ = 0;
  uint16_t status_interrupt_ = 0;  // status bit 3: INTx asserted
  uint64_t bar_ = 0;               // as written (low bits masked to the size)
  uint8_t interrupt_line_ = 0;
  uint16_t msix_control_ = 0;  // enable (15), function mask (14)
  std::vector<Entry> table_;
  std::vector<bool> pending_;
  bool level_ = false;
};

}  // namespace hc
