// hc::IrqLine: how a controller model interrupts one VM — a level-triggered INTx line or MSI-X
// vectors; the VMM (or a test) implements it. Each VM function has its own. Called on the
// controller's loop; an implementation forwards to the VMM (e.g. an irqfd write).
#pragma once

#include <cstdint>

namespace hc {

class IrqLine {
 public:
  virtual ~IrqLine() = default;
  // INTx: the line's level (asserted while an enabled interrupter has an interrupt pending).
  virtual void set_level(bool asserted) = 0;
  // MSI/MSI-X: one message for `vector` (the interrupter number, mapped by the VMM's table).
  virtual void message(uint16_t vector) = 0;
};

}  // namespace hc
