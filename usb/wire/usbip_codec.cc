// USB/IP PDU encoding and decoding (Linux Documentation/usb/usbip_protocol.rst; layouts of
// struct op_common, usbip_usb_device, usbip_usb_interface in tools/usb/usbip and struct
// usbip_header, usbip_iso_packet_descriptor in drivers/usb/usbip/usbip_common.h). Every integer
// is big-endian on the wire except the 8 setup bytes, which travel as the USB SETUP packet
// (little-endian fields, USB 2.0 9.3) and are copied verbatim.
#include "usb/wire/usbip_codec.h"

#include <algorithm>
#include <cstring>

#include "usb/core/byte_order.h"

namespace usb::wire::usbip {
namespace {

std::unexpected<Error> malformed(std::string what) {
  return Error::make(Error::Code::kMalformed, std::move(what));
}

std::string hex(uint32_t v, int digits) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s = "0x";
  for (int i = digits - 1; i >= 0; --i) s.push_back(kDigits[(v >> (4 * i)) & 0xf]);
  return s;
}

int32_t load_be32s(const uint8_t* p) {
  return static_cast<int32_t>(load_be32(p));
}
void store_be32s(uint8_t* p, int32_t v) {
  store_be32(p, static_cast<uint32_t>(v));
}

// A NUL-terminated string inside a fixed-size field; anything after the first NUL is ignored.
Result<std::string> load_cstring(std::span<const uint8_t> field, std::string_view what) {
  const auto nul = std::find(field.begin(), field.end(), uint8_t{0});
  if (nul == field.end()) {
    return malformed(std::string(what) + " is not NUL-terminated within " +
                     std::to_string(field.size()) + " bytes");
  }
  return std::string(field.begin(), nul);
}

// Copies at most field.size() - 1 bytes and NUL-pads the rest, so the field stays terminated.
void store_cstring(std::span<uint8_t> field, std::string_view s) {
  std::fill(field.begin(), field.end(), uint8_t{0});
  const size_t n = std::min(s.size(), field.size() - 1);
  std::copy_n(s.begin(), n, field.begin());
}

void put_basic(UrbHeaderBytes& b, uint32_t command, uint32_t seqnum, uint32_t devid,
               uint32_t direction, uint32_t ep) {
  store_be32(&b[urb::kCommand], command);
  store_be32(&b[urb::kSeqnum], seqnum);
  store_be32(&b[urb::kDevid], devid);
  store_be32(&b[urb::kDirection], direction);
  store_be32(&b[urb::kEp], ep);
}

// number_of_packets: the iso packet count, or 0 / -1 (0xffffffff) when not isochronous.
Result<void> check_packets(int32_t n, const Limits& limits, std::string_view what) {
  if (n < -1) {
    return malformed(std::string(what) + ": number_of_packets " + std::to_string(n) + " < -1");
  }
  if (n > 0 && static_cast<uint32_t>(n) > limits.max_iso_packets) {
    return Error::make(Error::Code::kTooLarge, std::string(what) + ": number_of_packets " +
                                                   std::to_string(n) + " exceeds the limit " +
                                                   std::to_string(limits.max_iso_packets));
  }
  return {};
}

Result<void> check_length(int32_t n, const Limits& limits, std::string_view what) {
  if (n < 0) return malformed(std::string(what) + " " + std::to_string(n) + " is negative");
  if (static_cast<uint32_t>(n) > limits.max_transfer_length) {
    return Error::make(Error::Code::kTooLarge, std::string(what) + " " + std::to_string(n) +
                                                   " exceeds the limit " +
                                                   std::to_string(limits.max_transfer_length));
  }
  return {};
}

uint32_t iso_bytes(int32_t number_of_packets) {
  // At most 2^31 - 1 packets × 16 does not fit 32 bits; decoded headers are bounded far lower
  // by Limits, but a caller-made struct may not be.
  if (number_of_packets <= 0) return 0;
  const uint64_t n = static_cast<uint64_t>(number_of_packets) * kIsoDescriptorSize;
  return static_cast<uint32_t>(std::min<uint64_t>(n, UINT32_MAX));
}

}  // namespace

// --- Op phase ---

