// BufferPool: recycles transfer buffers so a busy connection does not allocate and free (and,
// with glibc trimming the heap top, page-fault in) a fresh 64 KiB buffer for every URB.
// Buffers come in power-of-two size classes from 4 KiB; the pool keeps at most `max_cached`
// bytes and frees the rest. Owned by one connection; single-threaded, on that connection's loop.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <vector>

#include "usb/core/transfer.h"

namespace usb {

class BufferPool {
 public:
  explicit BufferPool(size_t max_cached = 8u << 20) : max_cached_(max_cached) {}

  // A buffer of exactly `size` bytes (capacity rounded up to its class).
  TransferBuffer get(size_t size) {
    const size_t cls = class_of(size);
    if (cls < kClasses && !free_[cls].empty()) {
      TransferBuffer b = std::move(free_[cls].back());
      free_[cls].pop_back();
      cached_ -= b.capacity();
      b.resize(size);
      return b;
    }
    return cls < kClasses ? TransferBuffer(size, kMinSize << cls) : TransferBuffer(size);
  }

  // Takes a buffer back; keeps it if it belongs to a class and the cache has room.
  void put(TransferBuffer b) {
    const size_t cap = b.capacity();
    if (cap < kMinSize || !std::has_single_bit(cap)) return;
    const size_t cls = class_of(cap);
    if (cls >= kClasses || cached_ + cap > max_cached_) return;
    cached_ += cap;
    free_[cls].push_back(std::move(b));
  }

  size_t cached_bytes() const { return cached_; }

 private:
  static constexpr size_t kMinSize = 4096;
  static constexpr size_t kClasses = 13;  // 4 KiB .. 16 MiB
  static size_t class_of(size_t size) {
    if (size <= kMinSize) return 0;
    return static_cast<size_t>(std::bit_width(size - 1)) - 12;  // ceil(log2(size)) - log2(4096)
  }

  size_t max_cached_;
  size_t cached_ = 0;
  std::array<std::vector<TransferBuffer>, kClasses> free_;
};

}  // namespace usb
