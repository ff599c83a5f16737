// BusReservations: who holds the periodic (isochronous and interrupt) bandwidth of each bus vusbd
// serves. A reservation is one device interface's periodic endpoints at the alternate setting a
// VM selected (or alternate 0 of each interface when it selects a configuration). VMs that use
// the same setting of one shared device hold one reservation together: the bus carries one
// stream for them (iso IN is fanned out). Every bus has a BandwidthLedger per speed class (a
// high-speed bus's full-speed devices are budgeted as behind their own transaction translator);
// a use that does not fit is refused and changes nothing. Pure logic, no I/O, no clock.
// Owned by vusbd (one for all its devices); lives on its loop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "schedulers/bandwidth_ledger.h"
#include "usb/core/descriptors.h"
#include "usb/core/error.h"
#include "usb/core/types.h"

namespace sched {

class BusReservations {
 public:
  struct Holding {
    std::string bus;
    std::string device;
    uint8_t interface = 0;
    uint8_t alternate = 0;
    usb::Speed speed = usb::Speed::kHigh;
    std::vector<usb::EndpointDescriptor> endpoints;  // the periodic ones
    std::vector<BandwidthLedger::Placement> placements;
    std::set<std::string> vms;
    // Bus time (ns) or bytes (SuperSpeed) it takes in its fullest slot.
    uint32_t peak() const;
  };
  struct BusLoad {
    std::string bus;    // the bus's name
    std::string label;  // "NAME (speed class)": a bus has a ledger per speed class
    const BandwidthLedger* ledger;
  };

  // `vm` selects `alternate` of `interface` on `device` (on `bus`), whose endpoints are `eps`
  // (non-periodic ones are ignored; none periodic: the VM just leaves what it held there).
  // kBusy with the reason when the bus cannot take it; nothing changes then.
  usb::Result<void> use(const std::string& vm, const std::string& bus, const std::string& device,
                        uint8_t interface, uint8_t alternate,
                        std::span<const usb::EndpointDescriptor> eps, usb::Speed speed);
  // `vm` stops using `interface` of `device` (every interface: nullopt). A reservation nobody
  // holds any more is released.
  void leave(const std::string& vm, const std::string& device,
             std::optional<uint8_t> interface = std::nullopt);
  // The device is gone: every reservation on it is released.
  void remove_device(const std::string& device);

  std::vector<const Holding*> holdings() const;
  // The ledgers, one per bus and speed class in use.
  std::vector<BusLoad> buses() const;
  // Told after every change (a use, a leave, a removal).
  void on_change(std::function<void()> fn) { on_change_ = std::move(fn); }

 private:
  using Slot = std::pair<std::string, uint8_t>;  // device, interface
  static std::string ledger_name(const std::string& bus, usb::Speed speed);
  void erase(std::map<Slot, Holding>::iterator it);
  void changed();

  struct Ledger {
    std::string bus;
    BandwidthLedger ledger;
  };
  std::map<std::string, Ledger> ledgers_;  // by ledger_name()
  std::map<Slot, Holding> holdings_;
  std::map<Slot, BandwidthLedger::Key> keys_;
  BandwidthLedger::Key next_key_ = 1;
  std::function<void()> on_change_;
};

}  // namespace sched
