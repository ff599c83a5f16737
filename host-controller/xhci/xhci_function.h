// hc::xhci::XhciFunction: one VM's complete xHCI register set (xHCI 1.2 chapter 5) — capability,
// operational (with the root-hub ports), runtime (MFINDEX, one interrupter) and doorbell
// registers behind one MMIO BAR, with its own guest memory and IRQ line. vusbd's shared
// controller gives every VM one of these; the VM's devices are attached to its ports.
//
// So far (issue 5, first slices): reset and run/stop, the command ring (No Op, Enable Slot,
// Disable Slot, Address Device with BSR 0 and 1), the event ring with EHB, interrupts (IMAN.IE,
// USBCMD.INTE, MSI or INTx), ports with attach / detach / reset and Port Status Change events,
// MFINDEX from an injected clock, Supported Protocol capabilities for one USB 2 and one USB 3 port
// range; Configure Endpoint (add, drop, deconfigure), Evaluate Context, Reset / Stop Endpoint,
// Set TR Dequeue, Reset Device; transfer rings: control TDs on EP0 (Setup / Data / Status, Normal
// TRBs chained to the Data stage, immediate data) and Normal TDs on bulk and interrupt endpoints,
// into the port's usb::Device, with short packets (ISP), IOC, stalls halting the endpoint.
// One TD per endpoint is at the device at a time. Isochronous endpoints and streams: later
// slices. A hostile
// guest's pointers and rings are bounded (Ring, EventRing, GuestMemory): it gets TRB Error,
// Parameter Error, Context State Error or Host Controller Error, never a crash or a hang.
//
// BAR layout (as QEMU's qemu-xhci): capability at 0, operational at 0x40 (ports at 0x440),
// extended capabilities at 0xc00, runtime at 0x1000, doorbells at 0x2000; 16 KiB.
// Owned by the controller that serves the VM; all calls on the controller's loop.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "host-controller/common/guest_memory.h"
#include "host-controller/common/irq_line.h"
#include "host-controller/common/orphans.h"
#include "host-controller/xhci/context.h"
#include "host-controller/xhci/event_ring.h"
#include "host-controller/xhci/ring.h"
#include "usb/core/buffer_pool.h"
#include "usb/core/device.h"
#include "usb/core/transfer.h"

namespace hc::xhci {

class XhciFunction {
 public:
  static constexpr uint32_t kCapLength = 0x40;
  static constexpr uint32_t kExtCaps = 0xc00;
  static constexpr uint32_t kRuntime = 0x1000;
  static constexpr uint32_t kDoorbells = 0x2000;
  static constexpr uint32_t kBarSize = 0x4000;
  static constexpr uint32_t kMaxSlots = 32;
  static constexpr uint32_t kUsb2Ports = 2;  // ports 1..2: USB 2 (low/full/high speed)
  static constexpr uint32_t kUsb3Ports = 2;  // ports 3..4: USB 3 (SuperSpeed)
  static constexpr uint32_t kPorts = kUsb2Ports + kUsb3Ports;
  static constexpr int kMaxCommandsPerDoorbell = 256;

  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  XhciFunction(GuestMemory& memory, IrqLine& irq, Clock clock);

  // Runs `fn` after `delay` on the controller's loop. With one, interrupter moderation (IMOD,
  // 4.17.2) holds interrupts apart by IMODI × 250 ns; without one, every interrupt is raised at
  // once (IMOD still reads back what was written).
  using Timer = std::function<void(std::chrono::nanoseconds delay, std::function<void()> fn)>;
  void set_timer(Timer timer) { timer_ = std::move(timer); }

  // MMIO from the VM (offsets into the BAR; size 1, 2, 4 or 8). Unknown offsets read 0 and
  // ignore writes, as reserved registers do.
  uint64_t mmio_read(uint32_t offset, unsigned size);
  void mmio_write(uint32_t offset, uint64_t value, unsigned size);

  // A device appears on / leaves root-hub port `port` (1-based): CCS/CSC and a Port Status Change
  // event. The device must outlive its attachment.
  bool attach(uint32_t port, usb::Device& device);
  void detach(uint32_t port);

