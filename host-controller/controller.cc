#include "host-controller/controller.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "host-controller/ehci/ehci_vm_function.h"
#include "host-controller/xhci/xhci_vm_function.h"

namespace hc {

Controller::Controller(Post post, Clock clock, Options options, Timer timer)
    : post_(std::move(post)),
      clock_(std::move(clock)),
      timer_(std::move(timer)),
      options_(options),
      queue_(sched::FairQueue<Work>::Options{
          .quantum = options.quantum,
          .max_queued_per_flow = (xhci::XhciFunction::kMaxSlots + 1) * 32}) {}

Controller::~Controller() {
  *alive_ = false;
  vms_.clear();  // functions first: they cancel their transfers
}

Controller::VmId Controller::add_vm(std::string name, GuestMemory& memory, IrqLine& irq,
                                    uint32_t weight, Model model) {
  const VmId id = next_id_++;
  Vm& vm = vms_[id];
  vm.name = std::move(name);
  vm.flow = queue_.add_flow(weight);
  vm.function = make_vm_function(model, memory, irq, clock_, timer_);
  vm.function->set_scheduler(
      [this, id](VmFunction::WorkKey key, uint32_t bytes) { return wake(id, key, bytes); });
  spdlog::info("controller: {} has its own {} function (weight {})", vm.name,
               vm.function->model_name(), weight);
  return id;
}

void Controller::remove_vm(VmId id) {
  auto it = vms_.find(id);
  if (it == vms_.end()) {
    spdlog::warn("controller: remove_vm: no VM {}", id);
    return;
  }
  queue_.remove_flow(it->second.flow);
  spdlog::info("controller: {} removed", it->second.name);
  // Destroyed after the map entry, so wakes find no VM.
  auto gone = std::move(it->second.function);
  vms_.erase(it);
  gone.reset();
}

void Controller::set_weight(VmId id, uint32_t weight) {
  if (Vm* vm = find(id, "set_weight")) queue_.set_weight(vm->flow, weight);
}

Controller::Vm* Controller::find(VmId id, std::string_view what) {
  return const_cast<Vm*>(std::as_const(*this).find(id, what));
}

const Controller::Vm* Controller::find(VmId id, std::string_view what) const {
  auto it = vms_.find(id);
  if (it != vms_.end()) return &it->second;
  spdlog::warn("controller: {}: no VM {}", what, id);
  return nullptr;
}

xhci::XhciFunction* Controller::xhci(VmId id) {
  Vm* vm = find(id, "xhci");
  if (!vm || vm->function->model() != Model::kXhci) return nullptr;
  return &static_cast<xhci::XhciVmFunction&>(*vm->function).function();
}

ehci::EhciFunction* Controller::ehci(VmId id) {
  Vm* vm = find(id, "ehci");
  if (!vm || vm->function->model() != Model::kEhci) return nullptr;
  return &static_cast<ehci::EhciVmFunction&>(*vm->function).function();
}

bool Controller::attach(VmId id, uint32_t port, usb::Device& device) {
  Vm* vm = find(id, "attach");
  return vm && vm->function->attach(port, device);
}

void Controller::detach(VmId id, uint32_t port) {
  if (Vm* vm = find(id, "detach")) vm->function->detach(port);
}

PciFunction* Controller::pci(VmId id) {
  Vm* vm = find(id, "pci");
  return vm ? &vm->function->pci() : nullptr;
}

uint64_t Controller::mmio_read(VmId id, uint32_t offset, unsigned size) {
  Vm* vm = find(id, "mmio_read");
  if (!vm) return ~uint64_t{0};
  PciFunction& pci = vm->function->pci();
  if (pci.msix_contains(offset)) return pci.msix_read(offset, size);
  return vm->function->mmio_read(offset, size);
}

void Controller::mmio_write(VmId id, uint32_t offset, uint64_t value, unsigned size) {
  Vm* vm = find(id, "mmio_write");
  if (!vm) return;
  PciFunction& pci = vm->function->pci();
  if (pci.msix_contains(offset)) return pci.msix_write(offset, value, size);
  vm->function->mmio_write(offset, value, size);
}

uint32_t Controller::config_read(VmId id, uint32_t offset, unsigned size) {
  Vm* vm = find(id, "config_read");
  return vm ? vm->function->pci().config_read(offset, size) : 0xffffffff;
}

void Controller::config_write(VmId id, uint32_t offset, uint32_t value, unsigned size) {
  if (Vm* vm = find(id, "config_write")) vm->function->pci().config_write(offset, value, size);
}

std::string_view Controller::name(VmId id) const {
  const Vm* vm = find(id, "name");
  return vm ? std::string_view(vm->name) : std::string_view();
}

const Controller::VmStats* Controller::stats(VmId id) const {
  const Vm* vm = find(id, "stats");
  return vm ? &vm->stats : nullptr;
}

bool Controller::wake(VmId id, VmFunction::WorkKey key, uint32_t bytes) {
  auto it = vms_.find(id);
  if (it == vms_.end()) return false;  // being removed: its work goes with it
  const uint32_t cost = std::max(bytes, options_.min_td_cost);
  // Work made ready by the one the pump just started (its device completed inline) keeps the
  // VM's place in the round: the VM was backlogged all along.
  const bool continuing = serving_ && serving_->vm == id && serving_->key == key;
  const Work w{id, key};
  const bool ok = continuing ? queue_.push_continuing(it->second.flow, w, cost)
                             : queue_.push(it->second.flow, w, cost);
  if (ok) schedule_pump();
  return ok;
}

void Controller::schedule_pump() {
  if (pump_posted_ || in_pump_) return;
  pump_posted_ = true;
  post_([this, alive = std::weak_ptr<bool>(alive_)] {
    auto a = alive.lock();
    if (!a || !*a) return;
    pump_posted_ = false;
    pump();
  });
}

void Controller::pump() {
  if (in_pump_) return;
  in_pump_ = true;
  uint64_t spent = 0;
  while (spent < options_.budget_per_turn) {
    auto next = queue_.pop();
    if (!next) break;
    const Work w = next->second;
    auto it = vms_.find(w.vm);
    if (it == vms_.end()) continue;
    Vm& vm = it->second;
    serving_ = w;
    const std::optional<uint32_t> started = vm.function->serve(w.key);  // may wake w.key again
    serving_.reset();
    if (started) {
      ++vm.stats.tds;
      vm.stats.bytes += *started;
      spent += std::max(*started, options_.min_td_cost);
    }
  }
  in_pump_ = false;
  if (queue_.queued()) schedule_pump();  // yield the loop; the rest on the next turn
}

}  // namespace hc
