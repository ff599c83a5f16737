// libFuzzer: a hostile VM's EHCI function — register writes and reads in any order, schedule
// passes and time, plug/unplug of a Gadget Zero — over guest memory the input fills: queue heads,
// qTDs, link pointers and buffers the async schedule walker decodes. Every pass ends (bounded
// walks), nothing is read or written outside guest memory, no crash.
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "devices/emulated/gadget_zero.h"
#include "host-controller/ehci/ehci_function.h"

namespace {
struct NullIrq : hc::IrqLine {
  void set_level(bool) override {}
  void message(uint16_t) override {}
};
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t mem_bytes = std::min<size_t>(data[0] * 64u, size - 1);
  hc::InMemoryGuestMemory mem(0x8000);
  (void)mem.write(0, {data + 1, mem_bytes});
  NullIrq irq;
  std::chrono::steady_clock::time_point now{};
  devices::GadgetZero gz;
  {
    hc::ehci::EhciFunction ehci(mem, irq, [&] { return now; });
    (void)ehci.attach(1, gz);
    // Operations of 7 bytes — kind, 16-bit offset, 32-bit value. Values that look like guest
    // pointers land inside the 32 KiB of RAM more often than not.
    for (size_t i = 1 + mem_bytes; i + 7 <= size; i += 7) {
      const uint8_t kind = data[i];
      const uint32_t offset = (data[i + 1] | (data[i + 2] << 8)) % hc::ehci::EhciFunction::kBarSize;
      uint32_t value;
      std::memcpy(&value, data + i + 3, 4);
      switch (kind % 5) {
        case 0:
        case 1:
          ehci.mmio_write(offset & ~3u, (kind & 0x80) ? value & 0x7fff : value, 4);
          break;
        case 2:
          (void)ehci.mmio_read(offset, 1u << (kind / 5 % 4));
          break;
        case 3:
          if (value & 1)
            ehci.detach(1);
          else
            (void)ehci.attach(1, gz);
          break;
        default:
          now += std::chrono::microseconds(value % 5000);
          ehci.poll();
          break;
      }
    }
    ehci.detach(1);
  }
  return 0;
}
