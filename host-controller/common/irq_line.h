// hc::IrqLine: how a controller model interrupts one VM — a level-triggered INTx line or message
// signalled interrupts; the VMM (or a test) implements it. Each VM function has its own. Called
// on the controller's loop; an implementation forwards to the VMM (e.g. an irqfd write).
//
// Two ways to deliver messages: message(vector) when the VMM keeps the MSI-X table itself, or
// msi(address, data) when the model's PciFunction does (it then calls msi() with what the guest
// programmed into the table).
#pragma once

#include <cstdint>

namespace hc {

class IrqLine {
 public:
  virtual ~IrqLine() = default;
  // INTx: the line's level (asserted while an enabled interrupter has an interrupt pending).
  virtual void set_level(bool asserted) = 0;
  // A message for interrupter `vector`.
  virtual void message(uint16_t vector) = 0;
  // The MSI/MSI-X write the guest programmed (PciFunction's table).
  virtual void msi(uint64_t /*address*/, uint32_t /*data*/) {}
  // True while interrupts go out as messages (MSI-X enabled): the model then sends one message
  // per interrupt and clears its Interrupt Pending flag itself (xHCI 4.17.1).
  virtual bool message_signalled() const { return false; }
};

}  // namespace hc
