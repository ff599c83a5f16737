// libFuzzer: a hostile VM programming its controller function — BAR writes and reads in any order
// (xHCI registers, the MSI-X table and PBA), PCI configuration writes, plug/unplug and time —
// over guest memory the input fills (rings, segment tables, contexts), with a Gadget Zero on
// port 1, through hc::Controller as a VMM drives it (its fair-queue pump and moderation timers
// run when the input says so). Every sequence ends, nothing is read or written outside guest
// memory, no crash.
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>

#include "devices/emulated/gadget_zero.h"
#include "host-controller/controller.h"

namespace {
struct NullIrq : hc::IrqLine {
  void set_level(bool) override {}
  void message(uint16_t) override {}
  void msi(uint64_t, uint32_t) override {}
};
}  // namespace

// Log lines are the product's, not the fuzzer's: formatting them would be most of each run.
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
  std::deque<std::function<void()>> tasks;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> timers;
  auto run = [&] {
    for (int n = 0; n < 64 && !tasks.empty(); ++n) {
      auto f = std::move(tasks.front());
      tasks.pop_front();
      f();
    }
    while (!timers.empty() && timers.begin()->first <= now) {
      auto f = std::move(timers.begin()->second);
      timers.erase(timers.begin());
      f();
    }
  };
  devices::GadgetZero gz;
  {
    hc::Controller c([&](std::function<void()> f) { tasks.push_back(std::move(f)); },
                     [&] { return now; }, hc::Controller::Options{},
                     [&](std::chrono::nanoseconds d, std::function<void()> f) {
                       timers.emplace(now + d, std::move(f));
                     });
    const auto vm = c.add_vm("fuzz", mem, irq);
    (void)c.xhci(vm)->attach(1, gz);
    // The rest: operations of 7 bytes — kind, 16-bit offset, 32-bit value.
    for (size_t i = 1 + mem_bytes; i + 7 <= size; i += 7) {
      const uint8_t kind = data[i];
      const uint32_t offset = (data[i + 1] | (data[i + 2] << 8)) % hc::xhci::XhciFunction::kBarSize;
      uint32_t value;
      std::memcpy(&value, data + i + 3, 4);
      switch (kind % 6) {
        case 0:
        case 1:
          c.mmio_write(vm, offset & ~3u, value, 4);
          break;
        case 2:
          (void)c.mmio_read(vm, offset, 1u << (kind / 6 % 4));
          break;
        case 3:
          if (value & 1)
            c.xhci(vm)->detach(1);
          else
            (void)c.xhci(vm)->attach(1, gz);
          now += std::chrono::microseconds(value % 1000);
          break;
        case 4: {
          const unsigned sz = 1u << (kind / 6 % 3);
          c.config_write(vm, offset % 256, value, sz);
          (void)c.config_read(vm, offset % 256, sz);
          break;
        }
        default:
          run();
          break;
      }
    }
    run();
    c.xhci(vm)->detach(1);
    c.remove_vm(vm);
  }
  return 0;
}
