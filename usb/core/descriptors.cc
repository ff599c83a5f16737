// Standard descriptor parsing and building (USB 2.0 9.5, 9.6; USB 3.2 9.6). Every length a device
// or guest controls is checked before it is used: a descriptor walk advances by bLength >= 2 so
// it always terminates, and no byte outside the given span is read.
#include "usb/core/descriptors.h"

#include <algorithm>
#include <string>

#include "usb/core/byte_order.h"

namespace usb {
namespace {

constexpr size_t kMaxDescriptorLength = 255;  // bLength is one byte
// A string descriptor holds at most (255 - 2) / 2 = 126 UTF-16 code units.
constexpr size_t kMaxStringUnits = (kMaxDescriptorLength - 2) / 2;

std::unexpected<Error> malformed(std::string what) {
  return Error::make(Error::Code::kMalformed, std::move(what));
}

std::string at(size_t offset) {
  return " at offset " + std::to_string(offset);
}

// Checks the two-byte header of the descriptor that starts at `offset` inside `bytes` (USB 2.0
// 9.5: every descriptor begins with bLength, bDescriptorType). Returns its bLength.
Result<size_t> descriptor_length(std::span<const uint8_t> bytes, size_t offset,
                                 std::string_view context) {
  const size_t remaining = bytes.size() - offset;
  if (remaining < 2) {
    return malformed(std::string(context) + ": " + std::to_string(remaining) +
                     " trailing byte(s), too short for a descriptor header" + at(offset));
  }
  const size_t length = bytes[offset];
  if (length < 2) {
    return malformed(std::string(context) + ": descriptor type " +
                     std::to_string(bytes[offset + 1]) + " has bLength " + std::to_string(length) +
                     " (< 2)" + at(offset));
  }
  if (length > remaining) {
    return malformed(std::string(context) + ": bLength " + std::to_string(length) +
                     " runs past the end (" + std::to_string(remaining) + " bytes left)" +
                     at(offset));
  }
  return length;
}

void append(std::vector<uint8_t>& out, std::span<const uint8_t> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

void append_le16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v));
  out.push_back(static_cast<uint8_t>(v >> 8));
}

// --- UTF-8 <-> UTF-16 (string descriptors are UTF-16LE, USB 2.0 9.6.7) ---
constexpr char32_t kReplacement = 0xfffd;

// Decodes one code point at s[i], advancing i. Invalid sequences (overlong, surrogate, beyond
// U+10FFFF, truncated, stray continuation) yield U+FFFD and consume one byte.
char32_t next_code_point(std::string_view s, size_t& i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  size_t n = 0;
  char32_t cp = 0;
  char32_t min = 0;
  if ((b0 & 0xe0) == 0xc0) {
    n = 1, cp = b0 & 0x1f, min = 0x80;
  } else if ((b0 & 0xf0) == 0xe0) {
    n = 2, cp = b0 & 0x0f, min = 0x800;
  } else if ((b0 & 0xf8) == 0xf0) {
    n = 3, cp = b0 & 0x07, min = 0x10000;
  } else {
    ++i;
    return kReplacement;
  }
  if (s.size() - i <= n) {
    ++i;
    return kReplacement;
  }
  for (size_t k = 1; k <= n; ++k) {
    const auto b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xc0) != 0x80) {
      ++i;
      return kReplacement;
    }
    cp = (cp << 6) | (b & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
    ++i;
    return kReplacement;
  }
  i += n + 1;
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// --- Configuration walk (USB 2.0 9.6.3-9.6.6, USB 3.2 9.6.7) ---

// Where a class-specific or unrecognised descriptor goes: the extra of the last standard
// descriptor seen (configuration, interface or endpoint).
enum class Owner { kConfiguration, kInterface, kEndpoint };

Result<EndpointDescriptor> parse_endpoint(std::span<const uint8_t> d, size_t offset) {
  // USB 2.0 9.6.6: 7 bytes; audio class endpoints (USB Audio 1.0 4.6.1.1) append bRefresh and
  // bSynchAddress for 9.
  if (d.size() != desc::kEndpointSize && d.size() != 9) {
    return malformed("endpoint descriptor has bLength " + std::to_string(d.size()) +
                     " (expected 7 or 9)" + at(offset));
  }
  EndpointDescriptor ep;
  ep.address = d[2];
  ep.attributes = d[3];
  ep.max_packet_size = load_le16(&d[4]);
  ep.interval = d[6];
  ep.length = static_cast<uint8_t>(d.size());
  if (d.size() == 9) {
    ep.audio_extra[0] = d[7];
    ep.audio_extra[1] = d[8];
  }
  return ep;
}

