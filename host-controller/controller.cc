#include "host-controller/controller.h"

#include <spdlog/spdlog.h>

#include <stdexcept>

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
  if (model == Model::kEhci) {
    PciFunction::Identity identity;
    identity.vendor = 0x8086;  // as QEMU's usb-ehci
    identity.device = 0x24cd;
    identity.class_code = PciFunction::kEhciClass;
    PciFunction::Layout layout;
    layout.bar_size = ehci::EhciFunction::kBarSize;
    layout.msix_vectors = 0;
    vm.pci = std::make_unique<PciFunction>(identity, layout, irq);
    vm.ehci = std::make_unique<ehci::EhciFunction>(memory, vm.pci->device_irq(), clock_, timer_);
    vm.ehci->set_scheduler([this, id](uint32_t qh, uint32_t bytes) { wake_ehci(id, qh, bytes); });
    spdlog::info("controller: {} has its own EHCI function", vm.name);
    return id;
  }
  vm.pci = std::make_unique<PciFunction>(PciFunction::Identity{}, PciFunction::Layout{}, irq);
  vm.xhci = std::make_unique<xhci::XhciFunction>(memory, vm.pci->device_irq(), clock_);
  if (timer_) vm.xhci->set_timer(timer_);
  vm.xhci->set_scheduler([this, id](uint8_t slot, uint8_t dci) { wake(id, slot, dci); });
  spdlog::info("controller: {} has its own xHCI function (weight {})", vm.name, weight);
  return id;
}

void Controller::remove_vm(VmId id) {
  auto it = vms_.find(id);
  if (it == vms_.end()) return;
  queue_.remove_flow(it->second.flow);
  spdlog::info("controller: {} removed", it->second.name);
  // Destroyed after the map entry, so wakes find no VM; the model before its PCI function.
  auto pci = std::move(it->second.pci);
  auto gone = std::move(it->second.xhci);
  auto gone_ehci = std::move(it->second.ehci);
  vms_.erase(it);
  gone.reset();
  gone_ehci.reset();
}

void Controller::set_weight(VmId id, uint32_t weight) {
  auto it = vms_.find(id);
  if (it != vms_.end()) queue_.set_weight(it->second.flow, weight);
}

xhci::XhciFunction& Controller::xhci(VmId id) {
  auto it = vms_.find(id);
  if (it == vms_.end() || !it->second.xhci) throw std::out_of_range("no such xHCI function");
  return *it->second.xhci;
}

ehci::EhciFunction& Controller::ehci(VmId id) {
  auto it = vms_.find(id);
  if (it == vms_.end() || !it->second.ehci) throw std::out_of_range("no such EHCI function");
  return *it->second.ehci;
}

bool Controller::attach(VmId id, uint32_t port, usb::Device& device) {
  auto it = vms_.find(id);
  if (it == vms_.end()) return false;
  return it->second.xhci ? it->second.xhci->attach(port, device)
                         : it->second.ehci->attach(port, device);
}

void Controller::detach(VmId id, uint32_t port) {
  auto it = vms_.find(id);
  if (it == vms_.end()) return;
  if (it->second.xhci)
    it->second.xhci->detach(port);
  else
    it->second.ehci->detach(port);
}

PciFunction& Controller::pci(VmId id) {
  auto it = vms_.find(id);
  if (it == vms_.end()) throw std::out_of_range("no such VM function");
  return *it->second.pci;
}

uint64_t Controller::mmio_read(VmId id, uint32_t offset, unsigned size) {
  auto it = vms_.find(id);
  if (it == vms_.end()) return ~uint64_t{0};
  Vm& vm = it->second;
  if (vm.pci->msix_contains(offset)) return vm.pci->msix_read(offset, size);
  return vm.xhci ? vm.xhci->mmio_read(offset, size) : vm.ehci->mmio_read(offset, size);
}

void Controller::mmio_write(VmId id, uint32_t offset, uint64_t value, unsigned size) {
  auto it = vms_.find(id);
  if (it == vms_.end()) return;
  Vm& vm = it->second;
  if (vm.pci->msix_contains(offset)) return vm.pci->msix_write(offset, value, size);
  if (vm.xhci)
    vm.xhci->mmio_write(offset, value, size);
  else
    vm.ehci->mmio_write(offset, value, size);
}

uint32_t Controller::config_read(VmId id, uint32_t offset, unsigned size) {
  auto it = vms_.find(id);
  return it == vms_.end() ? 0xffffffff : it->second.pci->config_read(offset, size);
}

void Controller::config_write(VmId id, uint32_t offset, uint32_t value, unsigned size) {
  auto it = vms_.find(id);
  if (it != vms_.end()) it->second.pci->config_write(offset, value, size);
}

const std::string& Controller::name(VmId id) const {
  return vms_.at(id).name;
}
const Controller::VmStats& Controller::stats(VmId id) const {
  return vms_.at(id).stats;
}

void Controller::wake(VmId id, uint8_t slot, uint8_t dci) {
  auto it = vms_.find(id);
  if (it == vms_.end() || !it->second.xhci) return;
  Vm& vm = it->second;
  if (vm.queued[slot] & (1u << dci)) return;  // already waiting for its turn
  auto bytes = vm.xhci->next_td_bytes(slot, dci);
  if (!bytes) return;  // nothing complete on the ring yet: the next doorbell wakes it again
  const uint32_t cost = std::max(*bytes, options_.min_td_cost);
  // A TD made ready by the one the pump just started (its device completed inline) keeps the
  // VM's place in the round: the VM was backlogged all along.
  const bool continuing =
      serving_ && serving_->vm == id && serving_->slot == slot && serving_->dci == dci;
  const Work w{id, slot, dci, 0};
  const bool ok =
      continuing ? queue_.push_continuing(vm.flow, w, cost) : queue_.push(vm.flow, w, cost);
  if (!ok) return;  // cannot happen: one entry per endpoint at most
  vm.queued[slot] |= 1u << dci;
  schedule_pump();
}

void Controller::wake_ehci(VmId id, uint32_t qh, uint32_t bytes) {
  auto it = vms_.find(id);
  if (it == vms_.end()) return;
  Vm& vm = it->second;
  const uint32_t cost = std::max(bytes, options_.min_td_cost);
  const bool continuing = serving_ && serving_->vm == id && serving_->qh == qh;
  const Work w{id, 0, 0, qh};
  if (continuing ? queue_.push_continuing(vm.flow, w, cost) : queue_.push(vm.flow, w, cost))
    schedule_pump();
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
    std::optional<uint32_t> started;
    if (vm.ehci) {
      started = vm.ehci->serve(w.qh);  // may wake this queue head again
    } else {
      vm.queued[w.slot] &= ~(1u << w.dci);
      started = vm.xhci->serve(w.slot, w.dci);  // may wake this endpoint again
    }
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