  // Bandwidth admission for Configure Endpoint: told the root-hub port of the slot's device and
  // every endpoint the slot would have afterwards (none: deconfigured); false answers Bandwidth
  // Error (code 8) and changes nothing. vusbd asks its BusReservations.
  using Admit = std::function<bool(uint32_t port, std::span<const usb::EndpointDescriptor>)>;
  void set_admission(Admit admit) { admit_ = std::move(admit); }

  // Who decides when an endpoint with work is served. Unset, a doorbell (or a completion) runs
  // the endpoint at once. Set — by the Controller that shares one loop among several VMs — the
  // function only says which endpoint has work (`wake`, never re-entrant) and the scheduler
  // calls serve() when that endpoint's turn comes.
  using Wake = std::function<void(uint8_t slot, uint8_t dci)>;
  void set_scheduler(Wake wake) { wake_ = std::move(wake); }
  // Starts the endpoint's next TD at its device; the bytes it carries, nullopt if none started.
  std::optional<uint32_t> serve(uint8_t slot, uint8_t dci);
  // The bytes of the endpoint's next complete TD, without taking it; nullopt when the endpoint
  // cannot start one now.
  std::optional<uint32_t> next_td_bytes(uint8_t slot, uint8_t dci);

  // Observable state (tests, stats).
  bool running() const { return usbcmd_ & 1u; }
  uint64_t events_dropped() const { return events_.dropped(); }

 private:
  struct Port {
    uint32_t portsc = 0;
    usb::Device* device = nullptr;
  };
  // One TD taken off a transfer ring: the TRBs that may produce events, and the guest buffers.
  struct Td {
    struct Piece {
      uint64_t address;  // guest buffer (or the TRB itself for immediate data)
      uint32_t length;
      uint64_t trb;  // the TRB it came from
      bool isp, ioc;
    };
    // An Event Data TRB (4.11.5.2): where it sits in the TD's data, and what its event carries.
    struct Mark {
      uint64_t data;
      uint32_t offset;  // bytes of the TD before it (the event's EDTLA)
      bool ioc;
    };
    std::vector<Piece> pieces;  // data, in order
    std::vector<Mark> marks;
    // Control TDs: the Setup and Status TRBs (0 for Normal TDs).
    uint64_t setup_trb = 0, status_trb = 0;
    bool status_ioc = false;
    bool in = false;
    bool noop = false;      // No Op TRBs only (a TD the driver cancelled): not for the device
    uint64_t last_trb = 0;  // where a Normal TD ends (events for IOC)
    bool last_ioc = false;
    uint32_t length() const {
      uint32_t n = 0;
      for (const auto& p : pieces) n += p.length;
      return n;
    }
  };
  enum class TdKind : uint8_t { kControl, kNormal, kIsoch };
  struct Endpoint {
    EndpointState state = EndpointState::kDisabled;
    EndpointType type = EndpointType::kNotValid;
    Ring ring;
    std::unique_ptr<usb::Transfer> inflight;
    Td td;
    uint64_t td_start = 0;  // where the TD at the device began on the ring, and the cycle state
    bool td_cycle = true;
    bool in_run = false;  // run_endpoint is on the stack (inline completions must not re-enter)
  };
  struct Slot {
    bool enabled = false;
    uint32_t port = 0;
    SlotState state = SlotState::kDisabledEnabled;
    std::array<Endpoint, 32> eps;  // by DCI; [1] is EP0
  };

  void reset();
  uint32_t cap_read(uint32_t offset) const;
  uint32_t op_read(uint32_t offset) const;
  void op_write(uint32_t offset, uint32_t value);
  uint32_t runtime_read(uint32_t offset) const;
  void runtime_write(uint32_t offset, uint32_t value);
  void doorbell(uint32_t index, uint32_t value);
  void port_write(uint32_t port, uint32_t value);
  void port_change(uint32_t port);

