// Standard USB descriptors (USB 2.0 ch. 9.6, USB 3.2 ch. 9.6): parsed from and built into bytes
// with bounds checks. Class-specific descriptors are kept as raw blocks beside the standard
// descriptor they follow, so parse(build(x)) == x and build(parse(bytes)) == bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "usb/core/error.h"
#include "usb/core/types.h"

namespace usb {

namespace desc {
constexpr uint8_t kDevice = 0x01;
constexpr uint8_t kConfiguration = 0x02;
constexpr uint8_t kString = 0x03;
constexpr uint8_t kInterface = 0x04;
constexpr uint8_t kEndpoint = 0x05;
constexpr uint8_t kDeviceQualifier = 0x06;
constexpr uint8_t kOtherSpeedConfiguration = 0x07;
constexpr uint8_t kInterfacePower = 0x08;
constexpr uint8_t kOtg = 0x09;
constexpr uint8_t kDebug = 0x0a;
constexpr uint8_t kInterfaceAssociation = 0x0b;
constexpr uint8_t kBos = 0x0f;
constexpr uint8_t kDeviceCapability = 0x10;
constexpr uint8_t kSsEndpointCompanion = 0x30;
constexpr uint8_t kSspIsoEndpointCompanion = 0x31;

constexpr size_t kDeviceSize = 18;
constexpr size_t kConfigurationSize = 9;
constexpr size_t kInterfaceSize = 9;
constexpr size_t kEndpointSize = 7;
constexpr size_t kSsCompanionSize = 6;
constexpr size_t kIadSize = 8;
constexpr size_t kBosSize = 5;
constexpr size_t kQualifierSize = 10;
}  // namespace desc

// Configuration bmAttributes bits (USB 2.0 table 9-10).
constexpr uint8_t kConfigAttrOne = 0x80;
constexpr uint8_t kConfigAttrSelfPowered = 0x40;
constexpr uint8_t kConfigAttrRemoteWakeup = 0x20;

struct DeviceDescriptor {
  uint16_t bcd_usb = 0x0200;
  uint8_t device_class = 0;
  uint8_t device_subclass = 0;
  uint8_t device_protocol = 0;
  uint8_t max_packet_size0 = 64;
  uint16_t vendor_id = 0;
  uint16_t product_id = 0;
  uint16_t bcd_device = 0;
  uint8_t manufacturer_index = 0;
  uint8_t product_index = 0;
  uint8_t serial_index = 0;
  uint8_t num_configurations = 1;

  static Result<DeviceDescriptor> parse(std::span<const uint8_t> bytes);
  std::vector<uint8_t> build() const;
  friend bool operator==(const DeviceDescriptor&, const DeviceDescriptor&) = default;
};

// SuperSpeed Endpoint Companion (USB 3.2 9.6.7).
struct SsEndpointCompanion {
  uint8_t max_burst = 0;
  uint8_t attributes = 0;  // bulk: streams; iso: Mult in bits 1:0
  uint16_t bytes_per_interval = 0;
  friend bool operator==(const SsEndpointCompanion&, const SsEndpointCompanion&) = default;
};

struct EndpointDescriptor {
  uint8_t address = 0;           // bEndpointAddress, direction in bit 7
  uint8_t attributes = 0;        // bmAttributes, type in bits 1:0
  uint16_t max_packet_size = 0;  // wMaxPacketSize including the high-bandwidth bits 12:11
  uint8_t interval = 0;
  uint8_t audio_extra[2] = {0, 0};       // bRefresh/bSynchAddress when bLength == 9 (audio class)
  uint8_t length = desc::kEndpointSize;  // 7 or 9
  std::optional<SsEndpointCompanion> ss_companion{};
  std::vector<uint8_t> extra{};  // class-specific descriptors that follow, raw

