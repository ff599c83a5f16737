#include "host-controller/controller.h"

#include <spdlog/spdlog.h>

#include <stdexcept>

namespace hc {

Controller::Controller(Post post, Clock clock, Options options)
    : post_(std::move(post)),
      clock_(std::move(clock)),
      options_(options),
      queue_(sched::FairQueue<Work>::Options{
          .quantum = options.quantum,
          .max_queued_per_flow = (xhci::XhciFunction::kMaxSlots + 1) * 32}) {}

Controller::~Controller() {
  *alive_ = false;
  vms_.clear();  // functions first: they cancel their transfers
}

Controller::VmId Controller::add_vm(std::string name, GuestMemory& memory, IrqLine& irq,
                                    uint32_t weight) {
  const VmId id = next_id_++;
  Vm& vm = vms_[id];
  vm.name = std::move(name);
  vm.xhci = std::make_unique<xhci::XhciFunction>(memory, irq, clock_);
  vm.flow = queue_.add_flow(weight);
  vm.xhci->set_scheduler([this, id](uint8_t slot, uint8_t dci) { wake(id, slot, dci); });
  spdlog::info("controller: {} has its own xHCI function (weight {})", vm.name, weight);
  return id;
}

void Controller::remove_vm(VmId id) {
  auto it = vms_.find(id);
  if (it == vms_.end()) return;
  queue_.remove_flow(it->second.flow);
  spdlog::info("controller: {} removed", it->second.name);
  auto gone = std::move(it->second.xhci);  // destroyed after the map entry, so wakes find no VM
  vms_.erase(it);
}

void Controller::set_weight(VmId id, uint32_t weight) {
  auto it = vms_.find(id);
  if (it != vms_.end()) queue_.set_weight(it->second.flow, weight);
}

xhci::XhciFunction& Controller::xhci(VmId id) {
  auto it = vms_.find(id);
  if (it == vms_.end()) throw std::out_of_range("no such VM function");
  return *it->second.xhci;
}

const std::string& Controller::name(VmId id) const {
  return vms_.at(id).name;
}
const Controller::VmStats& Controller::stats(VmId id) const {
  return vms_.at(id).stats;
}

void Controller::wake(VmId id, uint8_t slot, uint8_t dci) {
  auto it = vms_.find(id);
  if (it == vms_.end()) return;
  Vm& vm = it->second;
  if (vm.queued[slot] & (1u << dci)) return;  // already waiting for its turn
  auto bytes = vm.xhci->next_td_bytes(slot, dci);
  if (!bytes) return;  // nothing complete on the ring yet: the next doorbell wakes it again
  const uint32_t cost = std::max(*bytes, options_.min_td_cost);
  // A TD made ready by the one the pump just started (its device completed inline) keeps the
  // VM's place in the round: the VM was backlogged all along.
  const bool continuing =
      serving_ && serving_->vm == id && serving_->slot == slot && serving_->dci == dci;
  const Work w{id, slot, dci};
  const bool ok =
      continuing ? queue_.push_continuing(vm.flow, w, cost) : queue_.push(vm.flow, w, cost);
  if (!ok) return;  // cannot happen: one entry per endpoint at most
  vm.queued[slot] |= 1u << dci;
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
    vm.queued[w.slot] &= ~(1u << w.dci);
    serving_ = w;
    auto started = vm.xhci->serve(w.slot, w.dci);  // may wake this endpoint again
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
