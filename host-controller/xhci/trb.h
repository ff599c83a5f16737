// xHCI Transfer Request Blocks, as the guest writes them and the controller writes events (xHCI
// 1.2 section 4.11 and 6.4). One 16-byte structure — parameter (64 bits), status, control — with
// accessors for the fields each TRB type defines; the controller decodes guest TRBs only through
// these (bounds and reserved bits are the caller's checks, see the ring walker).
// Pure data, no I/O; used on the controller's loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace hc::xhci {

// TRB types (6.4.6, table 6-91).
enum class TrbType : uint8_t {
  kNormal = 1,
  kSetupStage = 2,
  kDataStage = 3,
  kStatusStage = 4,
  kIsoch = 5,
  kLink = 6,
  kEventData = 7,
  kNoOp = 8,
  kEnableSlot = 9,
  kDisableSlot = 10,
  kAddressDevice = 11,
  kConfigureEndpoint = 12,
  kEvaluateContext = 13,
  kResetEndpoint = 14,
  kStopEndpoint = 15,
  kSetTrDequeue = 16,
  kResetDevice = 17,
  kForceEvent = 18,
  kNegotiateBandwidth = 19,
  kSetLatencyTolerance = 20,
  kGetPortBandwidth = 21,
  kForceHeader = 22,
  kNoOpCommand = 23,
  kTransferEvent = 32,
  kCommandCompletionEvent = 33,
  kPortStatusChangeEvent = 34,
  kBandwidthRequestEvent = 35,
  kDoorbellEvent = 36,
  kHostControllerEvent = 37,
  kDeviceNotificationEvent = 38,
  kMfindexWrapEvent = 39,
};

// Completion codes (6.4.5, table 6-90).
enum class Completion : uint8_t {
  kInvalid = 0,
  kSuccess = 1,
  kDataBufferError = 2,
  kBabbleDetected = 3,
  kUsbTransactionError = 4,
  kTrbError = 5,
  kStallError = 6,
  kResourceError = 7,
  kBandwidthError = 8,
  kNoSlotsAvailable = 9,
  kInvalidStreamType = 10,
  kSlotNotEnabled = 11,
  kEndpointNotEnabled = 12,
  kShortPacket = 13,
  kRingUnderrun = 14,
  kRingOverrun = 15,
  kVfEventRingFull = 16,
  kParameterError = 17,
  kBandwidthOverrun = 18,
  kContextStateError = 19,
  kNoPingResponse = 20,
  kEventRingFull = 21,
  kIncompatibleDevice = 22,
  kMissedService = 23,
  kCommandRingStopped = 24,
  kCommandAborted = 25,
  kStopped = 26,
  kStoppedLengthInvalid = 27,
  kStoppedShortPacket = 28,
  kMaxExitLatencyTooLarge = 29,
  kIsochBufferOverrun = 31,
  kEventLost = 32,
  kUndefinedError = 33,
  kInvalidStreamId = 34,
  kSecondaryBandwidthError = 35,
  kSplitTransactionError = 36,
};

struct Trb {
  uint64_t parameter = 0;
  uint32_t status = 0;
  uint32_t control = 0;

  // --- control dword, common (4.11.1) ---
  bool cycle() const { return control & 1u; }
  TrbType type() const { return static_cast<TrbType>((control >> 10) & 0x3f); }
  void set_cycle(bool c) { control = (control & ~1u) | (c ? 1u : 0u); }
  void set_type(TrbType t) {
    control = (control & ~(0x3fu << 10)) | (static_cast<uint32_t>(t) << 10);
  }

  // --- transfer TRBs (6.4.1) ---
  bool ent_or_toggle() const { return control & (1u << 1); }  // Link: Toggle Cycle
  bool isp() const { return control & (1u << 2); }            // interrupt on short packet
  bool no_snoop() const { return control & (1u << 3); }
  bool chain() const { return control & (1u << 4); }
  bool ioc() const { return control & (1u << 5); }                // interrupt on completion
  bool idt() const { return control & (1u << 6); }                // immediate data (in `parameter`)
  bool bei() const { return control & (1u << 9); }                // block event interrupt
  uint32_t transfer_length() const { return status & 0x1ffffu; }  // bits 16:0
  uint32_t td_size() const { return (status >> 17) & 0x1fu; }
  uint32_t interrupter_target() const { return status >> 22; }
  // Setup Stage: TRT (transfer type: 0 no data, 2 OUT, 3 IN), bits 17:16.
  uint32_t setup_trt() const { return (control >> 16) & 3u; }
  // Data / Status Stage: DIR (1 = IN), bit 16.
  bool dir_in() const { return control & (1u << 16); }
  // Isoch: SIA (start isoch ASAP) bit 31, frame id bits 30:20.
  bool isoch_sia() const { return control & (1u << 31); }
  uint32_t isoch_frame_id() const { return (control >> 20) & 0x7ffu; }
  // Link: the next segment (bits 63:4).
  uint64_t link_target() const { return parameter & ~uint64_t{0xf}; }

