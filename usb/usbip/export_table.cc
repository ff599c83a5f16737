#include "usb/usbip/export_table.h"

#include <spdlog/spdlog.h>

#include <charconv>

namespace usb::usbip {

namespace wire = usb::wire::usbip;

namespace {

// "B-P.P.P" → busnum B; devnum is not derivable from the busid, so callers supply it.
uint32_t busnum_of(const std::string& busid) {
  uint32_t bus = 0;
  std::from_chars(busid.data(), busid.data() + busid.size(), bus);
  return bus;
}

}  // namespace

std::string ExportTable::next_virtual_busid() {
  for (;;) {
    std::string id = std::to_string(virtual_bus_) + "-" + std::to_string(next_port_++);
    if (!entries_.contains(id)) return id;
  }
}

usb::Result<std::string> ExportTable::add(usb::Device& device, usb::Claim* claim) {
  loop_.check();
  const usb::DeviceLocation& loc = device.location();
  std::string busid = loc.busid.empty() ? next_virtual_busid() : loc.busid;
  if (busid.size() >= wire::kBusIdSize)
    return usb::Error::make(usb::Error::Code::kInvalidArgument,
                            "bus id '" + busid + "' is longer than 31 bytes");
  if (entries_.contains(busid))
    return usb::Error::make(usb::Error::Code::kBusy, "bus id '" + busid + "' is already exported");
  Entry e;
  e.busid = busid;
  e.device = &device;
  e.claim = claim;
  e.busnum = loc.busnum ? loc.busnum : busnum_of(busid);
  if (loc.devnum) {
    e.devnum = loc.devnum;
  } else {
    // Unique per bus: one more than the highest devnum on that bus.
    uint32_t max = 1;
    for (auto& [_, other] : entries_)
      if (other.busnum == e.busnum) max = std::max(max, other.devnum);
    e.devnum = max + 1;
  }
  entries_.emplace(busid, e);
  spdlog::info("export: {} {:04x}:{:04x} ({} speed)", busid, device.descriptors().device.vendor_id,
               device.descriptors().device.product_id, usb::to_string(device.speed()));
  return busid;
}

bool ExportTable::remove(usb::Device& device) {
  loop_.check();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->second.device != &device) continue;
    Importer* importer = it->second.importer;
    if (importer && it->second.claim) it->second.claim->release();
    spdlog::info("export: {} removed{}", it->first, importer ? " while imported" : "");
    entries_.erase(it);
    if (importer) importer->on_device_gone();
    return true;
  }
  return false;
}

void ExportTable::on_device_added(usb::Device& device) {
  if (auto r = add(device); !r) spdlog::warn("export: device not exported: {}", r.error().message);
}

void ExportTable::on_device_removed(usb::Device& device) {
  remove(device);
}

wire::DeviceRecord ExportTable::record_for(const Entry& e) {
  const usb::Device& d = *e.device;
  const auto& dd = d.descriptors().device;
  wire::DeviceRecord r;
  r.path = d.location().path.empty() ? "/vusb/" + e.busid : d.location().path;
  if (r.path.size() >= wire::kPathSize) r.path.resize(wire::kPathSize - 1);
  r.busid = e.busid;
  r.busnum = e.busnum;
  r.devnum = e.devnum;
  r.speed = static_cast<uint32_t>(d.speed());
  r.id_vendor = dd.vendor_id;
  r.id_product = dd.product_id;
  r.bcd_device = dd.bcd_device;
  r.device_class = dd.device_class;
  r.device_subclass = dd.device_subclass;
  r.device_protocol = dd.device_protocol;
  r.configuration_value = d.active_configuration();
  r.num_configurations = dd.num_configurations;
  const usb::ConfigurationDescriptor* cfg = d.active_config_descriptor();
  r.num_interfaces = cfg ? cfg->num_interfaces : 0;
  return r;
}

std::vector<wire::DevlistEntry> ExportTable::devlist(
    const std::function<bool(const Entry&)>& visible) const {
  loop_.check();
  std::vector<wire::DevlistEntry> out;
  for (const auto& [_, e] : entries_) {
    if (visible && !visible(e)) continue;
    wire::DevlistEntry de;
    de.device = record_for(e);
    // One record per interface number (alternate setting 0), as usbipd reports them.
    if (const usb::ConfigurationDescriptor* cfg = e.device->active_config_descriptor()) {
      for (const auto& intf : cfg->interfaces)
        if (intf.alternate == 0)
          de.interfaces.push_back(
              {intf.interface_class, intf.interface_subclass, intf.interface_protocol});
    }
    de.device.num_interfaces = static_cast<uint8_t>(de.interfaces.size());
    out.push_back(std::move(de));
  }
  return out;
}

ExportTable::ClaimResult ExportTable::claim(const std::string& busid, Importer& importer) {
  loop_.check();
  auto it = entries_.find(busid);
  if (it == entries_.end()) return {wire::kStNoDev, nullptr};
  if (it->second.importer) return {wire::kStDevBusy, nullptr};
  if (!it->second.device->connected()) return {wire::kStDevErr, nullptr};
  if (it->second.claim && !it->second.claim->try_acquire()) return {wire::kStDevBusy, nullptr};
  it->second.importer = &importer;
  return {wire::kStOk, &it->second};
}

void ExportTable::release(const std::string& busid, Importer& importer) {
  loop_.check();
  auto it = entries_.find(busid);
  if (it != entries_.end() && it->second.importer == &importer) {
    it->second.importer = nullptr;
    if (it->second.claim) it->second.claim->release();
  }
}

const ExportTable::Entry* ExportTable::find(const std::string& busid) const {
  auto it = entries_.find(busid);
  return it == entries_.end() ? nullptr : &it->second;
}

std::vector<std::string> ExportTable::busids() const {
  std::vector<std::string> out;
  for (const auto& [id, _] : entries_) out.push_back(id);
  return out;
}

}  // namespace usb::usbip
