// xHCI device, slot, endpoint and input contexts (xHCI 1.2 section 6.2), 32-byte form (the model
// reports HCCPARAMS1.CSZ = 0). The guest owns the input context; the controller owns the output
// (device) context it writes back. Accessors name the fields Linux's xhci-hcd sets; anything a
// guest can put in a field is representable, range checks are the command handlers' job (they
// answer Parameter Error / Context State Error). Pure data.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace hc::xhci {

enum class SlotState : uint8_t {
  kDisabledEnabled = 0,
  kDefault = 1,
  kAddressed = 2,
  kConfigured = 3
};
enum class EndpointState : uint8_t {
  kDisabled = 0,
  kRunning = 1,
  kHalted = 2,
  kStopped = 3,
  kError = 4,
};
// Endpoint Type (6.2.3, table 6-9).
enum class EndpointType : uint8_t {
  kNotValid = 0,
  kIsochOut = 1,
  kBulkOut = 2,
  kInterruptOut = 3,
  kControl = 4,
  kIsochIn = 5,
  kBulkIn = 6,
  kInterruptIn = 7,
};

// Slot Context (6.2.2).
struct SlotContext {
  std::array<uint32_t, 8> dw{};
  uint32_t route_string() const { return dw[0] & 0xfffffu; }
  uint32_t speed() const { return (dw[0] >> 20) & 0xfu; }
  bool mtt() const { return dw[0] & (1u << 25); }
  bool hub() const { return dw[0] & (1u << 26); }
  uint32_t context_entries() const { return dw[0] >> 27; }
  uint32_t max_exit_latency() const { return dw[1] & 0xffffu; }
  uint32_t root_hub_port() const { return (dw[1] >> 16) & 0xffu; }
  uint32_t num_ports() const { return dw[1] >> 24; }
  uint32_t interrupter_target() const { return dw[2] >> 22; }
  uint32_t usb_address() const { return dw[3] & 0xffu; }
  SlotState state() const { return static_cast<SlotState>(dw[3] >> 27); }
  void set_usb_address(uint32_t a) { dw[3] = (dw[3] & ~0xffu) | (a & 0xffu); }
  void set_state(SlotState s) { dw[3] = (dw[3] & 0x07ffffffu) | (static_cast<uint32_t>(s) << 27); }
  void set_context_entries(uint32_t n) { dw[0] = (dw[0] & 0x07ffffffu) | (n << 27); }
};

// Endpoint Context (6.2.3).
struct EndpointContext {
  std::array<uint32_t, 8> dw{};
  EndpointState state() const { return static_cast<EndpointState>(dw[0] & 7u); }
  uint32_t mult() const { return (dw[0] >> 8) & 3u; }
  uint32_t max_pstreams() const { return (dw[0] >> 10) & 0x1fu; }
  bool lsa() const { return dw[0] & (1u << 15); }
  uint32_t interval() const { return (dw[0] >> 16) & 0xffu; }  // 2^interval × 125 µs
  uint32_t max_esit_payload_hi() const { return dw[0] >> 24; }
  uint32_t cerr() const { return (dw[1] >> 1) & 3u; }
  EndpointType type() const { return static_cast<EndpointType>((dw[1] >> 3) & 7u); }
  bool hid() const { return dw[1] & (1u << 7); }
  uint32_t max_burst() const { return (dw[1] >> 8) & 0xffu; }
  uint32_t max_packet_size() const { return dw[1] >> 16; }
  uint64_t dequeue_pointer() const { return (uint64_t{dw[3]} << 32 | dw[2]) & ~uint64_t{0xf}; }
  bool dequeue_cycle() const { return dw[2] & 1u; }
  uint32_t average_trb_length() const { return dw[4] & 0xffffu; }
  uint32_t max_esit_payload() const { return (max_esit_payload_hi() << 16) | (dw[4] >> 16); }
  void set_state(EndpointState s) { dw[0] = (dw[0] & ~7u) | static_cast<uint32_t>(s); }
  void set_dequeue(uint64_t pointer, bool cycle) {
    const uint64_t v = (pointer & ~uint64_t{0xf}) | (cycle ? 1u : 0u);
    dw[2] = static_cast<uint32_t>(v);
    dw[3] = static_cast<uint32_t>(v >> 32);
  }
};

// Input Control Context (6.2.5.1): which contexts a command drops (D2..D31) and adds (A0..A31).
struct InputControlContext {
  std::array<uint32_t, 8> dw{};
  uint32_t drop_flags() const { return dw[0]; }
  uint32_t add_flags() const { return dw[1]; }
  uint32_t configuration_value() const { return dw[7] & 0xffu; }
  uint32_t interface_number() const { return (dw[7] >> 8) & 0xffu; }
  uint32_t alternate_setting() const { return (dw[7] >> 16) & 0xffu; }
};

// Device Context (6.2.1): the slot, then endpoint contexts by DCI 1..31 (DCI 1 = EP0).
struct DeviceContext {
  SlotContext slot;
  std::array<EndpointContext, 31> endpoints;
};
// Input Context (6.2.5): the input control context, then a device context's layout.
struct InputContext {
  InputControlContext control;
  SlotContext slot;
  std::array<EndpointContext, 31> endpoints;
};

static_assert(sizeof(SlotContext) == 32 && sizeof(EndpointContext) == 32);
static_assert(sizeof(InputControlContext) == 32);
static_assert(sizeof(DeviceContext) == 1024, "32 contexts of 32 bytes (CSZ = 0)");
static_assert(sizeof(InputContext) == 1056, "33 contexts of 32 bytes (CSZ = 0)");
static_assert(offsetof(InputContext, slot) == 32);
static_assert(std::is_trivially_copyable_v<DeviceContext> &&
              std::is_trivially_copyable_v<InputContext>);

// The Device Context Index of an endpoint address (4.5.1): EP0 → 1, OUT n → 2n, IN n → 2n + 1.
constexpr uint8_t dci_of(uint8_t endpoint_address) {
  const uint8_t n = endpoint_address & 0x0f;
  if (n == 0) return 1;
  return static_cast<uint8_t>(2 * n + ((endpoint_address & 0x80) ? 1 : 0));
}
constexpr uint8_t endpoint_address_of(uint8_t dci) {
  if (dci <= 1) return 0;
  return static_cast<uint8_t>((dci / 2) | ((dci & 1) ? 0x80 : 0x00));
}
static_assert(dci_of(0x00) == 1 && dci_of(0x01) == 2 && dci_of(0x81) == 3 && dci_of(0x8f) == 31);
static_assert(endpoint_address_of(31) == 0x8f && endpoint_address_of(2) == 0x01);

}  // namespace hc::xhci