  // --- command TRBs (6.4.3) ---
  uint8_t slot_id() const { return static_cast<uint8_t>(control >> 24); }
  uint8_t endpoint_id() const { return static_cast<uint8_t>((control >> 16) & 0x1fu); }  // DCI
  bool bsr() const { return control & (1u << 9); }          // Address Device: block SET_ADDRESS
  bool deconfigure() const { return control & (1u << 9); }  // Configure Endpoint: DC
  bool tsp() const { return control & (1u << 9); }          // Reset Endpoint: transfer state
  bool suspend() const { return control & (1u << 23); }     // Stop Endpoint: SP
  // Address Device, Configure Endpoint, Evaluate Context: input context pointer (bits 63:4).
  uint64_t context_pointer() const { return parameter & ~uint64_t{0xf}; }
  // Set TR Dequeue: dequeue pointer (63:4), DCS bit 0, SCT bits 3:1, stream id status 31:16.
  uint64_t dequeue_pointer() const { return parameter & ~uint64_t{0xf}; }
  bool dequeue_cycle() const { return parameter & 1u; }
  uint16_t stream_id() const { return static_cast<uint16_t>(status >> 16); }

  // --- event TRBs (6.4.2), written by the controller ---
  static Trb transfer_event(uint64_t trb_pointer, uint32_t residual, Completion code, uint8_t slot,
                            uint8_t dci, bool event_data = false) {
    Trb t;
    t.parameter = trb_pointer;
    t.status = (residual & 0xffffffu) | (static_cast<uint32_t>(code) << 24);
    t.control = (event_data ? 1u << 2 : 0u) | (uint32_t{dci} << 16) | (uint32_t{slot} << 24);
    t.set_type(TrbType::kTransferEvent);
    return t;
  }
  static Trb command_completion(uint64_t command_pointer, Completion code, uint8_t slot,
                                uint32_t parameter = 0) {
    Trb t;
    t.parameter = command_pointer;
    t.status = (parameter & 0xffffffu) | (static_cast<uint32_t>(code) << 24);
    t.control = uint32_t{slot} << 24;
    t.set_type(TrbType::kCommandCompletionEvent);
    return t;
  }
  // Host Controller Event (6.4.2.6): a controller-wide condition such as Event Ring Full.
  static Trb host_controller_event(Completion code) {
    Trb t;
    t.status = static_cast<uint32_t>(code) << 24;
    t.set_type(TrbType::kHostControllerEvent);
    return t;
  }
  static Trb port_status_change(uint8_t port) {
    Trb t;
    t.parameter = uint64_t{port} << 24;
    t.status = static_cast<uint32_t>(Completion::kSuccess) << 24;
    t.set_type(TrbType::kPortStatusChangeEvent);
    return t;
  }
  // Event fields, for a driver (the tests' reference driver) reading them back.
  Completion completion_code() const { return static_cast<Completion>(status >> 24); }
  uint32_t event_residual() const { return status & 0xffffffu; }
  uint8_t event_port() const { return static_cast<uint8_t>(parameter >> 24); }
};

static_assert(sizeof(Trb) == 16, "a TRB is 16 bytes (4.11.1)");
static_assert(std::is_trivially_copyable_v<Trb>);
static_assert(std::is_standard_layout_v<Trb>);
static_assert(offsetof(Trb, status) == 8 && offsetof(Trb, control) == 12);

// Event Ring Segment Table entry (6.5): segment base (64-byte aligned), size in TRBs (16..4096).
struct ErstEntry {
  uint64_t base = 0;
  uint32_t size = 0;  // bits 15:0
  uint32_t reserved = 0;
};
static_assert(sizeof(ErstEntry) == 16);

}  // namespace hc::xhci
