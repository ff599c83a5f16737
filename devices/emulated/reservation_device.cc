#include "devices/emulated/reservation_device.h"

#include <algorithm>
#include <bit>

namespace devices {

std::vector<usb::EndpointDescriptor> ReservationDevice::as_high_speed(
    const usb::EndpointDescriptor& ep, usb::Speed speed) {
  usb::EndpointDescriptor hs;
  hs.address = ep.address;
  hs.attributes = ep.attributes;
  const bool iso = ep.type() == usb::TransferType::kIsochronous;
  const uint32_t b = std::max<uint32_t>(ep.interval, 1);
  switch (speed) {
    case usb::Speed::kFull:
    case usb::Speed::kLow: {
      // Frames → microframes (x8): iso's exponent grows by 3, interrupt's frame count becomes the
      // exponent of the power of two at or below it.
      const uint32_t e = iso ? b + 3 : static_cast<uint32_t>(std::bit_width(b)) + 3;
      hs.interval = static_cast<uint8_t>(std::min<uint32_t>(e, 16));
      hs.max_packet_size = std::min<uint16_t>(ep.max_packet(), 1024);
      return {hs};
    }
    case usb::Speed::kSuper:
    case usb::Speed::kSuperPlus: {
      uint32_t bytes =
          ep.ss_companion && ep.ss_companion->bytes_per_interval
              ? ep.ss_companion->bytes_per_interval
              : uint32_t{ep.max_packet()} *
                    (ep.ss_companion ? ep.ss_companion->max_burst + 1u : 1u) *
                    (iso && ep.ss_companion ? (ep.ss_companion->attributes & 3) + 1u : 1u);
      hs.interval = static_cast<uint8_t>(std::min<uint32_t>(b, 16));
      std::vector<usb::EndpointDescriptor> out;
      while (bytes > 0 && out.size() < 16) {
        const uint32_t part = std::min<uint32_t>(bytes, 3072);
        const uint32_t n = (part + 1023) / 1024;  // transactions per microframe
        hs.max_packet_size = static_cast<uint16_t>(((part + n - 1) / n) | ((n - 1) << 11));
        out.push_back(hs);
        bytes -= part;
      }
      return out;
    }
    default:
      return {ep};
  }
}

usb::DescriptorSet ReservationDevice::make_descriptors(const ReservationList& list) {
  usb::DescriptorSet set;
  set.device.bcd_usb = 0x0200;
  set.device.max_packet_size0 = 64;
  set.device.vendor_id = kVendorId;
  set.device.product_id = kProductId;
  set.device.bcd_device = 0x0100;
  set.device.manufacturer_index = 1;
  set.device.product_index = 2;
  set.device.num_configurations = 1;
  set.strings = {"vusb", "vusb bandwidth held by other VMs", list.summary};

  usb::ConfigurationDescriptor cfg;
  cfg.value = 1;
  cfg.string_index = 3;
  cfg.attributes = usb::kConfigAttrOne | usb::kConfigAttrSelfPowered;
  cfg.max_power = 0;
  uint8_t next_in = 1, next_out = 1;
  size_t left_out = 0;
  uint8_t number = 0;
  for (const auto& e : list.entries) {
    usb::InterfaceDescriptor alt0;
    alt0.number = number;
    alt0.interface_class = 0xff;
    set.strings.push_back(e.label);
    alt0.string_index = static_cast<uint8_t>(set.strings.size());
    usb::InterfaceDescriptor alt1 = alt0;
    alt1.alternate = 1;
    std::vector<usb::EndpointDescriptor> eps;
    for (const auto& ep : e.endpoints)
      for (const auto& x : as_high_speed(ep, e.speed)) eps.push_back(x);
    for (const auto& ep : eps) {
      const bool in = ep.direction() == usb::Direction::kIn;
      uint8_t& next = in ? next_in : next_out;
      if (next > 15) {
        ++left_out;
        continue;
      }
      usb::EndpointDescriptor copy;
      copy.address = static_cast<uint8_t>(next++ | (in ? 0x80 : 0x00));
      copy.attributes = ep.attributes;
      copy.max_packet_size = ep.max_packet_size;
      copy.interval = ep.interval;
      alt1.endpoints.push_back(copy);
    }
    cfg.interfaces.push_back(alt0);
    cfg.interfaces.push_back(alt1);
    if (++number == 0xff || set.strings.size() >= 250) break;  // string indices are a byte
  }
  if (number == 0) {  // nothing held by others: one empty interface says so
    usb::InterfaceDescriptor none;
    none.interface_class = 0xff;
    set.strings.push_back("no periodic bandwidth held by other VMs");
    none.string_index = static_cast<uint8_t>(set.strings.size());
    cfg.interfaces.push_back(none);
    number = 1;
  }
  cfg.num_interfaces = number;
  if (left_out) set.strings[2] += " (" + std::to_string(left_out) + " more endpoints not shown)";
  set.configurations = {cfg};
  return set;
}

ReservationDevice::ReservationDevice(const ReservationList& list, usb::DeviceLocation location)
    : EmulatedDevice(SpeedDescriptors{.full_speed = std::nullopt,
                                      .high_speed = make_descriptors(list),
                                      .super_speed = std::nullopt},
                     usb::Speed::kHigh, std::move(location)),
      list_(list) {}

}  // namespace devices
