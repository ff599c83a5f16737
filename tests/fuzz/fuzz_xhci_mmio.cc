// libFuzzer: a hostile VM programming its xHCI function — register writes and reads in any order
// over guest memory the input fills (rings, segment tables, contexts), a Gadget Zero on port 1.
// Every sequence ends, nothing is read or written outside guest memory, no crash.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "devices/emulated/gadget_zero.h"
#include "host-controller/xhci/xhci_function.h"

namespace {
struct NullIrq : hc::IrqLine {
  void set_level(bool) override {}
  void message(uint16_t) override {}
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t mem_bytes = std::min<size_t>(data[0] * 64u, size - 1);
  hc::InMemoryGuestMemory mem(0x8000);
  (void)mem.write(0, {data + 1, mem_bytes});
  NullIrq irq;
  std::chrono::steady_clock::time_point now{};
  hc::xhci::XhciFunction hc(mem, irq, [&] { return now; });
  devices::GadgetZero gz;
  (void)hc.attach(1, gz);
  // The rest: operations of 7 bytes — kind, 16-bit offset, 32-bit value.
  for (size_t i = 1 + mem_bytes; i + 7 <= size; i += 7) {
    const uint8_t kind = data[i];
    const uint32_t offset = (data[i + 1] | (data[i + 2] << 8)) % hc::xhci::XhciFunction::kBarSize;
    uint32_t value;
    std::memcpy(&value, data + i + 3, 4);
    switch (kind % 4) {
      case 0:
      case 1:
        hc.mmio_write(offset & ~3u, value, 4);
        break;
      case 2:
        (void)hc.mmio_read(offset, 1u << (kind / 4 % 4));
        break;
      default:
        if (value & 1)
          hc.detach(1);
        else
          (void)hc.attach(1, gz);
        now += std::chrono::microseconds(value % 1000);
        break;
    }
  }
  hc.detach(1);
  return 0;
}
