#include "vmm-frontend/sharing/timeslice_policy.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd {

using usb::RequestType;
using usb::Status;
using usb::Transfer;
using State = TimeSlicePolicy::State;

const char* to_string(State state) {
  switch (state) {
    case State::kOff:
      return "off";
    case State::kServing:
      return "serving";
    case State::kQuiescing:
      return "quiescing";
    case State::kRestoring:
      return "restoring";
    case State::kHandingOver:
      return "handing over";
  }
  return "?";
}

bool TimeSlicePolicy::allowed(State from, State to) {
  if (to == State::kOff) return from != State::kOff;  // leaving the mode abandons any phase
  switch (from) {
    case State::kOff:
      return to == State::kServing;
    case State::kServing:  // the turn is over, or a turn begins on an idle device
      return to == State::kQuiescing || to == State::kRestoring;
    case State::kQuiescing:  // the holder's URBs are back (or the device went away)
      return to == State::kServing;
    case State::kRestoring:  // done (its VM may have left meanwhile), abandoned
      return to == State::kHandingOver || to == State::kServing;
    case State::kHandingOver:
      // Done; or the holder left while its held URBs went out and the next VM's turn begins.
      return to == State::kServing || to == State::kRestoring;
  }
  return false;
}

bool TimeSlicePolicy::transition(State to) {
  if (!allowed(state_, to)) {
    spdlog::error("vusbd: {}: timeslice: refused transition {} → {}", shared_.name(),
                  to_string(state_), to_string(to));
    return false;
  }
  spdlog::debug("vusbd: {}: timeslice: {} → {}", shared_.name(), to_string(state_), to_string(to));
  state_ = to;
  return true;
}

TimeSlicePolicy::TimeSlicePolicy(SharedDevice& shared, std::chrono::milliseconds slice, bool on)
    : shared_(shared), slice_(slice) {
  if (on) start();
}

void TimeSlicePolicy::start() {
  slicer_ = std::make_unique<sched::TimeSlicer>(slice_);
  transition(State::kServing);
}

void TimeSlicePolicy::stop() {
  // Everyone may send now: held URBs go to the device in their order.
  slicer_.reset();
  transition(State::kOff);
  ++restore_generation_;
  for (auto& [_, v] : shared_.views_) {
    auto held = std::move(v->turn_.waiting);
    v->turn_.waiting.clear();
    for (auto& w : held) v->forward(*w.transfer);
  }
}

void TimeSlicePolicy::forget_device_states() {
  // Per-VM timeslice state describes turns that no longer happen (or have not begun).
  for (auto& [_, v] : shared_.views_) v->turn_.forget_device_state();
  state_owner_ = nullptr;
}

void TimeSlicePolicy::forget(DeviceView& view) {
  view.turn_.forget_device_state();
  if (state_owner_ == &view) state_owner_ = nullptr;
}

void TimeSlicePolicy::leave(DeviceView& view) {
  if (!slicer_) return;
  auto held = std::move(view.turn_.waiting);
  view.turn_.waiting.clear();
  for (auto& w : held) view.complete_here(*w.transfer, Status::kCancelled, 0);
  const bool had_turn = slicer_->holder() == view.vm();
  slicer_->forget(view.vm());
  if (had_turn) finish_switch();  // the next VM in line need not wait for a timer
}

void TimeSlicePolicy::device_gone() {
  if (slicer_) slicer_ = std::make_unique<sched::TimeSlicer>(slice_);
  // A quiesce or a restore under way is over (a hand-over under way finishes its loop).
  if (state_ == State::kQuiescing || state_ == State::kRestoring) transition(State::kServing);
  ++restore_generation_;
  state_owner_ = nullptr;
}

std::string TimeSlicePolicy::holder() const {
  return slicer_ && slicer_->holder() ? *slicer_->holder() : std::string();
}

DeviceView* TimeSlicePolicy::turn_view() const {
  return slicer_ && slicer_->holder() ? shared_.find_view(*slicer_->holder()) : nullptr;
}

bool TimeSlicePolicy::cancel(DeviceView& view, Transfer& t) {
  auto& waiting = view.turn_.waiting;
  auto it = std::find_if(waiting.begin(), waiting.end(),
                         [&](const Turn::Held& h) { return h.transfer == &t; });
  if (it == waiting.end()) return false;
  waiting.erase(it);
  view.complete_here(t, Status::kCancelled, 0);
  return true;
}

