// hc::ehci::EhciFunction: one VM's EHCI controller (EHCI 1.0) — capability and operational
// registers with six root-hub ports behind one MMIO BAR, its own guest memory and IRQ line, the
// VM's devices on its ports. vusbd's shared controller can give a VM this instead of (or beside)
// an xHCI function.
//
// First slice (issue 5): reset and run/stop, CONFIGFLAG and port ownership (a port belongs to
// the EHCI function once CONFIGFLAG is set; a full- or low-speed device stays disabled after
// reset, as on hardware, for a companion controller this model does not have), port reset and
// status changes, FRINDEX from the injected clock with frame list rollover, interrupts (USBINTR,
// INTx), and the asynchronous schedule: the circular QH list at ASYNCLISTADDR, qTDs fetched into
// each QH's overlay and retired back into guest memory (token status, bytes left, IOC → USBINT,
// errors → USBERRINT, a stall halting the queue), control transfers (SETUP, data and status qTDs
// gathered into one control transfer), bulk and interrupt qTDs, short reads continuing at the
// alternate next qTD, SET_ADDRESS kept by the controller (a device answers to the address it was
// given), and the Interrupt on Async Advance doorbell; the periodic schedule: the frame list at
// PERIODICLISTBASE walked once per frame (late frames caught up, up to 128) — iTDs (each active
// transaction of the frame one isochronous packet, status and length written back, IOC → USBINT)
// and interrupt QHs (S-mask) served like async ones. siTDs and FSTNs (full-speed devices behind a
// TT) are skipped: this model's EHCI enables high-speed devices only.
//
// EHCI has no doorbells: a driver links qTDs and expects the controller to find them. The model
// walks the async schedule when the guest touches the registers that start it, after every
// completion, and once per frame on the injected timer while a schedule is enabled. Every walk
// is bounded (64 QHs, 64 qTDs per QH); a loop in the guest's lists ends the walk, pointers
// outside guest memory halt the queue or raise Host System Error as the spec says.
// Owned by the controller that serves the VM; all calls on the controller's loop.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "host-controller/common/guest_memory.h"
#include "host-controller/common/irq_line.h"
#include "host-controller/common/orphans.h"
#include "host-controller/ehci/ehci_abi.h"
#include "usb/core/buffer_pool.h"
#include "usb/core/device.h"
#include "usb/core/transfer.h"

namespace hc::ehci {

class EhciFunction {
 public:
  static constexpr uint32_t kCapLength = 0x20;
  static constexpr uint32_t kPorts = 6;
  static constexpr uint32_t kBarSize = 0x1000;
  static constexpr int kMaxQhs = 64;            // per walk of the async list
  static constexpr int kMaxQtdChain = 64;       // qTDs followed for one control transfer
  static constexpr uint32_t kMaxCatchUp = 128;  // late frames walked in one pass

  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  using Timer = std::function<void(std::chrono::nanoseconds delay, std::function<void()> fn)>;
  EhciFunction(GuestMemory& memory, IrqLine& irq, Clock clock, Timer timer = {});
  ~EhciFunction();
  EhciFunction(const EhciFunction&) = delete;
  EhciFunction& operator=(const EhciFunction&) = delete;

  uint64_t mmio_read(uint32_t offset, unsigned size);
  void mmio_write(uint32_t offset, uint64_t value, unsigned size);

  // Devices on root-hub ports (1-based); only high-speed devices are enabled by a port reset.
  bool attach(uint32_t port, usb::Device& device);
  void detach(uint32_t port);

  // One pass over the schedules now (tests without a timer; the timer calls it every frame).
  void poll();

  // Who decides when an async queue head with a transfer ready is served. Unset: at once. Set
  // (by the Controller sharing one loop among VMs): the function only says which QH has work
  // and how many bytes (`wake`, never re-entrant), and serve() starts it when its turn comes.
  // The periodic schedule (iTDs, interrupt QHs) is never deferred: its bandwidth is reserved.
  using Wake = std::function<void(uint32_t qh, uint32_t bytes)>;
  void set_scheduler(Wake wake) { wake_ = std::move(wake); }
  // Starts the QH's ready transfer; its bytes, or nullopt when nothing was started.
  std::optional<uint32_t> serve(uint32_t qh);
  bool running() const { return usbcmd_ & reg::kCmdRun; }