std::array<uint8_t, kOpHeaderSize> encode_op_header(const OpHeader& h) {
  std::array<uint8_t, kOpHeaderSize> b{};
  store_be16(&b[0], h.version);
  store_be16(&b[2], h.code);
  store_be32(&b[4], h.status);
  return b;
}

Result<OpHeader> decode_op_header(std::span<const uint8_t> bytes) {
  if (bytes.size() < kOpHeaderSize) {
    return malformed("op header: " + std::to_string(bytes.size()) + " bytes, need 8");
  }
  OpHeader h{load_be16(&bytes[0]), load_be16(&bytes[2]), load_be32(&bytes[4])};
  if (h.version != kVersion) {
    return malformed("op header: version " + hex(h.version, 4) + " is not 0x0111");
  }
  return h;
}

std::array<uint8_t, kDeviceRecordSize> encode_device_record(const DeviceRecord& d) {
  std::array<uint8_t, kDeviceRecordSize> b{};
  store_cstring(std::span(b).subspan(devrec::kPath, kPathSize), d.path);
  store_cstring(std::span(b).subspan(devrec::kBusId, kBusIdSize), d.busid);
  store_be32(&b[devrec::kBusNum], d.busnum);
  store_be32(&b[devrec::kDevNum], d.devnum);
  store_be32(&b[devrec::kSpeed], d.speed);
  store_be16(&b[devrec::kIdVendor], d.id_vendor);
  store_be16(&b[devrec::kIdProduct], d.id_product);
  store_be16(&b[devrec::kBcdDevice], d.bcd_device);
  b[devrec::kDeviceClass] = d.device_class;
  b[devrec::kDeviceSubClass] = d.device_subclass;
  b[devrec::kDeviceProtocol] = d.device_protocol;
  b[devrec::kConfigurationValue] = d.configuration_value;
  b[devrec::kNumConfigurations] = d.num_configurations;
  b[devrec::kNumInterfaces] = d.num_interfaces;
  return b;
}

Result<DeviceRecord> decode_device_record(std::span<const uint8_t> bytes) {
  if (bytes.size() < kDeviceRecordSize) {
    return malformed("device record: " + std::to_string(bytes.size()) + " bytes, need 312");
  }
  DeviceRecord d;
  auto path = load_cstring(bytes.subspan(devrec::kPath, kPathSize), "device record path");
  if (!path) return std::unexpected(path.error());
  auto busid = load_cstring(bytes.subspan(devrec::kBusId, kBusIdSize), "device record busid");
  if (!busid) return std::unexpected(busid.error());
  d.path = std::move(*path);
  d.busid = std::move(*busid);
  d.busnum = load_be32(&bytes[devrec::kBusNum]);
  d.devnum = load_be32(&bytes[devrec::kDevNum]);
  d.speed = load_be32(&bytes[devrec::kSpeed]);
  d.id_vendor = load_be16(&bytes[devrec::kIdVendor]);
  d.id_product = load_be16(&bytes[devrec::kIdProduct]);
  d.bcd_device = load_be16(&bytes[devrec::kBcdDevice]);
  d.device_class = bytes[devrec::kDeviceClass];
  d.device_subclass = bytes[devrec::kDeviceSubClass];
  d.device_protocol = bytes[devrec::kDeviceProtocol];
  d.configuration_value = bytes[devrec::kConfigurationValue];
  d.num_configurations = bytes[devrec::kNumConfigurations];
  d.num_interfaces = bytes[devrec::kNumInterfaces];
  return d;
}

std::array<uint8_t, kInterfaceRecordSize> encode_interface_record(const InterfaceRecord& i) {
  return {i.interface_class, i.interface_subclass, i.interface_protocol, 0};
}

InterfaceRecord decode_interface_record(std::span<const uint8_t, kInterfaceRecordSize> bytes) {
  return InterfaceRecord{bytes[0], bytes[1], bytes[2]};  // bytes[3] is padding
}