InterfaceAssociation parse_iad(std::span<const uint8_t> d) {
  // USB 3.2 9.6.4 (Interface Association Descriptor ECN for USB 2.0).
  return InterfaceAssociation{d[2], d[3], d[4], d[5], d[6], d[7]};
}

void build_endpoint(std::vector<uint8_t>& out, const EndpointDescriptor& ep) {
  const bool audio = ep.length == 9;
  out.push_back(audio ? 9 : static_cast<uint8_t>(desc::kEndpointSize));
  out.push_back(desc::kEndpoint);
  out.push_back(ep.address);
  out.push_back(ep.attributes);
  append_le16(out, ep.max_packet_size);
  out.push_back(ep.interval);
  if (audio) {
    out.push_back(ep.audio_extra[0]);
    out.push_back(ep.audio_extra[1]);
  }
  if (ep.ss_companion) {
    // USB 3.2 9.6.7 table 9-27.
    out.push_back(desc::kSsCompanionSize);
    out.push_back(desc::kSsEndpointCompanion);
    out.push_back(ep.ss_companion->max_burst);
    out.push_back(ep.ss_companion->attributes);
    append_le16(out, ep.ss_companion->bytes_per_interval);
  }
  append(out, ep.extra);
}

void build_interface(std::vector<uint8_t>& out, const InterfaceDescriptor& intf) {
  if (intf.association) {
    const auto& a = *intf.association;
    out.insert(out.end(), {static_cast<uint8_t>(desc::kIadSize), desc::kInterfaceAssociation,
                           a.first_interface, a.interface_count, a.function_class,
                           a.function_subclass, a.function_protocol, a.function_index});
  }
  // USB 2.0 9.6.5 table 9-12. bNumEndpoints is the number of endpoints actually present.
  out.insert(
      out.end(),
      {static_cast<uint8_t>(desc::kInterfaceSize), desc::kInterface, intf.number, intf.alternate,
       static_cast<uint8_t>(std::min<size_t>(intf.endpoints.size(), 255)), intf.interface_class,
       intf.interface_subclass, intf.interface_protocol, intf.string_index});
  append(out, intf.extra);
  for (const auto& ep : intf.endpoints) build_endpoint(out, ep);
}

}  // namespace

// --- Device descriptor (USB 2.0 9.6.1, table 9-8) ---

Result<DeviceDescriptor> DeviceDescriptor::parse(std::span<const uint8_t> bytes) {
  if (bytes.size() < 2) return malformed("device descriptor: fewer than 2 bytes");
  auto length = descriptor_length(bytes, 0, "device descriptor");
  if (!length) return std::unexpected(length.error());
  if (bytes[1] != desc::kDevice) {
    return malformed("device descriptor: bDescriptorType " + std::to_string(bytes[1]) +
                     " (expected 1)");
  }
  if (*length != desc::kDeviceSize) {
    return malformed("device descriptor: bLength " + std::to_string(*length) + " (expected 18)");
  }
  DeviceDescriptor d;
  d.bcd_usb = load_le16(&bytes[2]);
  d.device_class = bytes[4];
  d.device_subclass = bytes[5];
  d.device_protocol = bytes[6];
  d.max_packet_size0 = bytes[7];
  d.vendor_id = load_le16(&bytes[8]);
  d.product_id = load_le16(&bytes[10]);
  d.bcd_device = load_le16(&bytes[12]);
  d.manufacturer_index = bytes[14];
  d.product_index = bytes[15];
  d.serial_index = bytes[16];
  d.num_configurations = bytes[17];
  return d;
}

std::vector<uint8_t> DeviceDescriptor::build() const {
  std::vector<uint8_t> out(desc::kDeviceSize);
  out[0] = desc::kDeviceSize;
  out[1] = desc::kDevice;
  store_le16(&out[2], bcd_usb);
  out[4] = device_class;
  out[5] = device_subclass;
  out[6] = device_protocol;
  out[7] = max_packet_size0;
  store_le16(&out[8], vendor_id);
  store_le16(&out[10], product_id);
  store_le16(&out[12], bcd_device);
  out[14] = manufacturer_index;
  out[15] = product_index;
  out[16] = serial_index;
  out[17] = num_configurations;
  return out;
}