 private:
  struct Port {
    uint32_t portsc = reg::kPortPower | reg::kPortOwner;
    usb::Device* device = nullptr;
    uint8_t address = 0;  // what SET_ADDRESS gave it (0: default address after reset)
    bool addressed = false;
  };
  // A transfer at a device for one QH: the qTDs it retires when it completes.
  struct Inflight {
    std::unique_ptr<usb::Transfer> transfer;
    usb::Device* device = nullptr;
    std::vector<uint32_t> qtds;  // addresses, in order (control: setup, data..., status)
    uint32_t data_first = 0;     // index of the first data qTD in `qtds` (control)
    uint32_t data_count = 0;
    bool control = false;
    bool set_address = false;
    bool periodic = false;  // an iTD or an interrupt QH
  };

  void reset();
  void port_write(uint32_t port, uint32_t value);
  void port_change(uint32_t port);
  void set_status(uint32_t bits);
  // Guest memory the controller must read is not there: HSE, halted (2.3.2).
  void host_system_error(const char* what, uint32_t address);
  void update_irq();
  uint32_t frindex() const;
  void schedule_tick();
  void tick();

  // Periodic schedule: frame `frame`'s list (bounded walk).
  void run_periodic(uint32_t frame);
  void start_itd(uint32_t address, const Itd& itd);
  void finish_itd(uint32_t address, usb::Transfer& t, std::array<int, 8> slots);
  usb::TransferType endpoint_type(usb::Device& dev, uint8_t endpoint) const;

  // Async schedule.
  void run_async();
  // Starts the QH's next qTD (or control transfer) when it is idle; false if the QH is
  // broken (its memory unreadable).
  // `now`: start it (the scheduler's turn, or the periodic schedule); `periodic`: reached from
  // the frame list (interrupt endpoints only).
  bool service_qh(uint32_t qh_address, Qh& qh, bool now, bool periodic);
  // Whether `address` (a QH or iTD) is still reachable from the frame list: a periodic
  // transfer whose descriptor the driver unlinked writes nothing back.
  bool periodic_reachable(uint32_t address) const;
  void start(uint32_t qh_address, Qh& qh);
  void finish(uint32_t qh_address, usb::Transfer& t);
  usb::Device* device_for(uint8_t address);
  void abandon(uint32_t qh_address);
  // Copies qTD data between guest buffers and `out` (5 page pointers, offset in page 0).
  bool gather(const Qtd& qtd, std::span<uint8_t> out) const;
  bool scatter(const Qtd& qtd, std::span<const uint8_t> in);

  GuestMemory& mem_;
  IrqLine& irq_;
  Clock clock_;
  Timer timer_;
  uint32_t usbcmd_ = 0x00080000;  // ITC 8 microframes at reset
  uint32_t usbsts_ = reg::kStsHalted;
  uint32_t usbintr_ = 0;
  uint32_t periodic_base_ = 0;
  uint32_t async_addr_ = 0;
  uint32_t configflag_ = 0;
  std::chrono::steady_clock::time_point frindex_epoch_{};
  uint32_t frindex_base_ = 0;
  uint32_t last_frindex_ = 0;
  std::array<Port, kPorts> ports_{};
  std::map<uint32_t, Inflight> inflight_;  // by QH address (iTDs: by iTD address)
  uint32_t last_frame_ = 0;                // the last frame whose periodic list was walked
  bool periodic_started_ = false;
  std::shared_ptr<OrphanStore> orphans_ = std::make_shared<OrphanStore>();
  usb::BufferPool pool_{2u << 20};
  Wake wake_;
  std::set<uint32_t> woken_;   // QHs the scheduler was told about and has not served yet
  std::set<uint32_t> linked_;  // QHs in the async list at the last walk
  uint64_t starts_ = 0;        // transfers started (serve() reports whether it started one)
  bool irq_level_ = false;
  bool tick_armed_ = false;
  bool in_async_ = false;
  bool async_again_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace hc::ehci