std::vector<uint8_t> encode_devlist_reply(std::span<const DevlistEntry> entries) {
  std::vector<uint8_t> out;
  const auto h = encode_op_header(OpHeader{kVersion, kOpRepDevlist, kStOk});
  out.insert(out.end(), h.begin(), h.end());
  uint8_t count[kDevlistCountSize];
  store_be32(count, static_cast<uint32_t>(entries.size()));
  out.insert(out.end(), count, count + kDevlistCountSize);
  for (const auto& e : entries) {
    const auto rec = encode_device_record(e.device);
    out.insert(out.end(), rec.begin(), rec.end());
    // The reader frames by bNumInterfaces, so exactly that many records follow: missing ones are
    // zero, surplus ones are dropped.
    for (size_t i = 0; i < e.device.num_interfaces; ++i) {
      const auto r =
          encode_interface_record(i < e.interfaces.size() ? e.interfaces[i] : InterfaceRecord{});
      out.insert(out.end(), r.begin(), r.end());
    }
  }
  return out;
}

Result<std::vector<DevlistEntry>> decode_devlist_reply(std::span<const uint8_t> bytes) {
  auto h = decode_op_header(bytes);
  if (!h) return std::unexpected(h.error());
  if (h->code != kOpRepDevlist) {
    return malformed("devlist reply: code " + hex(h->code, 4) + " is not OP_REP_DEVLIST (0x0005)");
  }
  if (h->status != kStOk) {
    return Error::make(Error::Code::kIo,
                       "devlist reply: peer reported status " + std::to_string(h->status));
  }
  if (bytes.size() < kOpHeaderSize + kDevlistCountSize) {
    return malformed("devlist reply: missing device count");
  }
  const uint32_t ndev = load_be32(&bytes[kOpHeaderSize]);
  size_t offset = kOpHeaderSize + kDevlistCountSize;
  // Every entry takes at least a device record: bound the count before reserving anything.
  if (ndev > (bytes.size() - offset) / kDeviceRecordSize) {
    return malformed("devlist reply: " + std::to_string(ndev) + " devices cannot fit in " +
                     std::to_string(bytes.size() - offset) + " bytes");
  }
  std::vector<DevlistEntry> entries;
  entries.reserve(ndev);
  for (uint32_t n = 0; n < ndev; ++n) {
    auto dev = decode_device_record(bytes.subspan(offset));
    if (!dev) return std::unexpected(dev.error());
    offset += kDeviceRecordSize;
    const size_t intf_bytes = size_t{dev->num_interfaces} * kInterfaceRecordSize;
    if (bytes.size() - offset < intf_bytes) {
      return malformed("devlist reply: device " + std::to_string(n) + " declares " +
                       std::to_string(dev->num_interfaces) + " interfaces but the buffer ends");
    }
    DevlistEntry e{std::move(*dev), {}};
    for (size_t i = 0; i < e.device.num_interfaces; ++i) {
      e.interfaces.push_back(decode_interface_record(
          bytes.subspan(offset + i * kInterfaceRecordSize).first<kInterfaceRecordSize>()));
    }
    offset += intf_bytes;
    entries.push_back(std::move(e));
  }
  if (offset != bytes.size()) {
    return malformed("devlist reply: " + std::to_string(bytes.size() - offset) +
                     " trailing bytes after the last device");
  }
  return entries;
}

Result<std::array<uint8_t, kImportRequestSize>> encode_import_request(const std::string& busid) {
  if (busid.size() >= kBusIdSize) {
    return Error::make(
        Error::Code::kInvalidArgument,
        "busid \"" + busid + "\" has " + std::to_string(busid.size()) + " bytes; at most 31 fit");
  }
  if (busid.find('\0') != std::string::npos) {
    return Error::make(Error::Code::kInvalidArgument, "busid contains a NUL byte");
  }
  std::array<uint8_t, kImportRequestSize> b{};
  store_cstring(b, busid);
  return b;
}

Result<std::string> decode_import_request(std::span<const uint8_t> bytes) {
  if (bytes.size() < kImportRequestSize) {
    return malformed("import request: " + std::to_string(bytes.size()) + " bytes, need 32");
  }
  return load_cstring(bytes.first(kImportRequestSize), "import request busid");
}

std::vector<uint8_t> encode_import_reply(uint32_t status, const DeviceRecord* device) {
  // A success reply must carry the device record (the client reads 312 more bytes); without one
  // the only safe thing to say is that the import failed.
  if (status == kStOk && device == nullptr) status = kStError;
  const auto h = encode_op_header(OpHeader{kVersion, kOpRepImport, status});
  std::vector<uint8_t> out(h.begin(), h.end());
  if (status == kStOk) {
    const auto rec = encode_device_record(*device);
    out.insert(out.end(), rec.begin(), rec.end());
  }
  return out;
}