// --- Configuration descriptor and its hierarchy (USB 2.0 9.6.3, 9.6.4 other-speed) ---

Result<ConfigurationDescriptor> ConfigurationDescriptor::parse(std::span<const uint8_t> bytes) {
  if (bytes.size() < desc::kConfigurationSize) {
    return malformed("configuration descriptor: " + std::to_string(bytes.size()) +
                     " bytes, need at least 9");
  }
  if (bytes[0] != desc::kConfigurationSize) {
    return malformed("configuration descriptor: bLength " + std::to_string(bytes[0]) +
                     " (expected 9)");
  }
  if (bytes[1] != desc::kConfiguration && bytes[1] != desc::kOtherSpeedConfiguration) {
    return malformed("configuration descriptor: bDescriptorType " + std::to_string(bytes[1]) +
                     " (expected 2 or 7)");
  }
  const size_t total = load_le16(&bytes[2]);
  if (total < desc::kConfigurationSize) {
    return malformed("configuration descriptor: wTotalLength " + std::to_string(total) +
                     " is smaller than the 9-byte header");
  }
  if (total > bytes.size()) {
    return malformed("configuration descriptor: wTotalLength " + std::to_string(total) +
                     " exceeds the " + std::to_string(bytes.size()) + " bytes available");
  }
  const auto all = bytes.first(total);

  ConfigurationDescriptor c;
  c.descriptor_type = bytes[1];
  c.num_interfaces = bytes[4];
  c.value = bytes[5];
  c.string_index = bytes[6];
  c.attributes = bytes[7];
  c.max_power = bytes[8];

  Owner owner = Owner::kConfiguration;
  std::optional<InterfaceAssociation> pending_iad;
  size_t offset = desc::kConfigurationSize;
  while (offset < total) {
    auto len = descriptor_length(all, offset, "configuration");
    if (!len) return std::unexpected(len.error());
    const auto d = all.subspan(offset, *len);
    const uint8_t type = d[1];

    if (type == desc::kInterface) {
      if (d.size() != desc::kInterfaceSize) {
        return malformed("interface descriptor has bLength " + std::to_string(d.size()) +
                         " (expected 9)" + at(offset));
      }
      InterfaceDescriptor intf;
      intf.number = d[2];
      intf.alternate = d[3];
      // d[4] bNumEndpoints: the endpoint descriptors that follow are authoritative (Linux
      // tolerates a mismatch the same way); build() writes the count it actually emits.
      intf.interface_class = d[5];
      intf.interface_subclass = d[6];
      intf.interface_protocol = d[7];
      intf.string_index = d[8];
      intf.association = pending_iad;
      pending_iad.reset();
      c.interfaces.push_back(std::move(intf));
      owner = Owner::kInterface;
    } else if (type == desc::kInterfaceAssociation) {
      if (d.size() != desc::kIadSize) {
        return malformed("interface association descriptor has bLength " +
                         std::to_string(d.size()) + " (expected 8)" + at(offset));
      }
      // An IAD belongs to the interface that immediately follows it; one followed by anything
      // else cannot be represented structurally, so it stays raw where it is.
      const size_t next = offset + d.size();
      const bool before_interface = next + 2 <= total && all[next + 1] == desc::kInterface;
      if (before_interface) {
        pending_iad = parse_iad(d);
      } else {
        auto& extra = owner == Owner::kConfiguration ? c.extra
                      : owner == Owner::kInterface   ? c.interfaces.back().extra
                                                     : c.interfaces.back().endpoints.back().extra;
        append(extra, d);
      }
    } else if (type == desc::kEndpoint) {
      if (owner == Owner::kConfiguration) {
        return malformed("endpoint descriptor before any interface descriptor" + at(offset));
      }
      auto ep = parse_endpoint(d, offset);
      if (!ep) return std::unexpected(ep.error());
      c.interfaces.back().endpoints.push_back(std::move(*ep));
      owner = Owner::kEndpoint;
    } else if (type == desc::kSsEndpointCompanion && owner == Owner::kEndpoint &&
               !c.interfaces.back().endpoints.back().ss_companion &&
               c.interfaces.back().endpoints.back().extra.empty()) {
      // USB 3.2 9.6.7: the companion immediately follows its endpoint descriptor.
      if (d.size() != desc::kSsCompanionSize) {
        return malformed("SuperSpeed endpoint companion has bLength " + std::to_string(d.size()) +
                         " (expected 6)" + at(offset));
      }
      c.interfaces.back().endpoints.back().ss_companion =
          SsEndpointCompanion{d[2], d[3], load_le16(&d[4])};
    } else {
      // Class-specific (USB 2.0 9.6: "class- and vendor-specific descriptors") or otherwise
      // unrecognised: kept raw with the standard descriptor it follows.
      auto& extra = owner == Owner::kConfiguration ? c.extra
                    : owner == Owner::kInterface   ? c.interfaces.back().extra
                                                   : c.interfaces.back().endpoints.back().extra;
      append(extra, d);
    }
    offset += d.size();
  }
  return c;
}

