// QtestTarget: QEMU's own xHCI (qemu-xhci, QEMU 7.2) as an XhciTarget, driven through QEMU's qtest
// protocol — the line protocol QEMU's own device tests use (docs/devel/qtest.rst): `readl` /
// `writel` for MMIO, `read` / `write` for guest RAM, `outl` / `inl` for PCI configuration
// through ports 0xcf8 / 0xcfc. QEMU runs with its vCPU stopped (-S), so nothing but this target
// programs the controller; the target assigns BAR 0 and enables memory space and bus mastering
// itself, as firmware would. The reference driver then runs the same programs against QEMU's
// controller and ours (the differential conformance tests).
//
// This QEMU is Debian's 7.2 build, which has no `qtest` accelerator: the machine is started with
// TCG and -S instead, and `clock_step` is not available (virtual time stands still; nothing the
// programs compare depends on it). Owned by one test; one thread.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "host-controller/common/guest_memory.h"
#include "tests/unit/host-controller/xhci_ref_driver.h"

namespace hc::xhci::testing {

class QtestTarget : public XhciTarget, public GuestMemory {
 public:
  static constexpr uint64_t kBar = 0xe0000000;
  // Starts qemu-system-x86_64 (q35, 256 MiB) with qemu-xhci and `extra_devices` (e.g.
  // "usb-kbd,bus=xhci.0,port=1"). ok() is false, with error() saying why, if it did not come up.
  explicit QtestTarget(const std::vector<std::string>& extra_devices);
  ~QtestTarget() override;
  QtestTarget(const QtestTarget&) = delete;
  QtestTarget& operator=(const QtestTarget&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  uint16_t pci_vendor() const { return vendor_; }
  uint16_t pci_device() const { return device_; }

  // XhciTarget
  uint32_t read32(uint32_t offset) override;
  void write32(uint32_t offset, uint32_t value) override;
  GuestMemory& memory() override { return *this; }
  void idle() override;

  // GuestMemory over qtest `read` / `write`.
  bool read(uint64_t addr, std::span<uint8_t> out) const override;
  bool write(uint64_t addr, std::span<const uint8_t> in) override;

  // One qtest command; its reply line ("OK ..." or "FAIL ..."), asynchronous "IRQ" lines
  // skipped. Empty when QEMU is gone.
  std::string command(const std::string& line) const;

 private:
  uint32_t pci_read(uint32_t dev, uint32_t reg) const;
  void pci_write(uint32_t dev, uint32_t reg, uint32_t value) const;

  pid_t pid_ = -1;
  int fd_ = -1;
  mutable std::string buffer_;
  std::string dir_;
  std::string error_;
  uint16_t vendor_ = 0, device_ = 0;
};

}  // namespace hc::xhci::testing
