// USB/IP codec: pure, bounds-checked encode/decode of every PDU (no I/O, no allocation beyond the
// returned values). Decoders validate everything a peer controls against Limits before the caller
// allocates anything. Framing (how many payload bytes follow a header) is computed here too, so
// readers never trust a length they have not checked.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "usb/core/error.h"
#include "usb/core/setup.h"
#include "usb/wire/usbip_abi.h"

namespace usb::wire::usbip {

// Bounds for what a peer may ask us to allocate. Configurable per server/client.
struct Limits {
  uint32_t max_transfer_length = 16u << 20;  // bytes in one URB's buffer
  uint32_t max_iso_packets = kMaxIsoPackets;
};

struct OpHeader {
  uint16_t version = kVersion;
  uint16_t code = 0;
  uint32_t status = kStOk;
  friend bool operator==(const OpHeader&, const OpHeader&) = default;
};

struct InterfaceRecord {
  uint8_t interface_class = 0;
  uint8_t interface_subclass = 0;
  uint8_t interface_protocol = 0;
  friend bool operator==(const InterfaceRecord&, const InterfaceRecord&) = default;
};

// struct usbip_usb_device.
struct DeviceRecord {
  std::string path{};   // at most 255 bytes on the wire (NUL-terminated)
  std::string busid{};  // at most 31 bytes on the wire
  uint32_t busnum = 0;
  uint32_t devnum = 0;
  uint32_t speed = 0;
  uint16_t id_vendor = 0;
  uint16_t id_product = 0;
  uint16_t bcd_device = 0;
  uint8_t device_class = 0;
  uint8_t device_subclass = 0;
  uint8_t device_protocol = 0;
  uint8_t configuration_value = 0;
  uint8_t num_configurations = 0;
  uint8_t num_interfaces = 0;
  friend bool operator==(const DeviceRecord&, const DeviceRecord&) = default;
};

struct DevlistEntry {
  DeviceRecord device;
  std::vector<InterfaceRecord> interfaces{};  // exactly device.num_interfaces
  friend bool operator==(const DevlistEntry&, const DevlistEntry&) = default;
};

// --- Op phase ---
std::array<uint8_t, kOpHeaderSize> encode_op_header(const OpHeader& h);
// Rejects a wrong version (kMalformed). The code is not checked here.
Result<OpHeader> decode_op_header(std::span<const uint8_t> bytes);

std::array<uint8_t, kDeviceRecordSize> encode_device_record(const DeviceRecord& d);
Result<DeviceRecord> decode_device_record(std::span<const uint8_t> bytes);
std::array<uint8_t, kInterfaceRecordSize> encode_interface_record(const InterfaceRecord& i);
InterfaceRecord decode_interface_record(std::span<const uint8_t, kInterfaceRecordSize> bytes);

// OP_REP_DEVLIST: header + ndev + records, one buffer.
std::vector<uint8_t> encode_devlist_reply(std::span<const DevlistEntry> entries);
// Decodes a whole OP_REP_DEVLIST buffer (header included). A wrong version or code, a count the
// buffer cannot hold, or trailing bytes → kMalformed; a non-zero status from the peer → kIo.
Result<std::vector<DevlistEntry>> decode_devlist_reply(std::span<const uint8_t> bytes);
// OP_REQ_IMPORT body: the bus id, NUL-padded. Busids of 32 bytes or more are rejected.
Result<std::array<uint8_t, kImportRequestSize>> encode_import_request(const std::string& busid);
// Returns the busid (up to the first NUL); kMalformed if not NUL-terminated within 32 bytes.
Result<std::string> decode_import_request(std::span<const uint8_t> bytes);
// OP_REP_IMPORT: header, then the device record only when status == kStOk.
std::vector<uint8_t> encode_import_reply(uint32_t status, const DeviceRecord* device);

// --- URB phase ---
struct CmdSubmit {
  uint32_t seqnum = 0;
  uint32_t devid = 0;
  uint32_t direction = kDirOut;
  uint32_t ep = 0;
  uint32_t transfer_flags = 0;
  int32_t transfer_buffer_length = 0;
  int32_t start_frame = 0;
  int32_t number_of_packets = 0;
  int32_t interval = 0;
  std::array<uint8_t, 8> setup{};
  friend bool operator==(const CmdSubmit&, const CmdSubmit&) = default;
};

struct RetSubmit {
  uint32_t seqnum = 0;
  uint32_t devid = 0;
  uint32_t direction = 0;
  uint32_t ep = 0;
  int32_t status = 0;
  int32_t actual_length = 0;
  int32_t start_frame = 0;
  int32_t number_of_packets = 0;
  int32_t error_count = 0;
  friend bool operator==(const RetSubmit&, const RetSubmit&) = default;
};

struct CmdUnlink {
  uint32_t seqnum = 0;
  uint32_t devid = 0;
  uint32_t direction = 0;
  uint32_t ep = 0;
  uint32_t unlink_seqnum = 0;
  friend bool operator==(const CmdUnlink&, const CmdUnlink&) = default;
};

struct RetUnlink {
  uint32_t seqnum = 0;
  uint32_t devid = 0;
  uint32_t direction = 0;
  uint32_t ep = 0;
  int32_t status = 0;
  friend bool operator==(const RetUnlink&, const RetUnlink&) = default;
};

using UrbPdu = std::variant<CmdSubmit, RetSubmit, CmdUnlink, RetUnlink>;

struct IsoDescriptor {
  uint32_t offset = 0;
  uint32_t length = 0;
  uint32_t actual_length = 0;
  int32_t status = 0;
  friend bool operator==(const IsoDescriptor&, const IsoDescriptor&) = default;
};

using UrbHeaderBytes = std::array<uint8_t, kUrbHeaderSize>;
UrbHeaderBytes encode(const CmdSubmit& pdu);
UrbHeaderBytes encode(const RetSubmit& pdu);
UrbHeaderBytes encode(const CmdUnlink& pdu);
UrbHeaderBytes encode(const RetUnlink& pdu);

// Decodes any 48-byte URB header. Validates against limits: unknown command, direction not 0/1,
// ep > 15, negative or oversized transfer_buffer_length, number_of_packets outside
// [-1, max_iso_packets], negative actual_length → kMalformed / kTooLarge.
Result<UrbPdu> decode_urb_header(std::span<const uint8_t> bytes, const Limits& limits = {});

// How many payload bytes follow a CMD_SUBMIT on the wire before any iso descriptors:
// transfer_buffer_length for OUT, 0 for IN.
uint32_t submit_payload_length(const CmdSubmit& pdu);
// How many iso descriptor bytes follow a CMD_SUBMIT (16 × number_of_packets, 0 if not iso).
uint32_t submit_iso_length(const CmdSubmit& pdu);
// For a RET_SUBMIT received by a client: payload bytes (actual_length for IN, 0 for OUT), given
// the direction of the original submit, and the iso descriptor bytes.
uint32_t ret_submit_payload_length(const RetSubmit& pdu, uint32_t submit_direction);
uint32_t ret_submit_iso_length(const RetSubmit& pdu);

std::array<uint8_t, kIsoDescriptorSize> encode_iso_descriptor(const IsoDescriptor& d);
void encode_iso_descriptors(std::span<const IsoDescriptor> in, std::span<uint8_t> out);
// Decodes n descriptors and checks each lies inside a buffer of buffer_length bytes
// (offset + length ≤ buffer_length; actual_length ≤ length).
Result<std::vector<IsoDescriptor>> decode_iso_descriptors(std::span<const uint8_t> bytes,
                                                          uint32_t buffer_length);

// devid helpers: devid = busnum << 16 | devnum.
constexpr uint32_t make_devid(uint32_t busnum, uint32_t devnum) {
  return (busnum << 16) | (devnum & 0xffff);
}

}  // namespace usb::wire::usbip