std::vector<uint8_t> ConfigurationDescriptor::build() const {
  std::vector<uint8_t> out = {static_cast<uint8_t>(desc::kConfigurationSize),
                              descriptor_type,
                              0,
                              0,
                              num_interfaces,
                              value,
                              string_index,
                              attributes,
                              max_power};
  append(out, extra);
  for (const auto& intf : interfaces) build_interface(out, intf);
  // wTotalLength is 16 bits; anything parsed from the wire fits.
  store_le16(&out[2], static_cast<uint16_t>(std::min<size_t>(out.size(), 0xffff)));
  return out;
}

const InterfaceDescriptor* ConfigurationDescriptor::find(uint8_t interface,
                                                         uint8_t alternate) const {
  for (const auto& intf : interfaces) {
    if (intf.number == interface && intf.alternate == alternate) return &intf;
  }
  return nullptr;
}

size_t ConfigurationDescriptor::alternate_count(uint8_t interface) const {
  return static_cast<size_t>(std::count_if(interfaces.begin(), interfaces.end(),
                                           [&](const auto& i) { return i.number == interface; }));
}

// --- BOS (USB 3.2 9.6.2, tables 9-12 and 9-13) ---

Result<BosDescriptor> BosDescriptor::parse(std::span<const uint8_t> bytes) {
  if (bytes.size() < desc::kBosSize) {
    return malformed("BOS descriptor: " + std::to_string(bytes.size()) + " bytes, need at least 5");
  }
  if (bytes[0] != desc::kBosSize) {
    return malformed("BOS descriptor: bLength " + std::to_string(bytes[0]) + " (expected 5)");
  }
  if (bytes[1] != desc::kBos) {
    return malformed("BOS descriptor: bDescriptorType " + std::to_string(bytes[1]) +
                     " (expected 15)");
  }
  const size_t total = load_le16(&bytes[2]);
  if (total < desc::kBosSize) {
    return malformed("BOS descriptor: wTotalLength " + std::to_string(total) +
                     " is smaller than the 5-byte header");
  }
  if (total > bytes.size()) {
    return malformed("BOS descriptor: wTotalLength " + std::to_string(total) + " exceeds the " +
                     std::to_string(bytes.size()) + " bytes available");
  }
  // bytes[4] bNumDeviceCaps: the capabilities present are authoritative; build() recounts.
  const auto all = bytes.first(total);
  BosDescriptor bos;
  size_t offset = desc::kBosSize;
  while (offset < total) {
    auto len = descriptor_length(all, offset, "BOS");
    if (!len) return std::unexpected(len.error());
    const auto d = all.subspan(offset, *len);
    if (d[1] != desc::kDeviceCapability) {
      return malformed("BOS: descriptor type " + std::to_string(d[1]) +
                       " is not a device capability (16)" + at(offset));
    }
    if (d.size() < 3) {
      return malformed("BOS: device capability has bLength " + std::to_string(d.size()) + " (< 3)" +
                       at(offset));
    }
    bos.capabilities.push_back(Capability{d[2], std::vector<uint8_t>(d.begin() + 3, d.end())});
    offset += d.size();
  }
  return bos;
}

