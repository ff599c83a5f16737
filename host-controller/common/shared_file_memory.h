// hc::SharedFileGuestMemory: a VM's RAM as the VMM shares it through a file — QEMU's
// `-object memory-backend-file,id=ram,size=…,mem-path=FILE,share=on -machine memory-backend=ram`
// (or a memfd a VMM hands over). The file is mapped MAP_SHARED; guest-physical ranges map to file
// offsets by a region list (q35: RAM below the PCI hole at GPA 0, the rest above 4 GiB continues
// in the file). Every access is bounds-checked against the regions, as GuestMemory requires.
// Owned by whoever adds the VM function; used on the controller's loop while vCPUs run.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "host-controller/common/guest_memory.h"
#include "usb/core/error.h"

namespace hc {

class SharedFileGuestMemory : public GuestMemory {
 public:
  struct Region {
    uint64_t gpa;     // guest-physical start
    uint64_t size;    // bytes
    uint64_t offset;  // where it starts in the file
  };
  // Maps `path` (opened read-write) or `fd` (duplicated); every region must lie in the file.
  static usb::Result<std::unique_ptr<SharedFileGuestMemory>> open(const std::string& path,
                                                                  std::vector<Region> regions);
  static usb::Result<std::unique_ptr<SharedFileGuestMemory>> from_fd(int fd,
                                                                     std::vector<Region> regions);
  // The regions QEMU's q35 machine gives `ram_size` bytes of RAM: up to 2 GiB (or all of it
  // below 2.75 GiB) at GPA 0, the rest at 4 GiB.
  static std::vector<Region> q35_layout(uint64_t ram_size);

  ~SharedFileGuestMemory() override;
  SharedFileGuestMemory(const SharedFileGuestMemory&) = delete;
  SharedFileGuestMemory& operator=(const SharedFileGuestMemory&) = delete;

  bool read(uint64_t addr, std::span<uint8_t> out) const override;
  bool write(uint64_t addr, std::span<const uint8_t> in) override;

 private:
  SharedFileGuestMemory(uint8_t* base, size_t length, std::vector<Region> regions)
      : base_(base), length_(length), regions_(std::move(regions)) {}
  // Host pointer for [addr, addr + n) when one region holds it all.
  uint8_t* find(uint64_t addr, size_t n) const;

  uint8_t* base_;
  size_t length_;
  std::vector<Region> regions_;
};

}  // namespace hc
