// BandwidthAdmission: periodic bandwidth of a SharedDevice's VMs on its bus. The configuration
// and alternate settings each VM selects are reserved in vusbd's sched::BusReservations; one that
// would over-commit the bus is refused with kNoBandwidth — -ENOSPC, what Linux's EHCI driver
// answers an over-committing periodic URB (a VM's own xHCI driver would refuse the SET_INTERFACE
// before sending it; over USB/IP the request reaches vusbd, which answers) — counted as a
// refusal and logged, and the VM keeps what it had. Without a book (set_book(nullptr)) every
// request is admitted.
//
// Owned by SharedDevice; lives on vusbd's loop. The book is vusbd's and outlives it.
#pragma once

#include <span>
#include <string>

#include "schedulers/bus_reservations.h"
#include "usb/core/descriptors.h"
#include "usb/core/status.h"

namespace vusbd {

class DeviceView;
class SharedDevice;

class BandwidthAdmission {
 public:
  explicit BandwidthAdmission(SharedDevice& shared);

  void set_book(sched::BusReservations* book, std::string bus) {
    book_ = book;
    bus_ = std::move(bus);
  }
  const std::string& bus() const { return bus_; }

  // `view`'s VM selects configuration `value`: its alternate 0s replace what it had reserved.
  usb::Status admit_configuration(DeviceView& view, uint8_t value);
  // `view`'s VM selects `alternate` of `interface` (in its configuration).
  usb::Status admit_interface(DeviceView& view, uint8_t interface, uint8_t alternate);
  // A host controller's admission before it configures endpoints (xHCI Configure Endpoint): the
  // interfaces and alternate settings `eps` belong to are reserved for the VM; kNoBandwidth (and
  // nothing changed) when the bus cannot take them.
  usb::Status admit_endpoints(DeviceView& view, std::span<const usb::EndpointDescriptor> eps);
  // Re-reserves what `view` uses now (after a refusal or a failed change).
  void readmit(DeviceView& view);
  // `view`'s VM let the device go: its reservations end.
  void leave(const DeviceView& view);
  // The device went away: every VM's reservations for it end.
  void device_gone();

 private:
  SharedDevice& shared_;
  sched::BusReservations* book_ = nullptr;
  std::string bus_;
};

}  // namespace vusbd
