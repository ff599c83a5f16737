// hc::xhci::XhciFunction: one VM's complete xHCI register set (xHCI 1.2 chapter 5) — capability,
// operational (with the root-hub ports), runtime (MFINDEX, one interrupter) and doorbell
// registers behind one MMIO BAR, with its own guest memory and IRQ line. vusbd's shared
// controller gives every VM one of these; the VM's devices are attached to its ports.
//
// So far (issue 5, first slice): reset and run/stop, the command ring (No Op, Enable Slot,
// Disable Slot, Address Device with BSR 0 and 1), the event ring with EHB, interrupts (IMAN.IE,
// USBCMD.INTE, MSI or INTx), ports with attach / detach / reset and Port Status Change events,
// MFINDEX from an injected clock, Supported Protocol capabilities for one USB 2 and one USB 3 port
// range, and control transfers on EP0's transfer ring (Setup / Data / Status TRBs, Normal TRBs
// chained to the Data stage, immediate data, short packets with ISP, stalls halting EP0) into the
// port's usb::Device. Other commands complete with TRB Error; other endpoints' rings are not
// walked yet. A hostile
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
#include <vector>

#include "host-controller/common/guest_memory.h"
#include "host-controller/common/irq_line.h"
#include "host-controller/xhci/context.h"
#include "host-controller/xhci/event_ring.h"
#include "host-controller/xhci/ring.h"
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

  // MMIO from the VM (offsets into the BAR; size 1, 2, 4 or 8). Unknown offsets read 0 and
  // ignore writes, as reserved registers do.
  uint64_t mmio_read(uint32_t offset, unsigned size);
  void mmio_write(uint32_t offset, uint64_t value, unsigned size);

  // A device appears on / leaves root-hub port `port` (1-based): CCS/CSC and a Port Status Change
  // event. The device must outlive its attachment.
  bool attach(uint32_t port, usb::Device& device);
  void detach(uint32_t port);

  // Observable state (tests, stats).
  bool running() const { return usbcmd_ & 1u; }
  uint64_t events_dropped() const { return events_.dropped(); }

 private:
  struct Port {
    uint32_t portsc = 0;
    usb::Device* device = nullptr;
  };
  // One control transfer taken off EP0's ring: its TRBs (for the events) and guest buffers.
  struct ControlTd {
    uint64_t setup_trb = 0;
    uint64_t data_trb = 0;  // 0: no data stage
    uint64_t status_trb = 0;
    bool data_isp = false, data_ioc = false, status_ioc = false;
    struct Piece {
      uint64_t address;  // guest buffer
      uint32_t length;
    };
    std::vector<Piece> pieces;  // the data stage's buffers, in order
    bool in = false;
  };
  struct Slot {
    bool enabled = false;
    uint32_t port = 0;
    Ring ep0;
    std::unique_ptr<usb::Transfer> ep0_inflight;
    ControlTd ep0_td;
    bool ep0_halted = false;
    bool in_run = false;  // run_ep0 is on the stack (inline completions must not re-enter)
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

  // Command ring.
  void run_commands();
  Completion command(const Trb& trb, uint8_t& slot_out);
  Completion enable_slot(uint8_t& slot_out);
  Completion disable_slot(uint8_t slot);
  Completion address_device(const Trb& trb);
  bool device_context_address(uint8_t slot, uint64_t& out) const;

  // EP0 of a slot: runs control TDs one at a time.
  void run_ep0(uint8_t slot);
  // Takes one control TD off the ring (nothing consumed when it is not complete yet).
  std::expected<ControlTd, Completion> take_control_td(Ring& ring, bool& incomplete,
                                                       usb::SetupPacket& setup);
  void ep0_done(uint8_t slot, usb::Transfer& t);
  void set_ep0_state(uint8_t slot, EndpointState state);
  // The slot's control transfer is abandoned (slot disabled, device gone, controller reset): it
  // is cancelled and kept until the device gives it back.
  void abandon_ep0(Slot& slot);
  std::vector<std::unique_ptr<usb::Transfer>> orphans_;

  // Events and interrupts.
  void post(const Trb& event);
  void update_irq();

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
  uint32_t imod_ = 4000;  // 1 ms, the reset value
  uint32_t erstsz_ = 0;
  uint64_t erstba_ = 0;
  uint64_t erdp_ = 0;
  EventRing events_;
  bool irq_level_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

 public:
  ~XhciFunction();
  XhciFunction(const XhciFunction&) = delete;
  XhciFunction& operator=(const XhciFunction&) = delete;
};

}  // namespace hc::xhci
