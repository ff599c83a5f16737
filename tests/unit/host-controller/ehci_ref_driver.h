// EhciRefDriver: a register-level reference guest driver for EHCI controllers, as Linux's
// ehci-hcd programs one: HCRESET, USBINTR, an async list whose head QH (H bit) links to itself,
// RS + ASE, CONFIGFLAG; port reset by writing PR then clearing it; one QH per endpoint with a
// dummy qTD at its tail (new qTDs are written into the dummy and activated last, so the
// controller never sees half a transfer); control transfers as SETUP / data / status qTDs;
// completions found by reading qTD tokens back; unlinking a QH with the Interrupt on Async
// Advance doorbell. Programs any XhciTarget-shaped controller (MMIO + guest memory + idle).
// One driver per VM function; one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "host-controller/ehci/ehci_abi.h"
#include "tests/unit/host-controller/xhci_ref_driver.h"
#include "usb/core/setup.h"

namespace hc::ehci::testing {

using Target = hc::xhci::testing::XhciTarget;

class EhciRefDriver {
 public:
  struct Options {
    uint64_t ram_base = 0x100000;
    uint64_t ram_size = 8u << 20;
    std::chrono::milliseconds timeout{5000};
  };
  // What a finished transfer did.
  struct Result {
    bool done = false;
    bool halted = false;
    uint32_t status = 0;  // the last qTD's status byte
    uint32_t actual = 0;
    std::vector<uint8_t> data;
  };

  EhciRefDriver(Target& target, Options options);
  explicit EhciRefDriver(Target& target) : EhciRefDriver(target, Options{}) {}

  bool start();
  uint32_t op(uint32_t reg);
  uint32_t portsc(uint32_t port);
  // Waits for a connection, resets the port; true when the port came out enabled.
  bool reset_port(uint32_t port);

  // A QH for (address, endpoint) — created on first use, linked into the async list.
  uint32_t qh(uint8_t address, uint8_t endpoint, uint16_t max_packet, bool control);
  // Control transfer on address's endpoint 0, waited for.
  Result control(uint8_t address, const usb::SetupPacket& setup, std::vector<uint8_t> out = {});
  // Control transfers queued at once on address's endpoint 0, collected in order. A stalled one
  // is recovered as ehci-hcd does — the halted queue restarts at the next transfer's first qTD
  // — so the ones behind it still complete.
  std::vector<Result> control_queue(uint8_t address, const std::vector<usb::SetupPacket>& setups);
  // Bulk transfer of `length` bytes (OUT: `out`), waited for; several queued at once with
  // bulk_many.
  Result bulk(uint8_t address, uint8_t endpoint, uint32_t length, std::vector<uint8_t> out = {});
  std::vector<Result> bulk_many(uint8_t address, uint8_t endpoint, uint32_t length, int count,
                                std::vector<uint8_t> out = {});
  // The periodic schedule: a 1024-entry frame list (all terminated), PERIODICLISTBASE, PSE.
  bool start_periodic();
  // An iTD for `endpoint` (direction bit 7) at `frame` with one `length`-byte transaction in
  // each microframe of `uframes` (bit n: microframe n), IOC on the last; OUT data from `out`.
  // Linked into the frame list; returns its address.
  uint32_t itd(uint8_t address, uint8_t endpoint, uint16_t max_packet, uint32_t frame,
               uint8_t uframes, uint32_t length, const std::vector<uint8_t>& out = {});
  // Waits until the iTD's transactions are retired; their statuses (bits 31:28) in `status`
  // (OR-ed), the bytes (IN) in `data`, their lengths summed in `actual`.
  Result wait_itd(uint32_t itd);
  uint32_t frame() { return (op(kFrIndexReg) >> 3) & 0x3ffu; }

  // Clears the halted state of the QH's overlay (after a stall), as ehci-hcd does.
  void clear_halt(uint8_t address, uint8_t endpoint);
  // Unlinks the QH from the async list and waits for the async advance interrupt.
  bool unlink(uint8_t address, uint8_t endpoint);
  // Enumerates the device on `port`: reset, GET_DESCRIPTOR(8) at address 0, SET_ADDRESS
  // `address`, the device descriptor; its idVendor, or nullopt.
  std::optional<uint16_t> enumerate(uint32_t port, uint8_t address);

  uint64_t alloc(uint64_t bytes, uint64_t align = 32);
  GuestMemory& mem() { return target_.memory(); }
  Target& target() { return target_; }

 private:
  struct Queue {
    uint32_t qh = 0;
    uint32_t dummy = 0;  // the inactive qTD at the tail
    uint16_t max_packet = 0;
    bool control = false;
  };
  // Appends qTDs (pid, length, toggle, ioc) to the queue; returns their addresses. Data
  // buffers: `buffers` (one per qTD, filled for OUT by the caller).
  struct Stage {
    Pid pid;
    uint32_t length;
    bool toggle;
    bool ioc;
    uint32_t buffer;
  };
  std::vector<uint32_t> queue(Queue& q, const std::vector<Stage>& stages);
  std::vector<Stage> control_stages(const usb::SetupPacket& setup, const std::vector<uint8_t>& out);
  bool wait_for(const std::function<bool()>& done, const char* what);
  Result collect(const std::vector<uint32_t>& qtds, const std::vector<Stage>& stages, bool in_data);

  Target& target_;
  Options options_;
  uint64_t next_free_;
  uint32_t op_base_ = 0;
  static constexpr uint32_t kFrIndexReg = 0x0c;
  uint32_t head_ = 0;  // the async list's head QH
  uint32_t frame_list_ = 0;
  std::map<uint16_t, Queue> queues_;
};

}  // namespace hc::ehci::testing