// --- URB phase ---

UrbHeaderBytes encode(const CmdSubmit& p) {
  UrbHeaderBytes b{};
  put_basic(b, kCmdSubmit, p.seqnum, p.devid, p.direction, p.ep);
  store_be32(&b[urb::kTransferFlags], p.transfer_flags);
  store_be32s(&b[urb::kTransferBufferLength], p.transfer_buffer_length);
  store_be32s(&b[urb::kStartFrame], p.start_frame);
  store_be32s(&b[urb::kNumberOfPackets], p.number_of_packets);
  store_be32s(&b[urb::kInterval], p.interval);
  std::copy(p.setup.begin(), p.setup.end(), &b[urb::kSetup]);
  return b;
}

UrbHeaderBytes encode(const RetSubmit& p) {
  UrbHeaderBytes b{};
  put_basic(b, kRetSubmit, p.seqnum, p.devid, p.direction, p.ep);
  store_be32s(&b[urb::kStatus], p.status);
  store_be32s(&b[urb::kActualLength], p.actual_length);
  store_be32s(&b[urb::kRetStartFrame], p.start_frame);
  store_be32s(&b[urb::kRetNumberOfPackets], p.number_of_packets);
  store_be32s(&b[urb::kErrorCount], p.error_count);
  return b;  // bytes 40..47 are padding, zero
}

UrbHeaderBytes encode(const CmdUnlink& p) {
  UrbHeaderBytes b{};
  put_basic(b, kCmdUnlink, p.seqnum, p.devid, p.direction, p.ep);
  store_be32(&b[urb::kUnlinkSeqnum], p.unlink_seqnum);
  return b;
}

UrbHeaderBytes encode(const RetUnlink& p) {
  UrbHeaderBytes b{};
  put_basic(b, kRetUnlink, p.seqnum, p.devid, p.direction, p.ep);
  store_be32s(&b[urb::kUnlinkStatus], p.status);
  return b;
}

Result<UrbPdu> decode_urb_header(std::span<const uint8_t> bytes, const Limits& limits) {
  if (bytes.size() < kUrbHeaderSize) {
    return malformed("URB header: " + std::to_string(bytes.size()) + " bytes, need 48");
  }
  const uint32_t command = load_be32(&bytes[urb::kCommand]);
  const uint32_t seqnum = load_be32(&bytes[urb::kSeqnum]);
  const uint32_t devid = load_be32(&bytes[urb::kDevid]);
  const uint32_t direction = load_be32(&bytes[urb::kDirection]);
  const uint32_t ep = load_be32(&bytes[urb::kEp]);
  const std::string where = "URB seqnum " + std::to_string(seqnum);
  if (command < kCmdSubmit || command > kRetUnlink) {
    return malformed(where + ": unknown command " + std::to_string(command));
  }
  if (direction != kDirOut && direction != kDirIn) {
    return malformed(where + ": direction " + std::to_string(direction) + " is neither 0 nor 1");
  }
  if (ep > 15) return malformed(where + ": endpoint " + std::to_string(ep) + " > 15");

  switch (command) {
    case kCmdSubmit: {
      CmdSubmit p{seqnum, devid, direction, ep};
      p.transfer_flags = load_be32(&bytes[urb::kTransferFlags]);
      p.transfer_buffer_length = load_be32s(&bytes[urb::kTransferBufferLength]);
      p.start_frame = load_be32s(&bytes[urb::kStartFrame]);
      p.number_of_packets = load_be32s(&bytes[urb::kNumberOfPackets]);
      p.interval = load_be32s(&bytes[urb::kInterval]);
      std::copy_n(&bytes[urb::kSetup], p.setup.size(), p.setup.begin());
      if (auto ok = check_length(p.transfer_buffer_length, limits,
                                 where + " CMD_SUBMIT transfer_buffer_length");
          !ok) {
        return std::unexpected(ok.error());
      }
      if (auto ok = check_packets(p.number_of_packets, limits, where + " CMD_SUBMIT"); !ok) {
        return std::unexpected(ok.error());
      }
      return p;
    }
    case kRetSubmit: {
      RetSubmit p{seqnum, devid, direction, ep};
      p.status = load_be32s(&bytes[urb::kStatus]);
      p.actual_length = load_be32s(&bytes[urb::kActualLength]);
      p.start_frame = load_be32s(&bytes[urb::kRetStartFrame]);
      p.number_of_packets = load_be32s(&bytes[urb::kRetNumberOfPackets]);
      p.error_count = load_be32s(&bytes[urb::kErrorCount]);
      if (auto ok = check_length(p.actual_length, limits, where + " RET_SUBMIT actual_length");
          !ok) {
        return std::unexpected(ok.error());
      }
      if (auto ok = check_packets(p.number_of_packets, limits, where + " RET_SUBMIT"); !ok) {
        return std::unexpected(ok.error());
      }
      return p;
    }
    case kCmdUnlink:
      return CmdUnlink{seqnum, devid, direction, ep, load_be32(&bytes[urb::kUnlinkSeqnum])};
    default:
      return RetUnlink{seqnum, devid, direction, ep, load_be32s(&bytes[urb::kUnlinkStatus])};
  }
}

