// hc::Controller: the one virtual host controller vusbd owns, shared by several VMs. Each VM gets
// a complete controller function of its own — an xHCI or EHCI register set (hc::VmFunction)
// with its own guest memory, IRQ line, ports, slot ids and USB addresses — so nothing one VM
// writes can name another VM's slots or devices: a VM's rings reach only the devices attached
// to its own ports (vusbd attaches what its AddressMap gave that VM).
//
// EHCI functions (Model::kEhci) walk their schedules on the controller's timer, once per frame
// and after every completion; an async queue head with a transfer ready goes through the same
// fair queue (its periodic schedule does not: periodic bandwidth is reserved, not shared).
//
// The VMs' transfer rings are served through one weighted fair queue (sched::FairQueue, deficit
// round robin in bytes, one flow per VM): a doorbell or a completion only marks the endpoint as
// ready; the controller's pump, a task on its loop, starts one TD at a time in the queue's order
// and yields the loop after a budget of bytes, so one VM's deep ring cannot starve another's
// and MMIO from every VM is handled between turns. Commands and register accesses are not
// queued: they are cheap and answered at once.
//
// Each VM's function is a PCI function too (PciFunction: configuration space, one BAR, for xHCI
// the MSI-X table and PBA inside it), so a VMM forwards config cycles and BAR accesses unchanged.
// The controller sees every model through one interface, hc::VmFunction (vm_function.h): it
// never branches on the model, except in the typed accessors xhci() / ehci().
//
// A VM id the caller got wrong (never added, or removed) is an error the controller logs and
// answers with a neutral result (false, nullptr, all-ones reads, ignored writes); never a throw.
//
// Owned by vusbd (or by a VMM through the C API); the functions live as long as their VM is
// added. All calls on the controller's loop; `post` queues a task on that loop, `clock` is the
// injected time (MFINDEX), `timer` (optional) runs interrupt moderation.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "host-controller/common/guest_memory.h"
#include "host-controller/common/irq_line.h"
#include "host-controller/ehci/ehci_function.h"
#include "host-controller/pci/pci_function.h"
#include "host-controller/vm_function.h"
#include "host-controller/xhci/xhci_function.h"
#include "schedulers/fair_queue.h"

namespace hc {

class Controller {
 public:
  using Post = std::function<void(std::function<void()>)>;
  using Clock = VmFunction::Clock;
  using VmId = uint32_t;

  struct Options {
    uint32_t quantum = 16 * 1024;        // DRR bytes per round for weight 1
    uint32_t budget_per_turn = 1 << 20;  // bytes the pump starts before it yields the loop
    uint32_t min_td_cost = 64;           // a TD costs at least this (zero-length ones too)
  };
  struct VmStats {
    uint64_t tds = 0;    // TDs started through the fair queue
    uint64_t bytes = 0;  // their bytes
  };

  using Timer = VmFunction::Timer;
  Controller(Post post, Clock clock, Options options, Timer timer = {});
  Controller(Post post, Clock clock) : Controller(std::move(post), std::move(clock), Options{}) {}
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  using Model = hc::Model;
  // A VM's own function over its memory and IRQ line (both outlive the VM's function).
  VmId add_vm(std::string name, GuestMemory& memory, IrqLine& irq, uint32_t weight = 1,
              Model model = Model::kXhci);
  // The VM's function goes (its transfers are cancelled, queued work dropped).
  void remove_vm(VmId vm);
  void set_weight(VmId vm, uint32_t weight);

  // The VM's register model (ports, admission, state): nullptr when the VM has the other model
  // (not an error) or is unknown (logged).
  xhci::XhciFunction* xhci(VmId vm);
  ehci::EhciFunction* ehci(VmId vm);
  // Puts a device on / takes it off the VM's root-hub port, whichever model the VM has.
  bool attach(VmId vm, uint32_t port, usb::Device& device);
  void detach(VmId vm, uint32_t port);
  // The VM's PCI function; nullptr for an unknown VM.
  PciFunction* pci(VmId vm);
  // What a VMM forwards: accesses to the function's BAR (its MSI-X table and PBA included) and
  // to its PCI configuration space.
  uint64_t mmio_read(VmId vm, uint32_t offset, unsigned size);
  void mmio_write(VmId vm, uint32_t offset, uint64_t value, unsigned size);
  uint32_t config_read(VmId vm, uint32_t offset, unsigned size);
  void config_write(VmId vm, uint32_t offset, uint32_t value, unsigned size);
  // Empty / nullptr for an unknown VM.
  std::string_view name(VmId vm) const;
  const VmStats* stats(VmId vm) const;

  // Runs the pump now (tests that drive the loop by hand, and the C API's poll).
  void pump();

 private:
  struct Work {
    VmId vm;
    VmFunction::WorkKey key;  // what the VM's function woke; only it interprets the key
  };
  struct Vm {
    std::string name;
    std::unique_ptr<VmFunction> function;
    sched::FairQueue<Work>::FlowId flow;
    VmStats stats;
  };

  // The VM, or nullptr after a log line naming `what` the caller asked for.
  Vm* find(VmId vm, std::string_view what);
  const Vm* find(VmId vm, std::string_view what) const;
  // The VM's function has `key` ready with `bytes`: queued for the pump; false when refused.
  bool wake(VmId vm, VmFunction::WorkKey key, uint32_t bytes);
  void schedule_pump();

  Post post_;
  Clock clock_;
  Timer timer_;
  Options options_;
  sched::FairQueue<Work> queue_;
  std::map<VmId, Vm> vms_;
  VmId next_id_ = 1;
  bool pump_posted_ = false;
  bool in_pump_ = false;
  std::optional<Work> serving_;  // the endpoint whose TD the pump is starting
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace hc
