// libFuzzer: the xHCI ring walker over guest memory the input fills (a hostile guest's rings):
// every walk ends — with TRBs, or with a stop reason — within its bounds, and never reads outside
// guest memory (ASan would see it).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "host-controller/xhci/ring.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 9) return 0;
  uint64_t start = 0;
  std::memcpy(&start, data, 8);
  const bool cycle = data[8] & 1;
  const bool whole_tds = data[8] & 2;
  hc::InMemoryGuestMemory mem(4096, 0);
  (void)mem.write(0, {data + 9, std::min<size_t>(size - 9, 4096)});
  // Keep most starts inside memory so the walk gets somewhere.
  hc::xhci::Ring ring(start % 8192, cycle);
  for (int i = 0; i < 64; ++i) {
    if (whole_tds) {
      auto td = ring.pop_td(mem);
      if (!td) break;
      if (td->empty() || td->size() > hc::xhci::Ring::kMaxTdTrbs) __builtin_trap();
    } else if (!ring.pop(mem)) {
      break;
    }
  }
  return 0;
}
