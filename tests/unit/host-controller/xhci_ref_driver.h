// XhciRefDriver: a register-level reference guest driver for xHCI controllers, as an OS programs
// one (Linux's xhci-hcd is the model): reset, DCBAA, event ring with ERST, command ring with a
// Link TRB and toggle cycle, run; port reset, Enable Slot, Address Device, Evaluate Context,
// Configure Endpoint; control, bulk, interrupt and isochronous TDs on transfer rings that wrap
// through Link TRBs; events matched to the TDs they complete; Stop Endpoint + Set TR Dequeue to
// cancel, Reset Endpoint after a stall.
//
// It knows nothing of whose controller it drives: an XhciTarget gives it MMIO and guest memory
// — our XhciFunction (in-process, or on a loop thread shared with other VMs) or QEMU's
// qemu-xhci through the qtest protocol — so the same programs run against both.
// One driver per VM function; used from one thread (the VM's "vCPU").
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "host-controller/common/guest_memory.h"
#include "host-controller/xhci/context.h"
#include "host-controller/xhci/trb.h"
#include "usb/core/descriptors.h"
#include "usb/core/setup.h"

namespace hc::xhci::testing {

// What a driver reaches: the function's BAR and the VM's RAM.
class XhciTarget {
 public:
  virtual ~XhciTarget() = default;
  virtual uint32_t read32(uint32_t offset) = 0;
  virtual void write32(uint32_t offset, uint32_t value) = 0;
  virtual GuestMemory& memory() = 0;
  // The driver is waiting for the controller: let it run (a loop turn, clock time, a sleep).
  virtual void idle() = 0;
};

// One TD the driver queued, filled in when its events arrive.
struct TdResult {
  uint8_t slot = 0, dci = 0;
  bool control = false, in = false;
  uint64_t first_trb = 0, data_trb = 0, last_trb = 0;
  bool first_cycle = true;  // the cycle bit the first TRB was written with
  uint64_t buffer = 0;
  uint32_t length = 0;
  bool done = false;
  Completion code = Completion::kInvalid;  // the TD's outcome (a control TD's worst stage)
  uint32_t actual = 0;
  std::vector<uint8_t> data;          // IN data, once done
  std::vector<uint64_t> trbs;         // every TRB of the TD (events are matched by address)
  std::vector<uint32_t> trb_offsets;  // data offset of each TRB
  std::vector<Trb> events;            // every event that named one of its TRBs
};
using Td = std::shared_ptr<TdResult>;

class XhciRefDriver {
 public:
  struct Options {
    uint64_t ram_base = 0x100000;  // where the driver may allocate
    uint64_t ram_size = 8u << 20;
    uint32_t event_trbs = 256;
    uint32_t command_trbs = 32;
    uint32_t transfer_trbs = 256;  // per endpoint ring, Link included
    uint32_t max_td_bytes = 16 * 1024;
    uint32_t buffers_per_endpoint = 64;  // TDs an endpoint may have queued at once
    std::chrono::milliseconds timeout{20000};
    bool zero_allocations = true;  // false when the RAM is known to be fresh (all zero)
    bool copy_in_data = true;      // non-control TDs' IN data to TdResult::data (benchmarks: no)
  };
  XhciRefDriver(XhciTarget& target, Options options);
  explicit XhciRefDriver(XhciTarget& target) : XhciRefDriver(target, Options{}) {}

  // --- Controller ---
  // Reads the capabilities; HCRST, waits for CNR; CONFIG, DCBAAP, ERST, CRCR, IMAN.IE, RS.
  bool start();
  uint32_t op(uint32_t reg);  // an operational register
  uint32_t portsc(uint32_t port);
  uint32_t max_ports() const { return max_ports_; }
  uint32_t max_slots() const { return max_slots_; }
  // Waits for a connection on `port`, resets it, waits for the reset to finish; the port's
  // Protocol Speed ID, or nullopt.
  std::optional<uint32_t> reset_port(uint32_t port);

  // --- Commands ---
  // Queues one command, rings DB 0 and waits for its completion event.
  Trb command(Trb cmd);
  static Trb make(TrbType type, uint8_t slot = 0, uint64_t parameter = 0, uint32_t flags = 0);
  std::optional<uint8_t> enable_slot();
  // Address Device (BSR as given) for a device on `port` at `speed` with EP0 packet size mps0.
  Completion address_device(uint8_t slot, uint32_t port, uint32_t speed, uint32_t mps0,
                            bool bsr = false);
  // Adds the endpoints (fresh rings) and drops the DCIs in `drop`; the Configure Endpoint
  // completion. Evaluate Context of EP0's packet size.
  Completion configure(uint8_t slot, const std::vector<usb::EndpointDescriptor>& add,
                       const std::vector<uint8_t>& drop = {});
  Completion evaluate_ep0(uint8_t slot, uint32_t mps0);
  Completion stop_endpoint(uint8_t slot, uint8_t dci);
  Completion reset_endpoint(uint8_t slot, uint8_t dci);
  // Cancels what is queued on a stopped endpoint: Set TR Dequeue to the ring's enqueue point;
  // the TDs not done are marked done with code kInvalid (given back, never run).
  Completion skip_queued(uint8_t slot, uint8_t dci);
  // After a stall, as xhci-hcd recovers a halted endpoint: Reset Endpoint, Set TR Dequeue to the
  // next queued TD (past the one that stalled), and ring the doorbell if anything is queued.
  Completion recover_halt(uint8_t slot, uint8_t dci);

