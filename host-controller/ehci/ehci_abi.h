// EHCI 1.0 ABI (Enhanced Host Controller Interface Specification for USB, rev 1.0): capability
// and operational registers (section 2.2, 2.3), the schedule data structures the guest builds in
// its memory — link pointers (3.1), isochronous transfer descriptors (iTD, 3.3), queue element
// transfer descriptors (qTD, 3.5) and queue heads (QH, 3.6) — with accessors for the fields the
// controller reads and writes. Layouts are static_asserted; the model reports no 64-bit
// addressing (HCCPARAMS bit 0 = 0), so the 32-bit forms are the ones in guest memory.
// Pure data, no I/O; used on the controller's loop.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace hc::ehci {

namespace reg {
// --- Capability registers (2.2) ---
inline constexpr uint32_t kCapLength = 0x00;   // 1 byte
inline constexpr uint32_t kHciVersion = 0x02;  // 2 bytes
inline constexpr uint32_t kHcsParams = 0x04;   // N_PORTS 3:0, PPC 4, N_PCC 11:8, N_CC 15:12
inline constexpr uint32_t kHccParams = 0x08;   // 64-bit 0, PFLF 1, ASPC 2, IST 7:4, EECP 15:8
inline constexpr uint32_t kPortRoute = 0x0c;
inline constexpr uint16_t kVersion = 0x0100;

// --- Operational registers (2.3), at CAPLENGTH ---
inline constexpr uint32_t kUsbCmd = 0x00;
inline constexpr uint32_t kUsbSts = 0x04;
inline constexpr uint32_t kUsbIntr = 0x08;
inline constexpr uint32_t kFrIndex = 0x0c;
inline constexpr uint32_t kCtrlDsSegment = 0x10;
inline constexpr uint32_t kPeriodicListBase = 0x14;
inline constexpr uint32_t kAsyncListAddr = 0x18;
inline constexpr uint32_t kConfigFlag = 0x40;
inline constexpr uint32_t kPortSc = 0x44;  // port n (1-based) at 0x44 + 4 * (n - 1)

// USBCMD (2.3.1)
inline constexpr uint32_t kCmdRun = 1u << 0;
inline constexpr uint32_t kCmdReset = 1u << 1;
inline constexpr uint32_t kCmdFlsMask = 3u << 2;  // frame list size: 0 = 1024 entries
inline constexpr uint32_t kCmdPse = 1u << 4;      // periodic schedule enable
inline constexpr uint32_t kCmdAse = 1u << 5;      // asynchronous schedule enable
inline constexpr uint32_t kCmdIaad = 1u << 6;     // interrupt on async advance doorbell
inline constexpr uint32_t kCmdItcShift = 16;      // interrupt threshold control, microframes
inline constexpr uint32_t kCmdItcMask = 0xffu << kCmdItcShift;

// USBSTS (2.3.2); bits 5:0 are write-1-to-clear, USBINTR (2.3.3) enables the same bits.
inline constexpr uint32_t kStsInt = 1u << 0;
inline constexpr uint32_t kStsErrInt = 1u << 1;
inline constexpr uint32_t kStsPcd = 1u << 2;  // port change detect
inline constexpr uint32_t kStsFlr = 1u << 3;  // frame list rollover
inline constexpr uint32_t kStsHse = 1u << 4;  // host system error
inline constexpr uint32_t kStsIaa = 1u << 5;  // interrupt on async advance
inline constexpr uint32_t kStsW1c = 0x3fu;
inline constexpr uint32_t kStsHalted = 1u << 12;
inline constexpr uint32_t kStsReclamation = 1u << 13;
inline constexpr uint32_t kStsPss = 1u << 14;  // periodic schedule status
inline constexpr uint32_t kStsAss = 1u << 15;  // asynchronous schedule status

// PORTSC (2.3.9)
inline constexpr uint32_t kPortCcs = 1u << 0;
inline constexpr uint32_t kPortCsc = 1u << 1;   // W1C
inline constexpr uint32_t kPortPed = 1u << 2;   // software may only clear it
inline constexpr uint32_t kPortPedc = 1u << 3;  // W1C
inline constexpr uint32_t kPortOca = 1u << 4;
inline constexpr uint32_t kPortOcc = 1u << 5;  // W1C
inline constexpr uint32_t kPortFpr = 1u << 6;
inline constexpr uint32_t kPortSuspend = 1u << 7;
inline constexpr uint32_t kPortReset = 1u << 8;
inline constexpr uint32_t kPortLineShift = 10;  // line status 11:10 (K-state 01 = low speed)
inline constexpr uint32_t kPortPower = 1u << 12;
inline constexpr uint32_t kPortOwner = 1u << 13;  // 1: a companion controller owns the port
inline constexpr uint32_t kPortW1c = kPortCsc | kPortPedc | kPortOcc;
static_assert(kPortW1c == 0x2a);
}  // namespace reg

