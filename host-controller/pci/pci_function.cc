#include "host-controller/pci/pci_function.h"

#include <spdlog/spdlog.h>

namespace hc {

namespace {

constexpr uint16_t kCmdMemory = 1u << 1, kCmdBusMaster = 1u << 2, kCmdIntxDisable = 1u << 10;
constexpr uint16_t kCmdWritable = kCmdMemory | kCmdBusMaster | kCmdIntxDisable;
constexpr uint16_t kStatusInterrupt = 1u << 3, kStatusCapabilities = 1u << 4;
constexpr uint16_t kMsixEnable = 1u << 15, kMsixFunctionMask = 1u << 14;
constexpr uint32_t kBarMemory64 = 0x4;  // bits 2:1 = 10b: 64-bit memory, not prefetchable

}  // namespace

PciFunction::PciFunction(Identity identity, Layout layout, IrqLine& vm_irq)
    : identity_(identity),
      layout_(layout),
      vm_irq_(vm_irq),
      table_(layout.msix_vectors),
      pending_(layout.msix_vectors, false) {}

uint64_t PciFunction::bar_address() const {
  return bar_ & ~uint64_t{layout_.bar_size - 1};
}

uint32_t PciFunction::read_dword(uint32_t offset) const {
  const bool msix = layout_.msix_vectors > 0;
  if (!msix && offset >= kMsixCapability && offset < kMsixCapability + 12) return 0;
  switch (offset) {
    case 0x00:
      return identity_.vendor | (uint32_t{identity_.device} << 16);
    case 0x04:
      return command_ |
             (uint32_t{static_cast<uint16_t>((msix ? kStatusCapabilities : 0) | status_interrupt_)}
              << 16);
    case 0x08:
      return identity_.revision | (identity_.class_code << 8);
    case 0x0c:
      return 0;  // cache line size, latency timer, header type 0, BIST
    case 0x10:
      return static_cast<uint32_t>(bar_address()) | kBarMemory64;
    case 0x14:
      return static_cast<uint32_t>(bar_address() >> 32);
    case 0x2c:
      return identity_.subsystem_vendor | (uint32_t{identity_.subsystem} << 16);
    case 0x34:
      return msix ? kMsixCapability : 0;
    case 0x3c:
      return interrupt_line_ | (1u << 8);  // INTA#
    case 0x60:
      // SBRN (USB 3.0 / 2.0) and FLADJ (0x20: 60000 clocks per frame, EHCI 2.1.5).
      return identity_.class_code == 0x0c0330 ? 0x2030u : 0x2020u;
    case kMsixCapability:
      return 0x11u |
             (uint32_t{static_cast<uint16_t>(msix_control_ | (layout_.msix_vectors - 1))} << 16);
    case kMsixCapability + 4:
      return layout_.msix_table;  // BIR 0
    case kMsixCapability + 8:
      return layout_.msix_pba;
    default:
      return 0;
  }
}

uint32_t PciFunction::config_read(uint32_t offset, unsigned size) const {
  if (offset >= 4096 || (size != 1 && size != 2 && size != 4)) return 0xffffffff;
  const uint32_t v = read_dword(offset & ~3u) >> ((offset & 3u) * 8);
  return size == 4 ? v : v & ((1u << (size * 8)) - 1);
}

void PciFunction::config_write(uint32_t offset, uint32_t value, unsigned size) {
  if (offset >= 4096 || (size != 1 && size != 2 && size != 4) || (offset & (size - 1))) return;
  const unsigned shift = (offset & 3u) * 8;
  const uint32_t mask = (size == 4 ? 0xffffffffu : ((1u << (size * 8)) - 1)) << shift;
  write_dword(offset & ~3u, value << shift, mask);
}

void PciFunction::write_dword(uint32_t offset, uint32_t value, uint32_t mask) {
  auto merge = [&](uint32_t old) { return (old & ~mask) | (value & mask); };
  switch (offset) {
    case 0x04: {
      const bool was_intx = !(command_ & kCmdIntxDisable);
      command_ = static_cast<uint16_t>(merge(command_) & kCmdWritable);
      deliver_pending();  // messages held while bus mastering was off
      if (was_intx != !(command_ & kCmdIntxDisable) && level_ && !msix_enabled())
        vm_irq_.set_level(!(command_ & kCmdIntxDisable));
      return;
    }
    case 0x10: {
      const uint32_t lo = merge(static_cast<uint32_t>(bar_)) & ~(layout_.bar_size - 1);
      bar_ = (bar_ & ~uint64_t{0xffffffff}) | lo;
      return;
    }
    case 0x14:
      bar_ = (bar_ & 0xffffffffu) | (uint64_t{merge(static_cast<uint32_t>(bar_ >> 32))} << 32);
      return;
    case 0x3c:
      interrupt_line_ = static_cast<uint8_t>(merge(interrupt_line_));
      return;
    case kMsixCapability: {
      if (layout_.msix_vectors == 0) return;  // no MSI-X capability
      const bool was = msix_enabled();
      const uint32_t old = uint32_t{msix_control_} << 16;
      msix_control_ = static_cast<uint16_t>((merge(old) >> 16) & (kMsixEnable | kMsixFunctionMask));
      if (was != msix_enabled()) {
        spdlog::debug("pci {:04x}:{:04x}: MSI-X {}", identity_.vendor, identity_.device,
                      msix_enabled() ? "enabled" : "disabled");
        // The INTx line follows: deasserted under MSI-X, the model's level again without it.
        if (level_ && !(command_ & kCmdIntxDisable)) vm_irq_.set_level(!msix_enabled());
      }
      deliver_pending();
      return;
    }
    default:
      return;  // read-only or not implemented: ignored, as reserved registers are
  }
}

bool PciFunction::msix_contains(uint32_t offset) const {
  if (layout_.msix_vectors == 0) return false;
  const uint32_t table_end = layout_.msix_table + 16u * layout_.msix_vectors;
  const uint32_t pba_end = layout_.msix_pba + 8u * ((layout_.msix_vectors + 63) / 64);
  return (offset >= layout_.msix_table && offset < table_end) ||
         (offset >= layout_.msix_pba && offset < pba_end);
}

uint64_t PciFunction::msix_read(uint32_t offset, unsigned size) const {
  if (size == 8) return msix_read(offset, 4) | (msix_read(offset + 4, 4) << 32);
  if (!msix_contains(offset)) return 0;  // (the second half of a split access, say)
  uint32_t v = 0;
  const uint32_t base = offset & ~3u;
  if (base >= layout_.msix_pba) {
    const uint32_t first = (base - layout_.msix_pba) * 8;  // vector of bit 0 of this dword
    for (uint32_t b = 0; b < 32 && first + b < pending_.size(); ++b)
      if (pending_[first + b]) v |= 1u << b;
  } else {
    const uint32_t i = (base - layout_.msix_table) / 16;
    if (i >= table_.size()) return 0;
    const Entry& e = table_[i];
    const uint32_t fields[4] = {e.address_lo, e.address_hi, e.data, e.control};
    v = fields[(base - layout_.msix_table) % 16 / 4];
  }
  if (size >= 4) return v;
  return (v >> ((offset & 3u) * 8)) & ((1u << (size * 8)) - 1);
}

void PciFunction::msix_write(uint32_t offset, uint64_t value, unsigned size) {
  if (size == 8) {
    msix_write(offset, value & 0xffffffffu, 4);
    msix_write(offset + 4, value >> 32, 4);
    return;
  }
  if (size != 4 || (offset & 3u) || !msix_contains(offset) || offset >= layout_.msix_pba ||
      offset < layout_.msix_table)
    return;  // outside the table (the PBA is read-only)
  const uint32_t i = (offset - layout_.msix_table) / 16;
  if (i >= table_.size()) return;
  Entry& e = table_[i];
  const auto v = static_cast<uint32_t>(value);
  switch ((offset - layout_.msix_table) % 16 / 4) {
    case 0:
      e.address_lo = v & ~3u;
      break;
    case 1:
      e.address_hi = v;
      break;
    case 2:
      e.data = v;
      break;
    default:
      e.control = v & 1u;
      deliver_pending();
      break;
  }
}

bool PciFunction::masked(uint16_t vector) const {
  return (msix_control_ & kMsixFunctionMask) || (table_[vector].control & 1u);
}

void PciFunction::deliver(uint16_t vector) {
  if (vector >= table_.size()) vector = 0;
  if (masked(vector) || !bus_master()) {
    pending_[vector] = true;  // sent when unmasked (PCI 3.0 6.8.2.9) and allowed to write
    return;
  }
  const Entry& e = table_[vector];
  vm_irq_.msi((uint64_t{e.address_hi} << 32) | e.address_lo, e.data);
}

void PciFunction::deliver_pending() {
  if (!msix_enabled()) return;
  for (uint16_t v = 0; v < pending_.size(); ++v)
    if (pending_[v] && !masked(v)) {
      pending_[v] = false;
      deliver(v);
    }
}

void PciFunction::DeviceIrq::set_level(bool asserted) {
  f_.level_ = asserted;
  f_.status_interrupt_ = asserted ? kStatusInterrupt : 0;
  if (!f_.msix_enabled() && !(f_.command_ & kCmdIntxDisable)) f_.vm_irq_.set_level(asserted);
}

void PciFunction::DeviceIrq::message(uint16_t vector) {
  if (f_.msix_enabled()) f_.deliver(vector);
}

bool PciFunction::DeviceIrq::message_signalled() const {
  return f_.msix_enabled();
}

}  // namespace hc