uint32_t submit_payload_length(const CmdSubmit& pdu) {
  if (pdu.direction != kDirOut || pdu.transfer_buffer_length < 0) return 0;
  return static_cast<uint32_t>(pdu.transfer_buffer_length);
}

// number_of_packets is only meaningful on isochronous endpoints, which the header does not name;
// a positive count is taken to mean iso (non-iso URBs carry 0 or -1). A caller that knows the
// endpoint is not isochronous should ignore a positive count, as Linux's usbip_recv_iso does.
uint32_t submit_iso_length(const CmdSubmit& pdu) {
  return iso_bytes(pdu.number_of_packets);
}

uint32_t ret_submit_payload_length(const RetSubmit& pdu, uint32_t submit_direction) {
  if (submit_direction != kDirIn || pdu.actual_length < 0) return 0;
  return static_cast<uint32_t>(pdu.actual_length);
}

uint32_t ret_submit_iso_length(const RetSubmit& pdu) {
  return iso_bytes(pdu.number_of_packets);
}

std::array<uint8_t, kIsoDescriptorSize> encode_iso_descriptor(const IsoDescriptor& d) {
  std::array<uint8_t, kIsoDescriptorSize> b{};
  store_be32(&b[0], d.offset);
  store_be32(&b[4], d.length);
  store_be32(&b[8], d.actual_length);
  store_be32s(&b[12], d.status);
  return b;
}

void encode_iso_descriptors(std::span<const IsoDescriptor> in, std::span<uint8_t> out) {
  // Writes only the descriptors that fit entirely in `out`.
  const size_t n = std::min(in.size(), out.size() / kIsoDescriptorSize);
  for (size_t i = 0; i < n; ++i) {
    const auto b = encode_iso_descriptor(in[i]);
    std::copy(b.begin(), b.end(), out.begin() + static_cast<ptrdiff_t>(i * kIsoDescriptorSize));
  }
}

Result<std::vector<IsoDescriptor>> decode_iso_descriptors(std::span<const uint8_t> bytes,
                                                          uint32_t buffer_length) {
  if (bytes.size() % kIsoDescriptorSize != 0) {
    return malformed("iso descriptors: " + std::to_string(bytes.size()) +
                     " bytes is not a multiple of 16");
  }
  const size_t n = bytes.size() / kIsoDescriptorSize;
  std::vector<IsoDescriptor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = &bytes[i * kIsoDescriptorSize];
    IsoDescriptor d{load_be32(p), load_be32(p + 4), load_be32(p + 8), load_be32s(p + 12)};
    if (uint64_t{d.offset} + d.length > buffer_length) {
      return malformed("iso descriptor " + std::to_string(i) + ": offset " +
                       std::to_string(d.offset) + " + length " + std::to_string(d.length) +
                       " exceeds the " + std::to_string(buffer_length) + "-byte buffer");
    }
    if (d.actual_length > d.length) {
      return malformed("iso descriptor " + std::to_string(i) + ": actual_length " +
                       std::to_string(d.actual_length) + " > length " + std::to_string(d.length));
    }
    out.push_back(d);
  }
  return out;
}

}  // namespace usb::wire::usbip