  // --- Transfers ---
  // Queues a control TD on EP0 (Setup, Data, Status) and rings the doorbell unless `ring` is
  // false (queue several, then doorbell()).
  Td control(uint8_t slot, const usb::SetupPacket& setup, std::span<const uint8_t> out = {},
             bool ring = true);
  // A Normal TD (bulk / interrupt) or an Isoch TD of `length` bytes, split into TRBs of at most
  // `trb_bytes`. OUT data is copied into guest memory first.
  Td normal(uint8_t slot, uint8_t dci, uint32_t length, std::span<const uint8_t> out = {},
            bool ring = true, uint32_t trb_bytes = 64 * 1024);
  Td isoch(uint8_t slot, uint8_t dci, uint32_t length, std::span<const uint8_t> out = {},
           bool ring = true);
  void doorbell(uint8_t slot, uint8_t dci);

  // Waits until `td` is done (false on timeout, the driver then reports the TD as not done).
  bool wait(const Td& td);
  bool wait_all(const std::vector<Td>& tds);
  // Control transfer, waited for: (completion, IN data).
  std::pair<Completion, std::vector<uint8_t>> control_sync(uint8_t slot,
                                                           const usb::SetupPacket& setup,
                                                           std::span<const uint8_t> out = {});

  // Enumeration as an OS does it: reset the port, Enable Slot, Address Device, EP0's packet
  // size from the device descriptor's first 8 bytes (Evaluate Context when it differs), the
  // device and configuration descriptors. nullopt (and a test failure) when a step fails.
  struct Enumerated {
    uint8_t slot;
    uint32_t speed;
    usb::DeviceDescriptor device;
    std::vector<uint8_t> configuration;  // the whole first configuration descriptor
  };
  std::optional<Enumerated> enumerate(uint32_t port);
  // The endpoints of interface `interface` alternate `alt` in configuration `config` bytes.
  static std::vector<usb::EndpointDescriptor> endpoints_of(std::span<const uint8_t> config,
                                                           uint8_t interface, uint8_t alt);

  // The slot's output device context as the controller last wrote it.
  DeviceContext output(uint8_t slot);
  uint64_t input_context() {
    if (!input_) input_ = alloc(sizeof(InputContext), 64);
    return input_;
  }
  uint64_t command_ring() const { return commands_.base; }
  uint32_t runtime_base() const { return rt_base_; }
  uint32_t op_base() const { return op_base_; }
  uint32_t doorbell_base() const { return dboff_; }

  // Events that named no TD or command (port status changes, stray ones).
  std::deque<Trb>& other_events() { return other_; }
  // Reads and dispatches every event the controller has written; true if any.
  bool poll_events();
  uint64_t events_seen() const { return events_seen_; }
  XhciTarget& target() { return target_; }
  GuestMemory& mem() { return target_.memory(); }
  // Guest memory the driver allocates (64-byte aligned; for tests' own structures).
  uint64_t alloc(uint64_t bytes, uint64_t align = 64);

 private:
  struct TransferRing {
    uint64_t base = 0;
    uint32_t size = 0;  // TRBs, the last one the Link
    uint32_t index = 0;
    bool cycle = true;
    uint64_t buffers = 0;  // buffers_per_endpoint buffers of max_td_bytes, used in turn
    uint32_t next_buffer = 0;
    uint32_t in_use = 0;  // TRBs of TDs not done yet (the driver never laps them)
  };
  struct EndpointState {
    TransferRing ring;
    std::deque<Td> pending;  // queued, in ring order; done ones leave from the front
    std::deque<Td> recent;   // the last done ones (late events still name them)
  };
  // True if `trbs` more TRBs fit without overwriting TDs the controller has not finished.
  bool room(TransferRing& ring, uint32_t trbs);
  // Writes `t` at the enqueue point (cycle set), wrapping through the Link TRB; its address.
  uint64_t enqueue(TransferRing& ring, Trb t, bool chain_link = false);
  TransferRing new_ring(uint32_t trbs, bool with_buffers);
  uint64_t take_buffer(TransferRing& ring);
  EndpointState* endpoint(uint8_t slot, uint8_t dci);
  Td queue_data_td(uint8_t slot, uint8_t dci, TrbType first, uint32_t length,
                   std::span<const uint8_t> out, bool ring, uint32_t trb_bytes, bool in);
  void dispatch(const Trb& event);
  bool wait_for(const std::function<bool()>& done, const char* what);
  uint64_t db_offset(uint8_t slot) const { return dboff_ + 4u * slot; }

  XhciTarget& target_;
  Options options_;
  uint64_t next_free_;
  uint32_t op_base_ = 0, rt_base_ = 0, dboff_ = 0, max_slots_ = 0, max_ports_ = 0;
  uint64_t dcbaa_ = 0, erst_ = 0, events_ = 0;
  uint32_t ev_index_ = 0;
  bool ev_cycle_ = true;
  uint64_t events_seen_ = 0;
  TransferRing commands_;
  std::deque<std::pair<uint64_t, std::optional<Trb>>> command_waits_;
  std::map<uint16_t, EndpointState> endpoints_;  // (slot << 8) | dci
  std::map<uint8_t, uint64_t> output_contexts_;
  uint64_t input_ = 0;
  std::deque<Trb> other_;
};

}  // namespace hc::xhci::testing
