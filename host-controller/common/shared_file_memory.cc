#include "host-controller/common/shared_file_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace hc {

usb::Result<std::unique_ptr<SharedFileGuestMemory>> SharedFileGuestMemory::open(
    const std::string& path, std::vector<Region> regions) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return usb::Error::make(usb::Error::Code::kNotFound, path + ": " + std::strerror(errno));
  auto r = from_fd(fd, std::move(regions));
  ::close(fd);
  return r;
}

usb::Result<std::unique_ptr<SharedFileGuestMemory>> SharedFileGuestMemory::from_fd(
    int fd, std::vector<Region> regions) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_size <= 0)
    return usb::Error::make(usb::Error::Code::kInvalidArgument,
                            "guest RAM file is empty or unreadable");
  const auto length = static_cast<uint64_t>(st.st_size);
  for (const Region& r : regions)
    if (r.size == 0 || r.offset > length || r.size > length - r.offset || r.gpa + r.size < r.gpa)
      return usb::Error::make(usb::Error::Code::kInvalidArgument,
                              "a RAM region lies outside the file");
  void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return usb::Error::make(usb::Error::Code::kIo,
                            std::string("mmap of guest RAM: ") + std::strerror(errno));
  return std::unique_ptr<SharedFileGuestMemory>(
      new SharedFileGuestMemory(static_cast<uint8_t*>(p), length, std::move(regions)));
}

std::vector<SharedFileGuestMemory::Region> SharedFileGuestMemory::q35_layout(uint64_t ram_size) {
  const uint64_t lowmem = ram_size >= 0xb0000000ull ? 0x80000000ull : ram_size;
  std::vector<Region> out{{0, lowmem, 0}};
  if (ram_size > lowmem) out.push_back({0x100000000ull, ram_size - lowmem, lowmem});
  return out;
}

SharedFileGuestMemory::~SharedFileGuestMemory() {
  munmap(base_, length_);
}

uint8_t* SharedFileGuestMemory::find(uint64_t addr, size_t n) const {
  for (const Region& r : regions_)
    if (addr >= r.gpa && addr - r.gpa <= r.size && n <= r.size - (addr - r.gpa))
      return base_ + r.offset + (addr - r.gpa);
  return nullptr;
}

bool SharedFileGuestMemory::read(uint64_t addr, std::span<uint8_t> out) const {
  const uint8_t* p = find(addr, out.size());
  if (!p) return false;
  if (!out.empty()) std::memcpy(out.data(), p, out.size());
  return true;
}

bool SharedFileGuestMemory::write(uint64_t addr, std::span<const uint8_t> in) {
  uint8_t* p = find(addr, in.size());
  if (!p) return false;
  if (!in.empty()) std::memcpy(p, in.data(), in.size());
  return true;
}

}  // namespace hc