void TimeSlicePolicy::release_all_held(Status status) {
  for (auto& [_, v] : shared_.views_) {
    auto held = std::move(v->turn_.waiting);
    v->turn_.waiting.clear();
    for (auto& w : held) v->complete_here(*w.transfer, status, 0);
  }
}

void TimeSlicePolicy::set_configuration(DeviceView& view, uint8_t value, usb::StatusCallback done) {
  usb::Device* be = shared_.backend();
  if (value != 0 && !be->descriptors().find_configuration(value))
    return done(Status::kStall);  // as the device would
  if (Status st = shared_.bandwidth_.admit_configuration(view, value); st != Status::kOk)
    return done(st);
  view.turn_.config = value;
  view.turn_.alts.clear();
  view.state_.clear_halts();
  if (!state_in_device(view)) {  // applied when its turn begins
    ++view.stats_.cache_hits;
    return done(Status::kOk);
  }
  state_owner_ = &view;
  be->set_configuration(value, [this, &view, done = std::move(done)](Status st) mutable {
    if (st != Status::kOk) {
      view.turn_.config = shared_.backend() ? shared_.backend()->active_configuration() : 0;
      shared_.bandwidth_.readmit(view);
    }
    done(st);
  });
}

void TimeSlicePolicy::set_interface(DeviceView& view, uint8_t interface, uint8_t alternate,
                                    usb::StatusCallback done) {
  usb::Device* be = shared_.backend();
  const auto* cfg = be->descriptors().find_configuration(view.active_configuration());
  if (!cfg || !cfg->find(interface, alternate)) return done(Status::kStall);
  if (Status st = shared_.bandwidth_.admit_interface(view, interface, alternate); st != Status::kOk)
    return done(st);
  if (!view.turn_.config) view.turn_.config = view.active_configuration();
  view.turn_.alts[interface] = alternate;
  view.state_.clear_halts();
  if (!state_in_device(view)) {
    ++view.stats_.cache_hits;
    return done(Status::kOk);
  }
  state_owner_ = &view;
  be->set_interface(interface, alternate,
                    [this, &view, interface, done = std::move(done)](Status st) mutable {
                      if (st != Status::kOk) {
                        if (usb::Device* now = shared_.backend())
                          view.turn_.alts[interface] = now->alternate_setting(interface);
                        shared_.bandwidth_.readmit(view);
                      }
                      done(st);
                    });
}

void TimeSlicePolicy::submit(DeviceView& view, Transfer& t) {
  const auto now = shared_.now();
  const bool had_turn = slicer_->holder() == view.vm();
  // While a hand-over waits for the holder's open class/vendor transaction, the holder may still
  // send (its IN closes the transaction).
  const bool may_send = state_ != State::kQuiescing || (had_turn && now < view.turn_.txn_until);
  if (may_send && state_ != State::kRestoring && slicer_->request(view.vm(), now)) {
    if (had_turn) {
      send_in_turn(view, t);
      arm_slice_timer();
      return;
    }
    // Its turn begins (nobody held the device): its state first, then this URB.
    t.park(&view);
    view.turn_.waiting.push_back({&t, now});
    ++view.stats_.turns;
    spdlog::debug("vusbd: {}: {}'s turn", shared_.name(), view.vm());
    begin_turn(view);
    return;
  }
  // Not this VM's turn (or the device is being handed over): hold it, cancellable.
  if ((state_ == State::kQuiescing || state_ == State::kRestoring) && !had_turn)
    slicer_->request(view.vm(), now);
  t.park(&view);
  view.turn_.waiting.push_back({&t, now});
  arm_slice_timer();
  consider_switch();
}

void TimeSlicePolicy::begin_turn(DeviceView& view) {
  transition(State::kRestoring);
  const uint64_t gen = ++restore_generation_;
  restore_state(view, [this, &view, gen, alive = shared_.alive_] {
    if (!*alive || gen != restore_generation_ || !slicer_) return;
    state_owner_ = &view;
    if (turn_view() != &view) {  // it left meanwhile; finish_switch moved on
      transition(State::kServing);
      return;
    }
    const auto now = shared_.now();
    auto held = std::move(view.turn_.waiting);
    view.turn_.waiting.clear();
    transition(State::kHandingOver);  // completions inside forward() must not start a switch
    for (auto& w : held) {
      view.stats_.held_time += now - w.since;
      w.transfer->unpark();
      send_in_turn(view, *w.transfer);
    }
    // Unless a completion meanwhile began the next VM's turn (its VM left).
    if (state_ == State::kHandingOver) transition(State::kServing);
    arm_slice_timer();
    consider_switch();
  });
}

