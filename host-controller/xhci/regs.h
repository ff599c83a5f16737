// xHCI register layout and bits (xHCI 1.2 chapter 5): capability registers, operational
// registers with the per-port register sets, runtime registers with the interrupter sets, and the
// doorbell array — what Linux's xhci-hcd programs (see ../../shared/PROTOCOLS.md). Offsets are
// from the start of each block; the model places the blocks at CAPLENGTH, RTSOFF and DBOFF.
// Pure constants, no I/O.
#pragma once

#include <cstdint>

namespace hc::xhci::reg {

// --- Capability registers (5.3) ---
inline constexpr uint32_t kCapLength = 0x00;  // 1 byte; HCIVERSION at 0x02 (2 bytes)
inline constexpr uint32_t kHciVersion = 0x02;
inline constexpr uint32_t kHcsParams1 = 0x04;  // MaxSlots 7:0, MaxIntrs 18:8, MaxPorts 31:24
inline constexpr uint32_t kHcsParams2 = 0x08;  // IST 3:0, ERST Max 7:4, scratchpads 31:27/25:21
inline constexpr uint32_t kHcsParams3 = 0x0c;  // U1/U2 device exit latency
inline constexpr uint32_t kHccParams1 = 0x10;  // AC64 bit 0, CSZ bit 2, xECP 31:16 (dwords)
inline constexpr uint32_t kDbOff = 0x14;
inline constexpr uint32_t kRtsOff = 0x18;
inline constexpr uint32_t kHccParams2 = 0x1c;
inline constexpr uint16_t kVersion = 0x0100;  // 1.0, as QEMU 7.2's qemu-xhci reports

// --- Operational registers (5.4), at CAPLENGTH ---
inline constexpr uint32_t kUsbCmd = 0x00;
inline constexpr uint32_t kUsbSts = 0x04;
inline constexpr uint32_t kPageSize = 0x08;  // bit n set: 2^(n+12) bytes; the model: 4 KiB
inline constexpr uint32_t kDnCtrl = 0x14;
inline constexpr uint32_t kCrcr = 0x18;       // 64 bits
inline constexpr uint32_t kDcbaap = 0x30;     // 64 bits
inline constexpr uint32_t kConfig = 0x38;     // MaxSlotsEn 7:0
inline constexpr uint32_t kPortBase = 0x400;  // port n (1-based) at 0x400 + 0x10 * (n - 1)
inline constexpr uint32_t kPortStride = 0x10;
inline constexpr uint32_t kPortSc = 0x0;
inline constexpr uint32_t kPortPmsc = 0x4;
inline constexpr uint32_t kPortLi = 0x8;
inline constexpr uint32_t kPortHlpmc = 0xc;

// USBCMD (5.4.1)
inline constexpr uint32_t kCmdRun = 1u << 0;
inline constexpr uint32_t kCmdHcReset = 1u << 1;
inline constexpr uint32_t kCmdInte = 1u << 2;
inline constexpr uint32_t kCmdHsee = 1u << 3;
inline constexpr uint32_t kCmdLhcrst = 1u << 7;
inline constexpr uint32_t kCmdCss = 1u << 8;
inline constexpr uint32_t kCmdCrs = 1u << 9;
inline constexpr uint32_t kCmdEwe = 1u << 10;

// USBSTS (5.4.2); HSE, EINT, PCD, SRE are RW1C: 0x41c
inline constexpr uint32_t kStsHalted = 1u << 0;
inline constexpr uint32_t kStsHse = 1u << 2;
inline constexpr uint32_t kStsEint = 1u << 3;
inline constexpr uint32_t kStsPcd = 1u << 4;
inline constexpr uint32_t kStsSss = 1u << 8;
inline constexpr uint32_t kStsRss = 1u << 9;
inline constexpr uint32_t kStsSre = 1u << 10;
inline constexpr uint32_t kStsCnr = 1u << 11;
inline constexpr uint32_t kStsHce = 1u << 12;
inline constexpr uint32_t kStsW1c = kStsHse | kStsEint | kStsPcd | kStsSre;
static_assert(kStsW1c == 0x41c);

// CRCR (5.4.5)
inline constexpr uint64_t kCrcrRcs = 1u << 0;
inline constexpr uint64_t kCrcrCs = 1u << 1;
inline constexpr uint64_t kCrcrCa = 1u << 2;
inline constexpr uint64_t kCrcrCrr = 1u << 3;
inline constexpr uint64_t kCrcrPointerMask = ~uint64_t{0x3f};

// PORTSC (5.4.8)
inline constexpr uint32_t kPortCcs = 1u << 0;
inline constexpr uint32_t kPortPed = 1u << 1;  // RW1C: writing 1 disables the port
inline constexpr uint32_t kPortOca = 1u << 3;
inline constexpr uint32_t kPortPr = 1u << 4;
inline constexpr uint32_t kPortPlsShift = 5;  // 8:5
inline constexpr uint32_t kPortPlsMask = 0xfu << kPortPlsShift;
inline constexpr uint32_t kPortPp = 1u << 9;
inline constexpr uint32_t kPortSpeedShift = 10;  // 13:10, the Protocol Speed ID
inline constexpr uint32_t kPortSpeedMask = 0xfu << kPortSpeedShift;
inline constexpr uint32_t kPortLws = 1u << 16;
inline constexpr uint32_t kPortCsc = 1u << 17;
inline constexpr uint32_t kPortPec = 1u << 18;
inline constexpr uint32_t kPortWrc = 1u << 19;
inline constexpr uint32_t kPortOcc = 1u << 20;
inline constexpr uint32_t kPortPrc = 1u << 21;
inline constexpr uint32_t kPortPlc = 1u << 22;
inline constexpr uint32_t kPortCec = 1u << 23;
inline constexpr uint32_t kPortCas = 1u << 24;
inline constexpr uint32_t kPortWce = 1u << 25;
inline constexpr uint32_t kPortWde = 1u << 26;
inline constexpr uint32_t kPortWoe = 1u << 27;
inline constexpr uint32_t kPortDr = 1u << 30;
inline constexpr uint32_t kPortWpr = 1u << 31;
inline constexpr uint32_t kPortChangeBits =
    kPortCsc | kPortPec | kPortWrc | kPortOcc | kPortPrc | kPortPlc | kPortCec;
inline constexpr uint32_t kPortW1c = kPortChangeBits | kPortPed;
static_assert(kPortW1c == 0x00fe0002);
// Port link states (PLS) and default Protocol Speed IDs (7.2.2.1.1).
inline constexpr uint32_t kPlsU0 = 0, kPlsDisabled = 4, kPlsRxDetect = 5, kPlsPolling = 7;
inline constexpr uint32_t kSpeedFull = 1, kSpeedLow = 2, kSpeedHigh = 3, kSpeedSuper = 4;

// --- Runtime registers (5.5), at RTSOFF ---
inline constexpr uint32_t kMfindex = 0x00;          // 13:0, 125 µs units
inline constexpr uint32_t kInterrupterBase = 0x20;  // interrupter n at 0x20 + 0x20 * n
inline constexpr uint32_t kInterrupterStride = 0x20;
inline constexpr uint32_t kIman = 0x00;    // IP bit 0 (RW1C), IE bit 1
inline constexpr uint32_t kImod = 0x04;    // IMODI 15:0 (250 ns units), IMODC 31:16
inline constexpr uint32_t kErstSz = 0x08;  // 15:0
inline constexpr uint32_t kErstBa = 0x10;  // 64 bits, 63:6
inline constexpr uint32_t kErdp = 0x18;    // 64 bits: DESI 2:0, EHB bit 3 (RW1C), pointer 63:4
inline constexpr uint32_t kImanIp = 1u << 0;
inline constexpr uint32_t kImanIe = 1u << 1;
inline constexpr uint64_t kErdpEhb = 1u << 3;
inline constexpr uint64_t kErdpPointerMask = ~uint64_t{0xf};

// --- Doorbells (5.6), at DBOFF: DB[0] rings the command ring (target 0), DB[slot] an endpoint
// (target = DCI 1..31; stream id 31:16).
inline constexpr uint32_t kDoorbellStride = 4;

// --- Extended capabilities (7) ---
inline constexpr uint8_t kExtCapSupportedProtocol = 2;  // 7.2: one per USB 2 / USB 3 port range

}  // namespace hc::xhci::reg
