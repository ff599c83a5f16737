// hc::GuestMemory: a VM's physical memory as a host-controller model sees it — the only way the
// models touch rings, contexts and data buffers. Every access is bounds-checked: a guest pointer
// outside its RAM is a failed read/write (the controller answers with the error the spec names,
// never touches host memory it does not own). InMemoryGuestMemory is the test implementation
// (and the one the reference driver in the tests programs); SharedFileGuestMemory maps a file
// such as QEMU's `memory-backend-file,share=on` provides.
// Owned by whoever creates the VM function; used on the controller's loop.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

namespace hc {

class GuestMemory {
 public:
  virtual ~GuestMemory() = default;
  // Copies `out.size()` bytes from guest-physical `addr`; false (and `out` untouched) when any
  // byte lies outside guest memory.
  [[nodiscard]] virtual bool read(uint64_t addr, std::span<uint8_t> out) const = 0;
  [[nodiscard]] virtual bool write(uint64_t addr, std::span<const uint8_t> in) = 0;

  // A trivially copyable object (a TRB, a context) at `addr`, little-endian as the guest wrote it.
  template <typename T>
  [[nodiscard]] bool read_obj(uint64_t addr, T& out) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return read(addr, {reinterpret_cast<uint8_t*>(&out), sizeof(T)});
  }
  template <typename T>
  [[nodiscard]] bool write_obj(uint64_t addr, const T& in) {
    static_assert(std::is_trivially_copyable_v<T>);
    return write(addr, {reinterpret_cast<const uint8_t*>(&in), sizeof(T)});
  }
};

// Guest RAM as one region [base, base + size) in a host vector.
class InMemoryGuestMemory : public GuestMemory {
 public:
  explicit InMemoryGuestMemory(size_t size, uint64_t base = 0) : base_(base), ram_(size, 0) {}
  bool read(uint64_t addr, std::span<uint8_t> out) const override {
    if (!contains(addr, out.size())) return false;
    if (!out.empty()) std::memcpy(out.data(), ram_.data() + (addr - base_), out.size());
    return true;
  }
  bool write(uint64_t addr, std::span<const uint8_t> in) override {
    if (!contains(addr, in.size())) return false;
    if (!in.empty()) std::memcpy(ram_.data() + (addr - base_), in.data(), in.size());
    return true;
  }
  uint64_t base() const { return base_; }
  size_t size() const { return ram_.size(); }

 private:
  bool contains(uint64_t addr, size_t n) const {
    // No overflow: addr - base_ is checked before adding n.
    return addr >= base_ && addr - base_ <= ram_.size() && n <= ram_.size() - (addr - base_);
  }
  uint64_t base_;
  std::vector<uint8_t> ram_;
};

}  // namespace hc
