// ExportTable: the devices vusb-stub exports, by USB/IP bus id, and who has imported each one.
// Owned by the stub's main; observes every DeviceProvider so hotplugged devices appear and
// vanished ones leave the list. Lives on the stub's loop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "usb/core/device_provider.h"
#include "usb/core/loop_checker.h"
#include "usb/wire/usbip_codec.h"

namespace stub {

class ExportTable : public usb::DeviceProvider::Observer {
 public:
  // Told when the device it imported is gone; it must finish (its in-flight URBs have already
  // completed with kNoDevice) and drop the device pointer.
  class Importer {
   public:
    virtual ~Importer() = default;
    virtual void on_device_gone() = 0;
  };

  // Lets the owner of a device refuse or track imports beyond this table (vusbd: a device in
  // exclusive mode is exported to several VMs' tables but held by one VM at a time).
  class ClaimGuard {
   public:
    virtual ~ClaimGuard() = default;
    virtual bool try_acquire() = 0;
    virtual void release() = 0;
  };

  struct Entry {
    std::string busid;
    usb::Device* device = nullptr;  // owned by its provider
    Importer* importer = nullptr;   // non-owning; null when free
    ClaimGuard* guard = nullptr;    // optional, non-owning
    uint32_t busnum = 0;
    uint32_t devnum = 0;
  };

  // Optional fixed bus ids for devices that do not carry one (emulated devices): a device whose
  // location().busid is empty gets the next free "<virtual_bus>-<n>".
  explicit ExportTable(uint32_t virtual_bus = 1) : virtual_bus_(virtual_bus) {}

  // Adds a device; returns its bus id. A busid already taken gets a suffix-free error.
  usb::Result<std::string> add(usb::Device& device, ClaimGuard* guard = nullptr);
  // Removes a device (unplug). Its importer, if any, is told.
  void remove(usb::Device& device);

  // DeviceProvider::Observer
  void on_device_added(usb::Device& device) override;
  void on_device_removed(usb::Device& device) override;

  // OP_REP_DEVLIST entries: every exported device (imported ones too, as usbipd lists them).
  std::vector<usb::wire::usbip::DevlistEntry> devlist() const;

  // Claims a device for an importer. Errors map to op status codes: not found → kStNoDev,
  // already imported → kStDevBusy.
  struct ClaimResult {
    uint32_t status = usb::wire::usbip::kStOk;
    const Entry* entry = nullptr;
  };
  ClaimResult claim(const std::string& busid, Importer& importer);
  void release(const std::string& busid, Importer& importer);

  const Entry* find(const std::string& busid) const;
  std::vector<std::string> busids() const;
  size_t size() const { return entries_.size(); }

  // Builds the USB/IP device record for an entry (also used by the IMPORT reply).
  static usb::wire::usbip::DeviceRecord record_for(const Entry& entry);

 private:
  std::string next_virtual_busid();

  uint32_t virtual_bus_;
  uint32_t next_port_ = 1;
  std::map<std::string, Entry> entries_;
  usb::LoopChecker loop_;
};

}  // namespace stub