  // Command ring (xhci_commands.cc).
  void run_commands();
  Completion command(const Trb& trb, uint8_t& slot_out);
  Completion enable_slot(uint8_t& slot_out);
  Completion disable_slot(uint8_t slot);
  Completion address_device(const Trb& trb);
  Completion configure_endpoint(const Trb& trb);
  Completion evaluate_context(const Trb& trb);
  Completion reset_endpoint(const Trb& trb);
  Completion stop_endpoint(const Trb& trb);
  Completion set_tr_dequeue(const Trb& trb);
  Completion reset_device(const Trb& trb);
  bool device_context_address(uint8_t slot, uint64_t& out) const;
  // The device behind the slot's root-hub port (nullptr before Address Device or after unplug).
  usb::Device* device_of(const Slot& slot) const {
    return slot.port ? ports_[slot.port - 1].device : nullptr;
  }
  // Takes endpoint `dci` away: its TD at the device is abandoned, the context says Disabled.
  void drop_endpoint(Slot& slot, uint8_t dci, DeviceContext& out);
  // Writes the slot's state (slot context state/address, endpoint states and dequeue pointers)
  // back into its output device context.
  void write_back(uint8_t slot, const DeviceContext& out);
  bool read_output(uint8_t slot, DeviceContext& out, uint64_t& address) const;

  // Transfer rings (xhci_transfers.cc).
  void run_endpoint(uint8_t slot, uint8_t dci);
  // Takes the endpoint's next TD to its device; the bytes it carries, or nullopt when none was
  // started (ring empty or unfinished, endpoint busy, halted, stopped). TDs that need no device
  // (No Op TDs, TDs the controller rejects) are consumed on the way, at most 64 per call.
  std::optional<uint32_t> start_next(uint8_t slot, uint8_t dci);
  bool can_run(uint8_t slot, uint8_t dci) const;
  TdKind kind_of(uint8_t dci, EndpointType type) const;
  // Takes one TD off the ring; nothing is consumed when it is not complete yet (`incomplete`).
  std::expected<Td, Completion> take_td(Ring& ring, TdKind kind, bool& incomplete,
                                        usb::SetupPacket& setup);
  void post_td_events(uint8_t slot, uint8_t dci, const Td& td, usb::Status status, size_t actual,
                      bool halts);
  void transfer_done(uint8_t slot, uint8_t dci, usb::Transfer& t);
  void set_endpoint_state(uint8_t slot, uint8_t dci, EndpointState state);
  // The endpoint's TD in flight is abandoned (slot disabled, endpoint stopped, device gone,
  // controller reset): cancelled and kept until the device gives it back.
  void abandon(Endpoint& ep, usb::Device* device);
  void abandon_slot(uint8_t slot);
  std::shared_ptr<OrphanStore> orphans_ = std::make_shared<OrphanStore>();
  usb::BufferPool pool_{4u << 20};  // data buffers of TDs at the device, recycled

  // Events and interrupts.
  void post(const Trb& event);
  // An event is waiting and EHB is clear: raise the interrupt now, or when the moderation
  // counter runs out (4.17.2).
  void interrupt_due();
  void raise_interrupt();
  void update_irq();
  // The controller cannot reach guest memory it must write: HSE set, halted.
  void host_system_error(const char* why);

  GuestMemory& mem_;
  IrqLine& irq_;
  Clock clock_;
  std::chrono::steady_clock::time_point run_start_{};

  uint32_t usbcmd_ = 0;
  uint32_t usbsts_ = 0;
  uint32_t dnctrl_ = 0;
  uint32_t config_ = 0;
  uint64_t dcbaap_ = 0;
  uint64_t crcr_ = 0;  // as last written (pointer + RCS)
  bool command_ring_running_ = false;
  Ring commands_;
  std::array<Port, kPorts> ports_{};
  std::array<Slot, kMaxSlots + 1> slots_{};  // [0] unused

  // Interrupter 0.
  uint32_t iman_ = 0;
  uint32_t imod_ = 4000;                                      // IMODI: 1 ms, the reset value
  std::chrono::steady_clock::time_point moderation_until_{};  // IMODC counts down to this
  bool moderation_armed_ = false;
  Timer timer_;
  uint32_t erstsz_ = 0;
  uint64_t erstba_ = 0;
  uint64_t erdp_ = 0;
  EventRing events_;
  bool irq_level_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  Admit admit_;
  Wake wake_;

 public:
  ~XhciFunction();
  XhciFunction(const XhciFunction&) = delete;
  XhciFunction& operator=(const XhciFunction&) = delete;
};

}  // namespace hc::xhci