void TimeSlicePolicy::restore_state(DeviceView& in, std::move_only_function<void()> done) {
  usb::Device* be = shared_.backend();
  DeviceView* out = state_owner_;
  if (!be || out == &in) return done();
  state_owner_ = nullptr;  // half-way: the device is in nobody's state until this completes
  // Steps run one after another; each calls `next` once (device calls may complete later).
  using Next = std::move_only_function<void()>;
  std::vector<std::move_only_function<void(Next)>> steps;
  auto log_failure = [this, &in](const char* what, Status st) {
    if (st != Status::kOk)
      spdlog::warn("vusbd: {}: restoring {}'s state: {} failed ({})", shared_.name(), in.vm(), what,
                   usb::to_string(st));
  };
  if (out) {
    out->turn_.class_state = be->save_class_state();
    out->turn_.has_class_state = true;
    // The device's own halts belong to the outgoing VM; its view keeps stalling them.
    for (const auto& [ep, h] : out->state_.halts())
      if (h == ViewState::Halt::kDevice) {
        if (in.state_.halt(ep) == ViewState::Halt::kDevice) continue;
        steps.push_back([be, ep, log_failure](Next next) mutable {
          be->clear_halt(ep, [log_failure, next = std::move(next)](Status st) mutable {
            log_failure("CLEAR_FEATURE(ENDPOINT_HALT)", st);
            next();
          });
        });
      }
  }
  if (in.turn_.config && *in.turn_.config != be->active_configuration())
    steps.push_back([be, value = *in.turn_.config, log_failure](Next next) mutable {
      be->set_configuration(value, [log_failure, next = std::move(next)](Status st) mutable {
        log_failure("SET_CONFIGURATION", st);
        next();
      });
    });
  // Alternate settings are compared when the step runs (the configuration may just have
  // changed and reset them).
  steps.push_back([be, &in, log_failure](Next next) mutable {
    const auto* cfg = be->active_config_descriptor();
    std::vector<std::pair<uint8_t, uint8_t>> changes;
    if (cfg && in.turn_.config)
      for (const auto& intf : cfg->interfaces)
        if (intf.alternate == 0) {
          auto it = in.turn_.alts.find(intf.number);
          const uint8_t want = it == in.turn_.alts.end() ? 0 : it->second;
          if (be->alternate_setting(intf.number) != want) changes.emplace_back(intf.number, want);
        }
    auto run = std::make_shared<std::move_only_function<void(size_t)>>();
    *run = [be, changes, log_failure, run, next = std::move(next)](size_t i) mutable {
      if (i == changes.size()) {
        auto n = std::move(next);
        *run = nullptr;  // break the cycle
        return n();
      }
      be->set_interface(changes[i].first, changes[i].second,
                        [log_failure, run, i](Status st) mutable {
                          log_failure("SET_INTERFACE", st);
                          (*run)(i + 1);
                        });
    };
    (*run)(0);
  });
  // A VM that never had a turn finds the device's class state as it was when it appeared, not
  // what another VM left behind.
  if (in.turn_.has_class_state || out)
    steps.push_back([this, be, &in](Next next) {
      be->restore_class_state(in.turn_.has_class_state ? in.turn_.class_state
                                                       : initial_class_state_);
      next();
    });
  spdlog::debug("vusbd: {}: device state of {} → {} ({} step(s))", shared_.name(),
                out ? out->vm() : std::string("nobody"), in.vm(), steps.size());
  auto chain = std::make_shared<std::vector<std::move_only_function<void(Next)>>>(std::move(steps));
  auto step = std::make_shared<std::move_only_function<void(size_t)>>();
  // A restore that was abandoned (its VM left, the device went away, the mode changed) stops at
  // its next step: the device it would touch may be gone.
  *step = [this, chain, step, be, gen = restore_generation_, alive = shared_.alive_,
           done = std::move(done)](size_t i) mutable {
    if (!*alive || gen != restore_generation_ || shared_.backend() != be) {
      *step = nullptr;
      return;
    }
    if (i == chain->size()) {
      auto d = std::move(done);
      *step = nullptr;
      return d();
    }
    (*chain)[i]([step, i] { (*step)(i + 1); });
  };
  (*step)(0);
}