  TransferType type() const { return static_cast<TransferType>(attributes & 3); }
  Direction direction() const { return endpoint_direction(address); }
  uint16_t max_packet() const { return max_packet_size & 0x7ff; }
  // Transactions per microframe for high-speed periodic endpoints (1..3).
  uint8_t hs_transactions() const {
    return static_cast<uint8_t>(((max_packet_size >> 11) & 3) + 1);
  }
  friend bool operator==(const EndpointDescriptor&, const EndpointDescriptor&) = default;
};

struct InterfaceAssociation {
  uint8_t first_interface = 0;
  uint8_t interface_count = 0;
  uint8_t function_class = 0;
  uint8_t function_subclass = 0;
  uint8_t function_protocol = 0;
  uint8_t function_index = 0;
  friend bool operator==(const InterfaceAssociation&, const InterfaceAssociation&) = default;
};

// One alternate setting of one interface.
struct InterfaceDescriptor {
  uint8_t number = 0;
  uint8_t alternate = 0;
  uint8_t interface_class = 0;
  uint8_t interface_subclass = 0;
  uint8_t interface_protocol = 0;
  uint8_t string_index = 0;
  std::optional<InterfaceAssociation> association{};  // an IAD that immediately precedes it
  std::vector<EndpointDescriptor> endpoints{};
  std::vector<uint8_t> extra{};  // class-specific descriptors between it and its first endpoint

  friend bool operator==(const InterfaceDescriptor&, const InterfaceDescriptor&) = default;
};

struct ConfigurationDescriptor {
  uint8_t value = 1;  // bConfigurationValue
  uint8_t num_interfaces = 0;
  uint8_t string_index = 0;
  uint8_t attributes = kConfigAttrOne;
  uint8_t max_power = 50;                          // units of 2 mA (8 mA at SuperSpeed)
  uint8_t descriptor_type = desc::kConfiguration;  // or kOtherSpeedConfiguration
  std::vector<uint8_t> extra{};  // descriptors between the header and the first interface
  std::vector<InterfaceDescriptor> interfaces{};  // every alternate setting, in order

  static Result<ConfigurationDescriptor> parse(std::span<const uint8_t> bytes);
  std::vector<uint8_t> build() const;  // computes wTotalLength

  bool self_powered() const { return attributes & kConfigAttrSelfPowered; }
  const InterfaceDescriptor* find(uint8_t interface, uint8_t alternate) const;
  // Number of alternate settings interface `interface` has (0 if it does not exist).
  size_t alternate_count(uint8_t interface) const;
  friend bool operator==(const ConfigurationDescriptor&, const ConfigurationDescriptor&) = default;
};

// Binary Object Store (USB 3.2 9.6.2): capability descriptors kept raw.
struct BosDescriptor {
  struct Capability {
    uint8_t type = 0;             // bDevCapabilityType
    std::vector<uint8_t> data{};  // bytes after bDevCapabilityType
    friend bool operator==(const Capability&, const Capability&) = default;
  };
  std::vector<Capability> capabilities{};

  static Result<BosDescriptor> parse(std::span<const uint8_t> bytes);
  std::vector<uint8_t> build() const;
  friend bool operator==(const BosDescriptor&, const BosDescriptor&) = default;
};

// String descriptors (USB 2.0 9.6.7). Index 0 holds LANGIDs.
std::vector<uint8_t> build_string_descriptor(std::string_view utf8);
std::vector<uint8_t> build_language_descriptor(std::span<const uint16_t> langids);
Result<std::string> parse_string_descriptor(std::span<const uint8_t> bytes);  // to UTF-8
// String descriptor 0: the LANGID table (USB 2.0 9.6.7, table 9-15).
Result<std::vector<uint16_t>> parse_language_descriptor(std::span<const uint8_t> bytes);

// A device's whole descriptor set: what an emulated device serves and a real device reports.
struct DescriptorSet {
  DeviceDescriptor device;
  std::vector<ConfigurationDescriptor> configurations{};
  std::optional<BosDescriptor> bos{};
  std::vector<std::string> strings{};  // strings[i - 1] is string index i; English (0x0409)

  const ConfigurationDescriptor* find_configuration(uint8_t value) const;
};

}  // namespace usb
