#include "vmm-frontend/address_map.h"

namespace vusbd {

VmAddress AddressMap::make_address(uint32_t port) {
  return VmAddress{.busnum = kBus,
                   .devnum = port + 1,
                   .port = port,
                   .busid = std::to_string(kBus) + "-" + std::to_string(port)};
}

AddressMap::GlobalId AddressMap::add_device(std::string name) {
  loop_.check();
  const GlobalId id = next_id_++;
  devices_.emplace(id, std::move(name));
  return id;
}

void AddressMap::remove_device(GlobalId id) {
  loop_.check();
  for (auto& [vm, _] : spaces_) release(vm, id);
  devices_.erase(id);
}

const std::string* AddressMap::name(GlobalId id) const {
  auto it = devices_.find(id);
  return it == devices_.end() ? nullptr : &it->second;
}

usb::Result<VmAddress> AddressMap::assign(const std::string& vm, GlobalId id, uint32_t port) {
  loop_.check();
  if (!devices_.contains(id))
    return usb::Error::make(usb::Error::Code::kNotFound,
                            "no device with global id " + std::to_string(id));
  Space& s = spaces_[vm];
  if (auto it = s.port_of.find(id); it != s.port_of.end()) return make_address(it->second);
  if (port > kMaxPort)
    return usb::Error::make(usb::Error::Code::kInvalidArgument,
                            "port " + std::to_string(port) + " is beyond the virtual bus's " +
                                std::to_string(kMaxPort));
  if (port == 0) {
    for (uint32_t p = 1; p <= kMaxPort && port == 0; ++p)
      if (!s.by_port.contains(p)) port = p;
    if (port == 0)
      return usb::Error::make(usb::Error::Code::kBusy,
                              "vm '" + vm + "' has no free port on its virtual bus");
  } else if (auto it = s.by_port.find(port); it != s.by_port.end()) {
    return usb::Error::make(usb::Error::Code::kBusy, "vm '" + vm + "' port " +
                                                         std::to_string(port) + " holds '" +
                                                         devices_.at(it->second) + "'");
  }
  s.by_port[port] = id;
  s.port_of[id] = port;
  return make_address(port);
}

void AddressMap::release(const std::string& vm, GlobalId id) {
  loop_.check();
  auto sit = spaces_.find(vm);
  if (sit == spaces_.end()) return;
  auto it = sit->second.port_of.find(id);
  if (it == sit->second.port_of.end()) return;
  sit->second.by_port.erase(it->second);
  sit->second.port_of.erase(it);
}

std::optional<AddressMap::GlobalId> AddressMap::resolve_devid(const std::string& vm,
                                                              uint32_t devid) const {
  if ((devid >> 16) != kBus || (devid & 0xffff) < 2) return std::nullopt;
  auto sit = spaces_.find(vm);
  if (sit == spaces_.end()) return std::nullopt;
  auto it = sit->second.by_port.find((devid & 0xffff) - 1);
  if (it == sit->second.by_port.end()) return std::nullopt;
  return it->second;
}

std::optional<AddressMap::GlobalId> AddressMap::resolve_busid(const std::string& vm,
                                                              const std::string& busid) const {
  const std::string prefix = std::to_string(kBus) + "-";
  if (!busid.starts_with(prefix) || busid.size() == prefix.size() ||
      busid.size() > prefix.size() + 3)
    return std::nullopt;
  uint32_t port = 0;
  for (char c : busid.substr(prefix.size())) {
    if (c < '0' || c > '9') return std::nullopt;
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (port == 0 || port > kMaxPort || make_address(port).busid != busid) return std::nullopt;
  return resolve_devid(vm, make_address(port).devid());
}

std::optional<VmAddress> AddressMap::address(const std::string& vm, GlobalId id) const {
  auto sit = spaces_.find(vm);
  if (sit == spaces_.end()) return std::nullopt;
  auto it = sit->second.port_of.find(id);
  if (it == sit->second.port_of.end()) return std::nullopt;
  return make_address(it->second);
}

std::vector<std::pair<std::string, VmAddress>> AddressMap::holders(GlobalId id) const {
  std::vector<std::pair<std::string, VmAddress>> out;
  for (const auto& [vm, s] : spaces_)
    if (auto it = s.port_of.find(id); it != s.port_of.end())
      out.emplace_back(vm, make_address(it->second));
  return out;
}

}  // namespace vusbd