void TimeSlicePolicy::send_in_turn(DeviceView& view, Transfer& t) {
  view.turn_.at_device.push_back(&t);
  if (t.type() == usb::TransferType::kControl && t.setup.type() != RequestType::kStandard) {
    // A class/vendor OUT opens a command/response transaction its next class/vendor IN closes:
    // the turn is not handed over in between (for up to the control lock timeout), because a
    // device whose class state vusbd cannot save (a remote one) would answer another VM's IN.
    t.add_completion_observer([this, &view, alive = shared_.alive_](Transfer& x) {
      if (!*alive) return;
      const auto now = shared_.now();
      if (x.setup.direction() == usb::Direction::kOut && x.status() == Status::kOk) {
        // An OUT inside an open transaction does not extend it: a VM sending OUTs without
        // end must not keep the turn for ever.
        if (now >= view.turn_.txn_until) view.turn_.txn_until = now + shared_.control_.timeout();
      } else {
        view.turn_.txn_until = {};
      }
    });
  }
  t.add_completion_epilogue([this, &view, tp = &t, alive = shared_.alive_] {
    if (!*alive) return;
    std::erase(view.turn_.at_device, tp);  // the pointer only: the transfer may be gone
    consider_switch();
  });
  view.forward(t);
}

void TimeSlicePolicy::consider_switch() {
  if (!slicer_ || state_ == State::kHandingOver || state_ == State::kRestoring) return;
  const auto now = shared_.now();
  DeviceView* h = turn_view();
  const bool quiescing = state_ == State::kQuiescing;
  if (h && now < h->turn_.txn_until && (!quiescing || h->turn_.at_device.empty())) {
    // The holder is between a class/vendor OUT and its IN: look again when that may be over.
    const uint64_t gen = ++txn_timer_generation_;
    shared_.timer_(std::chrono::ceil<std::chrono::milliseconds>(h->turn_.txn_until - now),
                   [this, gen, alive = shared_.alive_] {
                     if (*alive && gen == txn_timer_generation_) consider_switch();
                   });
    return;
  }
  if (!quiescing) {
    const bool idle = !h || (h->turn_.at_device.empty() && h->turn_.waiting.empty());
    if (!slicer_->should_switch(now, idle)) return;
    transition(State::kQuiescing);
    // Quiesce: wait for the holder's URBs at the device; what is still out after the grace time
    // is cancelled (the VM sees it unlinked, as after a real device's reset).
    const uint64_t gen = ++switch_generation_;
    shared_.timer_(std::chrono::milliseconds(100), [this, gen, alive = shared_.alive_] {
      if (!*alive || state_ != State::kQuiescing || gen != switch_generation_ || !slicer_) return;
      if (DeviceView* v = turn_view()) {
        spdlog::info("vusbd: {}: {}'s turn is over; cancelling its {} URB(s) still at the device",
                     shared_.name(), v->vm(), v->turn_.at_device.size());
        for (Transfer* t : std::vector<Transfer*>(v->turn_.at_device)) t->cancel();
      }
    });
  }
  if (state_ == State::kQuiescing && (!h || h->turn_.at_device.empty())) finish_switch();
}

void TimeSlicePolicy::finish_switch() {
  ++restore_generation_;  // a restore for a VM that left is abandoned
  if (!slicer_) return;
  if (state_ == State::kQuiescing || state_ == State::kRestoring) transition(State::kServing);
  ++switch_generation_;
  const auto now = shared_.now();
  slicer_->next(now);
  // Whoever still holds URBs lines up again (the old holder, if it kept submitting meanwhile).
  for (auto& [name, v] : shared_.views_)
    if (!v->turn_.waiting.empty()) slicer_->request(name, now);
  DeviceView* h = turn_view();
  if (h) {
    ++h->stats_.turns;
    spdlog::debug("vusbd: {}: {}'s turn ({} waiting)", shared_.name(), h->vm(),
                  slicer_->waiting().size());
    return begin_turn(*h);
  }
  arm_slice_timer();
  consider_switch();
}

void TimeSlicePolicy::arm_slice_timer() {
  if (!slicer_ || !slicer_->holder() || slicer_->waiting().empty()) return;
  const auto end = slicer_->slice_end();
  if (armed_for_ == end) return;  // one timer per slice, not one per URB
  armed_for_ = end;
  const auto now = shared_.now();
  const auto delay = std::chrono::ceil<std::chrono::milliseconds>(
      std::max(end - now, std::chrono::steady_clock::duration::zero()));
  const uint64_t gen = ++timer_generation_;
  shared_.timer_(delay, [this, gen, alive = shared_.alive_] {
    if (!*alive || gen != timer_generation_) return;
    consider_switch();
    arm_slice_timer();
  });
}

}  // namespace vusbd