// Link pointer (3.1): T (terminate) bit 0, Typ 2:1, address 31:5.
enum class LinkType : uint8_t { kItd = 0, kQh = 1, kSitd = 2, kFstn = 3 };
struct Link {
  uint32_t raw = 1;
  bool terminate() const { return raw & 1u; }
  LinkType type() const { return static_cast<LinkType>((raw >> 1) & 3u); }
  uint32_t address() const { return raw & ~0x1fu; }
};
static_assert(sizeof(Link) == 4);

// qTD token (3.5.3).
enum class Pid : uint8_t { kOut = 0, kIn = 1, kSetup = 2 };
struct QtdToken {
  static constexpr uint32_t kActive = 1u << 7, kHalted = 1u << 6, kBufferError = 1u << 5,
                            kBabble = 1u << 4, kXactError = 1u << 3;
  uint32_t raw = 0;
  bool active() const { return raw & kActive; }
  bool halted() const { return raw & kHalted; }
  Pid pid() const { return static_cast<Pid>((raw >> 8) & 3u); }
  uint32_t cerr() const { return (raw >> 10) & 3u; }
  uint32_t c_page() const { return (raw >> 12) & 7u; }
  bool ioc() const { return raw & (1u << 15); }
  uint32_t total_bytes() const { return (raw >> 16) & 0x7fffu; }
  bool data_toggle() const { return raw & (1u << 31); }
  // What the controller writes back when it retires the qTD: bytes left, status, page.
  void retire(uint32_t bytes_left, uint32_t status, uint32_t page) {
    raw = (raw & ((1u << 31) | (1u << 15) | (3u << 10) | (3u << 8))) |
          ((bytes_left & 0x7fffu) << 16) | ((page & 7u) << 12) | (status & 0xffu);
  }
};

// Queue element transfer descriptor (3.5): 32 bytes, 32-byte aligned.
struct Qtd {
  Link next;
  Link alt_next;
  QtdToken token;
  std::array<uint32_t, 5> buffer{};  // page 0: current offset in 11:0
};
static_assert(sizeof(Qtd) == 32);

// Queue head (3.6): 48 bytes (32-bit form), 32-byte aligned.
struct Qh {
  Link horizontal;
  uint32_t characteristics = 0;  // endpoint characteristics (3.6.2)
  uint32_t capabilities = 0;     // endpoint capabilities (3.6.2)
  uint32_t current = 0;          // current qTD pointer
  Qtd overlay;                   // transfer overlay (3.6.3)

  uint8_t device_address() const { return characteristics & 0x7fu; }
  uint8_t endpoint() const { return (characteristics >> 8) & 0xfu; }
  uint32_t speed() const { return (characteristics >> 12) & 3u; }  // 0 FS, 1 LS, 2 HS
  bool dtc() const { return characteristics & (1u << 14); }        // data toggle from the qTD
  bool head() const { return characteristics & (1u << 15); }       // head of reclamation list
  uint32_t max_packet() const { return (characteristics >> 16) & 0x7ffu; }
  bool control_endpoint() const { return characteristics & (1u << 27); }
  uint8_t s_mask() const { return capabilities & 0xffu; }
  uint32_t mult() const { return capabilities >> 30; }
};
static_assert(sizeof(Qh) == 48);
static_assert(offsetof(Qh, overlay) == 16);

// Isochronous transfer descriptor (3.3): 64 bytes, 32-byte aligned; 8 transactions, one per
// microframe of its frame.
struct Itd {
  static constexpr uint32_t kActive = 1u << 31, kBufferError = 1u << 30, kBabble = 1u << 29,
                            kXactError = 1u << 28;
  Link next;
  std::array<uint32_t, 8> transaction{};  // offset 11:0, PG 14:12, IOC 15, length 27:16, status
  std::array<uint32_t, 7> buffer{};       // page 0: address 6:0, endpt 11:8; page 1: max packet
                                          // 10:0, I/O 11; page 2: mult 1:0
  uint8_t device_address() const { return buffer[0] & 0x7fu; }
  uint8_t endpoint() const { return (buffer[0] >> 8) & 0xfu; }
  uint32_t max_packet() const { return buffer[1] & 0x7ffu; }
  bool in() const { return buffer[1] & (1u << 11); }
  uint32_t mult() const { return buffer[2] & 3u; }
  static uint32_t offset(uint32_t t) { return t & 0xfffu; }
  static uint32_t page(uint32_t t) { return (t >> 12) & 7u; }
  static bool ioc(uint32_t t) { return t & (1u << 15); }
  static uint32_t length(uint32_t t) { return (t >> 16) & 0xfffu; }
};
static_assert(sizeof(Itd) == 64);

static_assert(std::is_trivially_copyable_v<Qtd> && std::is_trivially_copyable_v<Qh> &&
              std::is_trivially_copyable_v<Itd>);

}  // namespace hc::ehci
