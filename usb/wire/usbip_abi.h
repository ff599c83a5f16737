// USB/IP wire ABI (Linux Documentation/usb/usbip_protocol.rst, drivers/usb/usbip/usbip_common.h).
// Everything on the wire is big-endian; these are sizes, offsets and constants only. Encoding and
// decoding live in usbip_codec.{h,cc}.
#pragma once

#include <cstddef>
#include <cstdint>

namespace usb::wire::usbip {

constexpr uint16_t kVersion = 0x0111;
constexpr uint16_t kDefaultPort = 3240;

// --- Operation phase (before import) ---
constexpr size_t kOpHeaderSize = 8;  // u16 version, u16 code, u32 status
constexpr uint16_t kOpReqDevlist = 0x8005;
constexpr uint16_t kOpRepDevlist = 0x0005;
constexpr uint16_t kOpReqImport = 0x8003;
constexpr uint16_t kOpRepImport = 0x0003;

// Op status codes (tools/usb/usbip/src/usbip_network.h ST_*).
constexpr uint32_t kStOk = 0;
constexpr uint32_t kStNotAvailable = 1;
constexpr uint32_t kStDevBusy = 2;
constexpr uint32_t kStDevErr = 3;
constexpr uint32_t kStNoDev = 4;
constexpr uint32_t kStError = 5;

constexpr size_t kBusIdSize = 32;
constexpr size_t kPathSize = 256;
constexpr size_t kDeviceRecordSize = 312;   // struct usbip_usb_device
constexpr size_t kInterfaceRecordSize = 4;  // struct usbip_usb_interface
constexpr size_t kDevlistCountSize = 4;     // u32 ndev after the op header
constexpr size_t kImportRequestSize = kBusIdSize;

// Offsets inside the 312-byte device record.
namespace devrec {
constexpr size_t kPath = 0x000;
constexpr size_t kBusId = 0x100;
constexpr size_t kBusNum = 0x120;
constexpr size_t kDevNum = 0x124;
constexpr size_t kSpeed = 0x128;
constexpr size_t kIdVendor = 0x12c;
constexpr size_t kIdProduct = 0x12e;
constexpr size_t kBcdDevice = 0x130;
constexpr size_t kDeviceClass = 0x132;
constexpr size_t kDeviceSubClass = 0x133;
constexpr size_t kDeviceProtocol = 0x134;
constexpr size_t kConfigurationValue = 0x135;
constexpr size_t kNumConfigurations = 0x136;
constexpr size_t kNumInterfaces = 0x137;
static_assert(kNumInterfaces + 1 == kDeviceRecordSize);
}  // namespace devrec

// --- URB phase (after import) ---
constexpr size_t kUrbHeaderSize = 48;
constexpr size_t kIsoDescriptorSize = 16;  // u32 offset, length, actual_length, s32 status
constexpr uint32_t kCmdSubmit = 1;
constexpr uint32_t kCmdUnlink = 2;
constexpr uint32_t kRetSubmit = 3;
constexpr uint32_t kRetUnlink = 4;
constexpr uint32_t kDirOut = 0;
constexpr uint32_t kDirIn = 1;

// Offsets inside the 48-byte URB header.
namespace urb {
constexpr size_t kCommand = 0;
constexpr size_t kSeqnum = 4;
constexpr size_t kDevid = 8;
constexpr size_t kDirection = 12;
constexpr size_t kEp = 16;
// CMD_SUBMIT
constexpr size_t kTransferFlags = 20;
constexpr size_t kTransferBufferLength = 24;
constexpr size_t kStartFrame = 28;
constexpr size_t kNumberOfPackets = 32;
constexpr size_t kInterval = 36;
constexpr size_t kSetup = 40;
// RET_SUBMIT
constexpr size_t kStatus = 20;
constexpr size_t kActualLength = 24;
constexpr size_t kRetStartFrame = 28;
constexpr size_t kRetNumberOfPackets = 32;
constexpr size_t kErrorCount = 36;
// CMD_UNLINK
constexpr size_t kUnlinkSeqnum = 20;
// RET_UNLINK
constexpr size_t kUnlinkStatus = 20;
}  // namespace urb

// URB transfer_flags bits the protocol carries (Linux include/linux/usb.h URB_*).
constexpr uint32_t kUrbShortNotOk = 0x0001;
constexpr uint32_t kUrbIsoAsap = 0x0002;
constexpr uint32_t kUrbNoTransferDmaMap = 0x0004;
constexpr uint32_t kUrbZeroPacket = 0x0040;
constexpr uint32_t kUrbNoInterrupt = 0x0080;
constexpr uint32_t kUrbFreeBuffer = 0x0100;
constexpr uint32_t kUrbDirIn = 0x0200;

constexpr uint32_t kMaxIsoPackets = 1024;  // USBIP_MAX_ISO_PACKETS

}  // namespace usb::wire::usbip
