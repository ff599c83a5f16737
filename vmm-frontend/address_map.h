// AddressMap: device-ID remapping (seed 002). Every device vusbd serves has one system-unique
// global id; every VM has an address space of its own — one virtual bus (bus 1), ports 1..126,
// USB/IP bus ids "1-PORT" and devids (busnum << 16 | devnum, devnum = PORT + 1) — in which it
// sees only the devices it was given. A VM-local address resolves to a global id only when the
// device was given to that VM; a failed lookup is the refusal. The USB/IP adapters export each
// VM's views at the addresses assigned here, and the register-level controller (issue 5)
// resolves slot addresses through the same map. Owned by Vusbd; lives on vusbd's loop.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "usb/core/error.h"
#include "usb/core/loop_checker.h"

namespace vusbd {

struct VmAddress {
  uint32_t busnum = 0;
  uint32_t devnum = 0;
  uint32_t port = 0;
  std::string busid;
  uint32_t devid() const { return (busnum << 16) | devnum; }
};

class AddressMap {
 public:
  using GlobalId = uint32_t;
  static constexpr uint32_t kBus = 1;
  static constexpr uint32_t kMaxPort = 126;  // devnum = port + 1 stays a valid USB address

  // A new device; its global id is never reused while the map lives.
  GlobalId add_device(std::string name);
  // Forgets the device and releases it in every VM.
  void remove_device(GlobalId id);
  const std::string* name(GlobalId id) const;

  // Gives device `id` to `vm` at `port` (0: the lowest free port). Giving it again returns the
  // address it already has. Fails when the port is taken or the VM's bus is full.
  usb::Result<VmAddress> assign(const std::string& vm, GlobalId id, uint32_t port = 0);
  void release(const std::string& vm, GlobalId id);

  // What `vm` reaches at a VM-local address: nullopt unless the device was given to it.
  std::optional<GlobalId> resolve_devid(const std::string& vm, uint32_t devid) const;
  std::optional<GlobalId> resolve_busid(const std::string& vm, const std::string& busid) const;
  std::optional<VmAddress> address(const std::string& vm, GlobalId id) const;
  // Every VM that was given device `id`, with its address there.
  std::vector<std::pair<std::string, VmAddress>> holders(GlobalId id) const;

 private:
  struct Space {
    std::map<uint32_t, GlobalId> by_port;
    std::map<GlobalId, uint32_t> port_of;
  };
  static VmAddress make_address(uint32_t port);

  GlobalId next_id_ = 1;
  std::map<GlobalId, std::string> devices_;
  std::map<std::string, Space> spaces_;
  usb::LoopChecker loop_;
};

}  // namespace vusbd
