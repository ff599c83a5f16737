// devices::ReservationDevice: seed 002's "dummy device" — a small emulated device vusbd puts on a
// VM's bus (per VM config) whose isochronous and interrupt endpoints declare the periodic
// bandwidth the *other* VMs hold on the buses this VM shares with them, so the VM's own OS (and
// `lsusb -v` in it) sees what is left. One interface per reservation held by others: alternate 0
// has no endpoints (as USB requires of an interface with isochronous endpoints), alternate 1 the
// reserved endpoints with their wMaxPacketSize (multiplier bits included) and bInterval, as a
// high-speed device states them (a full-speed endpoint's interval in microframes; a SuperSpeed
// endpoint's bytes per interval spread over high-bandwidth endpoints of up to 3 x 1024 bytes),
// renumbered so they fit one device (at most 15 per direction; more are summed up in a string).
// Strings name who holds what and the bus time it takes. No driver binds it (vendor class) and it
// moves no data: transfers to it stall. Built anew when the reservations change (descriptors are
// fixed for an enumeration); vusbd swaps it, which the VM sees as an unplug and a plug.
// Owned by vusbd (one per VM that asked for it); lives on vusbd's loop.
#pragma once

#include <string>
#include <vector>

#include "devices/emulated/emulated_device.h"

namespace devices {

struct ReservationList {
  struct Entry {
    std::string label;  // e.g. "vm1: gz1 interface 0 alt 1, 82.4 us per microframe"
    std::vector<usb::EndpointDescriptor> endpoints;
    usb::Speed speed = usb::Speed::kHigh;  // of the device that holds them
    friend bool operator==(const Entry&, const Entry&) = default;
  };
  std::string summary;  // e.g. "bus emulated (high): 82.4 of 100.0 us per microframe held"
  std::vector<Entry> entries;
  friend bool operator==(const ReservationList&, const ReservationList&) = default;
};

class ReservationDevice : public EmulatedDevice {
 public:
  // pid.codes' open-source vendor id with its testing product id.
  static constexpr uint16_t kVendorId = 0x1209;
  static constexpr uint16_t kProductId = 0x0001;

  ReservationDevice(const ReservationList& list, usb::DeviceLocation location);
  static usb::DescriptorSet make_descriptors(const ReservationList& list);
  // `ep` of a device at `speed` as high-speed endpoint descriptors of the same bus load.
  static std::vector<usb::EndpointDescriptor> as_high_speed(const usb::EndpointDescriptor& ep,
                                                            usb::Speed speed);
  const ReservationList& list() const { return list_; }

 private:
  ReservationList list_;
};

}  // namespace devices