std::vector<uint8_t> BosDescriptor::build() const {
  std::vector<uint8_t> out = {static_cast<uint8_t>(desc::kBosSize), desc::kBos, 0, 0,
                              static_cast<uint8_t>(std::min<size_t>(capabilities.size(), 255))};
  for (const auto& cap : capabilities) {
    // A capability's bLength is one byte: data beyond 252 bytes cannot be represented.
    const size_t n = std::min(cap.data.size(), kMaxDescriptorLength - 3);
    out.push_back(static_cast<uint8_t>(n + 3));
    out.push_back(desc::kDeviceCapability);
    out.push_back(cap.type);
    out.insert(out.end(), cap.data.begin(), cap.data.begin() + static_cast<ptrdiff_t>(n));
  }
  store_le16(&out[2], static_cast<uint16_t>(std::min<size_t>(out.size(), 0xffff)));
  return out;
}

// --- String descriptors (USB 2.0 9.6.7) ---

std::vector<uint8_t> build_string_descriptor(std::string_view utf8) {
  std::vector<uint16_t> units;
  size_t i = 0;
  while (i < utf8.size()) {
    const char32_t cp = next_code_point(utf8, i);
    const size_t need = cp >= 0x10000 ? 2 : 1;
    // Truncate to what bLength can describe, never splitting a surrogate pair.
    if (units.size() + need > kMaxStringUnits) break;
    if (cp >= 0x10000) {
      const char32_t v = cp - 0x10000;
      units.push_back(static_cast<uint16_t>(0xd800 | (v >> 10)));
      units.push_back(static_cast<uint16_t>(0xdc00 | (v & 0x3ff)));
    } else {
      units.push_back(static_cast<uint16_t>(cp));
    }
  }
  std::vector<uint8_t> out = {static_cast<uint8_t>(2 + 2 * units.size()), desc::kString};
  for (uint16_t u : units) append_le16(out, u);
  return out;
}

std::vector<uint8_t> build_language_descriptor(std::span<const uint16_t> langids) {
  const size_t n = std::min(langids.size(), kMaxStringUnits);
  std::vector<uint8_t> out = {static_cast<uint8_t>(2 + 2 * n), desc::kString};
  for (size_t i = 0; i < n; ++i) append_le16(out, langids[i]);
  return out;
}

namespace {
// Validates a string descriptor's header and returns its UTF-16LE payload.
Result<std::span<const uint8_t>> string_payload(std::span<const uint8_t> bytes,
                                                std::string_view what) {
  if (bytes.size() < 2) return malformed(std::string(what) + ": fewer than 2 bytes");
  auto len = descriptor_length(bytes, 0, what);
  if (!len) return std::unexpected(len.error());
  if (bytes[1] != desc::kString) {
    return malformed(std::string(what) + ": bDescriptorType " + std::to_string(bytes[1]) +
                     " (expected 3)");
  }
  if (*len % 2 != 0) {
    return malformed(std::string(what) + ": odd bLength " + std::to_string(*len) +
                     " (UTF-16 payload must be whole code units)");
  }
  return bytes.subspan(2, *len - 2);
}
}  // namespace

Result<std::string> parse_string_descriptor(std::span<const uint8_t> bytes) {
  auto payload = string_payload(bytes, "string descriptor");
  if (!payload) return std::unexpected(payload.error());
  const auto p = *payload;
  std::string out;
  const size_t n = p.size() / 2;
  for (size_t i = 0; i < n; ++i) {
    const char32_t u = load_le16(&p[2 * i]);
    if (u >= 0xd800 && u <= 0xdbff && i + 1 < n) {
      const char32_t low = load_le16(&p[2 * (i + 1)]);
      if (low >= 0xdc00 && low <= 0xdfff) {
        append_utf8(out, 0x10000 + ((u - 0xd800) << 10) + (low - 0xdc00));
        ++i;
        continue;
      }
    }
    // An unpaired surrogate (devices do send them) becomes U+FFFD.
    append_utf8(out, (u >= 0xd800 && u <= 0xdfff) ? kReplacement : u);
  }
  return out;
}

Result<std::vector<uint16_t>> parse_language_descriptor(std::span<const uint8_t> bytes) {
  auto payload = string_payload(bytes, "language descriptor");
  if (!payload) return std::unexpected(payload.error());
  std::vector<uint16_t> ids;
  for (size_t i = 0; i + 1 < payload->size(); i += 2) ids.push_back(load_le16(&(*payload)[i]));
  return ids;
}

// --- DescriptorSet ---

const ConfigurationDescriptor* DescriptorSet::find_configuration(uint8_t value) const {
  for (const auto& c : configurations) {
    if (c.value == value) return &c;
  }
  return nullptr;
}

}  // namespace usb
