// ExportTable: the devices a USB/IP server exports, by bus id, and who has imported each one —
// vusb-stub's devices, one VM's devices in vusbd, a device process's one device. Observes
// DeviceProviders so hotplugged devices appear and vanished ones leave the list. Owned by the
// program that serves it; lives on that program's loop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "usb/core/claim.h"
#include "usb/core/device_provider.h"
#include "usb/core/loop_checker.h"
#include "usb/wire/usbip_codec.h"

namespace usb::usbip {

class ExportAccess;

class ExportTable : public usb::DeviceProvider::Observer {
 public:
  // Told when the device it imported is gone; it must finish (its in-flight URBs have already
  // completed with kNoDevice) and drop the device pointer.
  class Importer {
   public:
    virtual ~Importer() = default;
    virtual void on_device_gone() = 0;
  };

  struct Entry {
    std::string busid;
    usb::Device* device = nullptr;  // owned by its provider
    Importer* importer = nullptr;   // non-owning; null when free
    usb::Claim* claim = nullptr;    // the device owner's say (optional, non-owning)
    uint32_t busnum = 0;
    uint32_t devnum = 0;
  };

  // Optional fixed bus ids for devices that do not carry one (emulated devices): a device whose
  // location().busid is empty gets the next free "<virtual_bus>-<n>".
  explicit ExportTable(uint32_t virtual_bus = 1) : virtual_bus_(virtual_bus) {}

  // Adds a device; returns its bus id. A busid already taken gets a suffix-free error.
  usb::Result<std::string> add(usb::Device& device, usb::Claim* claim = nullptr);
  // Removes a device (unplug). Its importer, if any, is told. False if it was not exported.
  bool remove(usb::Device& device);

  // DeviceProvider::Observer
  void on_device_added(usb::Device& device) override;
  void on_device_removed(usb::Device& device) override;

  // OP_REP_DEVLIST entries: every exported device (imported ones too, as usbipd lists them) that
  // `visible` (when given) lets through.
  std::vector<usb::wire::usbip::DevlistEntry> devlist(
      const std::function<bool(const Entry&)>& visible = {}) const;

  // Who may list and import what (export_access.h); null: every peer the listener let in.
  void set_access(std::shared_ptr<const ExportAccess> access) { access_ = std::move(access); }
  const ExportAccess* access() const { return access_.get(); }

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
  std::shared_ptr<const ExportAccess> access_;
  usb::LoopChecker loop_;
};

}  // namespace usb::usbip
