#include "vmm-frontend/sharing/shared_device.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

namespace vusbd {

using usb::Recipient;
using usb::RequestType;
using usb::Status;
using usb::Transfer;
namespace rq = usb::request;

namespace {
const usb::DescriptorSet kNoDescriptors{};
}  // namespace

// ------------------------------------------------------------------ DeviceView

DeviceView::DeviceView(SharedDevice& shared, std::string vm, usb::DeviceLocation location)
    : shared_(shared), vm_(std::move(vm)), location_(std::move(location)) {}

DeviceView::~DeviceView() = default;

const usb::DescriptorSet& DeviceView::descriptors() const {
  return shared_.backend_ ? shared_.backend_->descriptors() : kNoDescriptors;
}
usb::Speed DeviceView::speed() const {
  return shared_.backend_ ? shared_.backend_->speed() : usb::Speed::kUnknown;
}
uint8_t DeviceView::active_configuration() const {
  if (shared_.mode_ == SharedDevice::Mode::kTimeslice && ts_config_) return *ts_config_;
  return shared_.backend_ ? shared_.backend_->active_configuration() : 0;
}
uint8_t DeviceView::alternate_setting(uint8_t interface) const {
  if (shared_.mode_ == SharedDevice::Mode::kTimeslice && ts_config_) {
    auto it = ts_alts_.find(interface);
    return it == ts_alts_.end() ? 0 : it->second;
  }
  if (auto it = alts_.find(interface); it != alts_.end()) return it->second;
  return shared_.backend_ ? shared_.backend_->alternate_setting(interface) : 0;
}
bool DeviceView::connected() const {
  return shared_.backend_ && shared_.backend_->connected();
}

bool DeviceView::try_acquire() {
  if (shared_.mode_ == SharedDevice::Mode::kExclusive && shared_.others_hold(*this)) {
    spdlog::warn("vusbd: {}: {} asked for it in exclusive mode while {} holds it", shared_.name_,
                 vm_, shared_.holders_except(*this));
    return false;
  }
  held_ = true;
  if (shared_.on_hold_change_) shared_.on_hold_change_(*this, true);
  return true;
}

void DeviceView::release() {
  held_ = false;
  ts_config_.reset();
  ts_alts_.clear();
  has_class_state_ = false;
  if (shared_.state_owner_ == this) shared_.state_owner_ = nullptr;
  if (shared_.book_) shared_.book_->leave(vm_, shared_.name_);
  halts_.clear();
  alts_.clear();
  if (shared_.uvc_) {
    // A bulk camera this VM was streaming stops with it.
    for (uint8_t ep : shared_.uvc_->forget(vm_))
      if (shared_.backend_) shared_.backend_->clear_halt(ep, [](Status) {});
  }
  if (shared_.control_owner_ == this) shared_.release_control_lock();
  for (auto& [_, f] : shared_.fanouts_) f->drop_view(*this, Status::kCancelled);
  shared_.flush_fair_queue(*this, Status::kCancelled);
  if (shared_.slicer_) {
    auto held = std::move(waiting_turn_);
    waiting_turn_.clear();
    for (auto& w : held) complete_here(*w.transfer, Status::kCancelled, 0);
    const bool had_turn = shared_.slicer_->holder() == vm_;
    shared_.slicer_->forget(vm_);
    if (had_turn) shared_.finish_switch();  // the next VM in line need not wait for a timer
  }
  if (shared_.on_hold_change_) shared_.on_hold_change_(*this, false);
}

void DeviceView::complete_here(Transfer& t, Status status, size_t actual) {
  t.unpark();
  t.complete(status, actual);
}

void DeviceView::reply(Transfer& t, std::span<const uint8_t> bytes) {
  // A device answers at most wLength bytes; a short answer with URB_SHORT_NOT_OK is an error.
  const size_t want = std::min<size_t>(t.setup.length, t.length());
  const size_t n = std::min(want, bytes.size());
  if (n) std::memcpy(t.buffer().data(), bytes.data(), n);
  ++stats_.cache_hits;
  complete_here(t, (t.flags.short_not_ok && n < want) ? Status::kShortPacket : Status::kOk, n);
}

bool DeviceView::answer_from_cache(Transfer& t) {
  const usb::SetupPacket& s = t.setup;
  if (s.type() != RequestType::kStandard || s.direction() != usb::Direction::kIn) return false;
  usb::Device* be = shared_.backend_;
  const usb::DescriptorSet& d = be->descriptors();
  if (s.is_standard(Recipient::kDevice, rq::kGetDescriptor)) {
    const uint8_t type = s.value >> 8, index = s.value & 0xff;
    if (type == usb::desc::kDevice) {
      reply(t, d.device.build());
      return true;
    }
    if (type == usb::desc::kConfiguration && index < d.configurations.size()) {
      reply(t, d.configurations[index].build());
      return true;
    }
    return false;  // strings, qualifier, BOS, bad indices: the device answers (or stalls)
  }
  if (s.is_standard(Recipient::kDevice, rq::kGetConfiguration)) {
    const uint8_t v = active_configuration();
    reply(t, std::span(&v, 1));
    return true;
  }
  const usb::ConfigurationDescriptor* cfg = d.find_configuration(active_configuration());
  if (s.is_standard(Recipient::kInterface, rq::kGetInterface)) {
    if (!cfg || !cfg->find(static_cast<uint8_t>(s.index), 0)) return false;
    const uint8_t alt = alternate_setting(static_cast<uint8_t>(s.index));
    reply(t, std::span(&alt, 1));
    return true;
  }
  if (s.request != rq::kGetStatus || s.type() != RequestType::kStandard) return false;
  std::array<uint8_t, 2> status{0, 0};
  switch (s.recipient()) {
    case Recipient::kDevice:
      if (cfg && cfg->self_powered()) status[0] = 1;
      break;
    case Recipient::kInterface:
      if (!cfg || !cfg->find(static_cast<uint8_t>(s.index), 0)) return false;
      break;
    case Recipient::kEndpoint: {
      const uint8_t ep = static_cast<uint8_t>(s.index);
      if (usb::endpoint_number(ep) != 0) {
        bool exists = false;
        if (cfg)
          for (const auto& intf : cfg->interfaces)
            if (intf.alternate == alternate_setting(intf.number))
              for (const auto& e : intf.endpoints) exists = exists || e.address == ep;
        if (!exists) return false;
        auto h = halts_.find(ep);
        if (h != halts_.end() && h->second != Halt::kNone) status[0] = 1;
      }
      break;
    }
    default:
      return false;
  }
  reply(t, status);
  return true;
}

void DeviceView::forward(Transfer& t) {
  t.unpark();
  shared_.backend_->submit(t);
}

void DeviceView::submit(Transfer& t) {
  shared_.loop_.check();
  if (t.state() != Transfer::State::kIdle) return;
  if (!connected()) return complete_here(t, Status::kNoDevice, 0);
  const auto t0 = std::chrono::steady_clock::now();
  t.add_completion_observer([this, t0](Transfer& x) {
    ++stats_.urbs;
    (x.direction() == usb::Direction::kIn ? stats_.bytes_in : stats_.bytes_out) +=
        x.actual_length();
    if (x.status() == Status::kStall)
      ++stats_.stalls;
    else if (x.status() != Status::kOk && x.status() != Status::kCancelled &&
             x.status() != Status::kUnlinked)
      ++stats_.errors;
    stats_.latency_total += std::chrono::steady_clock::now() - t0;
    if (x.status() == Status::kStall && usb::endpoint_number(x.endpoint()) != 0) {
      Halt& h = halts_[x.endpoint()];
      if (h != Halt::kVirtual) h = Halt::kDevice;  // the device itself halted it
    }
  });

  if (usb::endpoint_number(t.endpoint()) != 0) {
    auto h = halts_.find(t.endpoint());
    if (h != halts_.end() && h->second != Halt::kNone) return complete_here(t, Status::kStall, 0);
    if (shared_.mode_ == SharedDevice::Mode::kTimeslice) return shared_.timeslice_submit(*this, t);
    if (t.type() == usb::TransferType::kIsochronous &&
        usb::endpoint_direction(t.endpoint()) == usb::Direction::kIn &&
        shared_.mode_ == SharedDevice::Mode::kShared)
      return shared_.fanout(t.endpoint()).submit(*this, t);
    return shared_.schedule(*this, t);
  }
  if (t.type() != usb::TransferType::kControl) return complete_here(t, Status::kInvalid, 0);
  // The control pipe is serial: one request at a time, completions in submission order.
  t.park(this);
  control_queue_.push_back(&t);
  if (!control_busy_) next_control();
}

void DeviceView::next_control() {
  while (!control_busy_ && !control_queue_.empty()) {
    Transfer& t = *control_queue_.front();
    control_queue_.pop_front();
    t.unpark();
    control_busy_ = true;
    t.add_completion_epilogue([this, alive = shared_.alive_] {
      if (!*alive) return;
      control_busy_ = false;
      next_control();
    });
    run_control(t);
  }
}

void DeviceView::run_control(Transfer& t) {
  if (!connected()) return complete_here(t, Status::kNoDevice, 0);
  const usb::SetupPacket& s = t.setup;
  if (s.type() == RequestType::kStandard) {
    if (answer_from_cache(t)) return;
    auto done = [&t](Status st) { t.unpark(), t.complete(st, 0); };
    if (s.is_standard(Recipient::kEndpoint, rq::kSetFeature) &&
        s.value == usb::feature::kEndpointHalt)
      return set_halt(static_cast<uint8_t>(s.index), done);
    if (s.is_standard(Recipient::kEndpoint, rq::kClearFeature) &&
        s.value == usb::feature::kEndpointHalt && usb::endpoint_number(s.index) != 0) {
      // A bulk camera's host stops its stream this way (UVC 2.4.3.2.2): the camera must hear it
      // even while other VMs hold the device (a bulk stream has one user).
      const auto ep = static_cast<uint8_t>(s.index);
      if (shared_.uvc_ && shared_.uvc_->stop_bulk_endpoint(vm_, ep)) {
        halts_.erase(ep);
        return shared_.backend_->clear_halt(ep, done);
      }
      return clear_halt(ep, done);
    }
    if (s.is_standard(Recipient::kDevice, rq::kSetAddress)) {
      ++stats_.cache_hits;
      return complete_here(t, Status::kOk, 0);
    }
    if (s.is_standard(Recipient::kDevice, rq::kSetConfiguration))
      return set_configuration(static_cast<uint8_t>(s.value), done);
    if (s.is_standard(Recipient::kInterface, rq::kSetInterface))
      return set_interface(static_cast<uint8_t>(s.index), static_cast<uint8_t>(s.value), done);
    return forward(t);
  }
  if (s.request_type == 0x23 && s.request == rq::kSetFeature &&
      s.value == usb::kHubPortResetFeature)  // a USB/IP client's port reset
    return reset([&t](Status st) { t.unpark(), t.complete(st, 0); });
  // Timeslice: a class/vendor request is part of the VM's turn (it may depend on state the
  // VM set up, which the device has only then).
  if (shared_.mode_ == SharedDevice::Mode::kTimeslice) return shared_.timeslice_submit(*this, t);
  if (shared_.uvc_ && shared_.mode_ == SharedDevice::Mode::kShared && shared_.uvc_->target(s))
    return shared_.uvc_request(*this, t);
  shared_.submit_control(*this, t);
}

void DeviceView::cancel(Transfer& t) {
  // Reached only for transfers parked here (forwarded ones are cancelled by the backend).
  if (shared_.fair_.take_if(flow_, [&](const SharedDevice::Queued& q) { return q.transfer == &t; }))
    return complete_here(t, Status::kCancelled, 0);
  if (auto it = std::find_if(waiting_turn_.begin(), waiting_turn_.end(),
                             [&](const Held& h) { return h.transfer == &t; });
      it != waiting_turn_.end()) {
    waiting_turn_.erase(it);
    return complete_here(t, Status::kCancelled, 0);
  }
  for (auto& [_, f] : shared_.fanouts_)
    if (f->cancel(t)) return;
  if (auto it = std::find(control_queue_.begin(), control_queue_.end(), &t);
      it != control_queue_.end()) {
    control_queue_.erase(it);
    return complete_here(t, Status::kCancelled, 0);
  }
  if (!shared_.cancel_waiting(t)) complete_here(t, Status::kCancelled, 0);
}

void DeviceView::reset(usb::StatusCallback done) {
  halts_.clear();
  if (!connected()) return done(Status::kNoDevice);
  if (shared_.others_hold(*this)) {
    // Resetting the real device would pull it from under the other VMs: this VM's view is reset.
    spdlog::info("vusbd: {}: {} reset its view (not the device: {} use it)", shared_.name_, vm_,
                 shared_.holders_except(*this));
    ++stats_.cache_hits;
    return done(Status::kOk);
  }
  shared_.backend_->reset(std::move(done));
}

void DeviceView::set_configuration(uint8_t value, usb::StatusCallback done) {
  shared_.serialize([this, value, done = std::move(done)]() mutable {
    do_set_configuration(value, [this, done = std::move(done)](Status st) mutable {
      done(st);
      shared_.op_done();
    });
  });
}

void DeviceView::set_interface(uint8_t interface, uint8_t alternate, usb::StatusCallback done) {
  shared_.serialize([this, interface, alternate, done = std::move(done)]() mutable {
    do_set_interface(interface, alternate, [this, done = std::move(done)](Status st) mutable {
      done(st);
      shared_.op_done();
    });
  });
}

void DeviceView::do_set_configuration(uint8_t value, usb::StatusCallback done) {
  if (!connected()) return done(Status::kNoDevice);
  if (shared_.mode_ == SharedDevice::Mode::kTimeslice)
    return timeslice_set_configuration(value, std::move(done));
  const uint8_t current = shared_.backend_->active_configuration();
  if (current == value || !shared_.others_hold(*this))
    if (Status st = shared_.admit_configuration(*this, value); st != Status::kOk) return done(st);
  if (current == value) {
    ++stats_.cache_hits;
    halts_.clear();
    alts_.clear();
    return done(Status::kOk);
  }
  if (shared_.others_hold(*this)) {
    ++stats_.refused;
    spdlog::warn("vusbd: {}: {} asked for configuration {}, refused: {} use configuration {}",
                 shared_.name_, vm_, value, shared_.holders_except(*this), current);
    return done(Status::kStall);
  }
  halts_.clear();
  alts_.clear();
  shared_.backend_->set_configuration(value, [this, done = std::move(done)](Status st) mutable {
    if (st != Status::kOk) shared_.readmit(*this);  // the bandwidth follows the device's state
    done(st);
  });
}

void DeviceView::do_set_interface(uint8_t interface, uint8_t alternate, usb::StatusCallback done) {
  if (!connected()) return done(Status::kNoDevice);
  if (shared_.mode_ == SharedDevice::Mode::kTimeslice)
    return timeslice_set_interface(interface, alternate, std::move(done));
  const auto* cfg = shared_.backend_->active_config_descriptor();
  if (!cfg || !cfg->find(interface, alternate)) return done(Status::kStall);  // as a device would
  halts_.clear();
  const uint8_t device_alt = shared_.backend_->alternate_setting(interface);
  const auto wanted = shared_.endpoints(interface, alternate);
  auto contains = [](const std::vector<usb::EndpointDescriptor>& set,
                     const std::vector<usb::EndpointDescriptor>& sub) {
    for (const auto& e : sub)
      if (std::none_of(set.begin(), set.end(), [&](const usb::EndpointDescriptor& x) {
            return x.address == e.address && x.attributes == e.attributes &&
                   x.max_packet_size == e.max_packet_size;
          }))
        return false;
    return true;
  };
  const uint8_t previous = alternate_setting(interface);
  if (device_alt == alternate) {
    if (Status st = shared_.admit_interface(*this, interface, alternate); st != Status::kOk)
      return done(st);
    ++stats_.cache_hits;
    alts_.erase(interface);
    return done(Status::kOk);
  }
  // Switch the device if every other VM's endpoints survive the switch.
  bool others_fit = true;
  for (DeviceView* v : shared_.views())
    if (v != this && v->held_)
      others_fit = others_fit &&
                   contains(wanted, shared_.endpoints(interface, v->alternate_setting(interface)));
  if (others_fit) {
    if (Status st = shared_.admit_interface(*this, interface, alternate); st != Status::kOk)
      return done(st);
    // Others keep the setting they chose, now possibly different from the device's.
    for (DeviceView* v : shared_.views())
      if (v != this && v->held_ && !v->alts_.contains(interface)) v->alts_[interface] = device_alt;
    shared_.backend_->set_interface(
        interface, alternate,
        [this, interface, alternate, previous, done = std::move(done)](Status st) mutable {
          if (st == Status::kOk) {
            alts_.erase(interface);
            shared_.stream_restarted(interface, alternate);
          } else {  // the bandwidth goes back to what the VM had
            (void)shared_.admit_interface(*this, interface, previous);
          }
          // Views whose choice now equals the device's follow it again.
          for (DeviceView* v : shared_.views())
            if (auto it = v->alts_.find(interface); it != v->alts_.end() && it->second == alternate)
              v->alts_.erase(it);
          done(st);
        });
    return;
  }
  // Otherwise this VM alone may use `alternate` if its endpoints exist in the device's setting.
  if (contains(shared_.endpoints(interface, device_alt), wanted)) {
    if (Status st = shared_.admit_interface(*this, interface, alternate); st != Status::kOk)
      return done(st);
    ++stats_.cache_hits;
    alts_[interface] = alternate;
    return done(Status::kOk);
  }
  ++stats_.refused;
  spdlog::warn("vusbd: {}: {} asked for interface {} alternate {}, refused: {} need alternate {}",
               shared_.name_, vm_, interface, alternate, shared_.holders_except(*this), device_alt);
  done(Status::kStall);
}

void DeviceView::timeslice_set_configuration(uint8_t value, usb::StatusCallback done) {
  if (value != 0 && !shared_.backend_->descriptors().find_configuration(value))
    return done(Status::kStall);  // as the device would
  if (Status st = shared_.admit_configuration(*this, value); st != Status::kOk) return done(st);
  ts_config_ = value;
  ts_alts_.clear();
  halts_.clear();
  if (!shared_.state_in_device(*this)) {  // applied when its turn begins
    ++stats_.cache_hits;
    return done(Status::kOk);
  }
  shared_.state_owner_ = this;
  shared_.backend_->set_configuration(value, [this, done = std::move(done)](Status st) mutable {
    if (st != Status::kOk) {
      ts_config_ = shared_.backend_ ? shared_.backend_->active_configuration() : 0;
      shared_.readmit(*this);
    }
    done(st);
  });
}

void DeviceView::timeslice_set_interface(uint8_t interface, uint8_t alternate,
                                         usb::StatusCallback done) {
  const auto* cfg = shared_.backend_->descriptors().find_configuration(active_configuration());
  if (!cfg || !cfg->find(interface, alternate)) return done(Status::kStall);
  if (Status st = shared_.admit_interface(*this, interface, alternate); st != Status::kOk)
    return done(st);
  if (!ts_config_) ts_config_ = active_configuration();
  ts_alts_[interface] = alternate;
  halts_.clear();
  if (!shared_.state_in_device(*this)) {
    ++stats_.cache_hits;
    return done(Status::kOk);
  }
  shared_.state_owner_ = this;
  shared_.backend_->set_interface(
      interface, alternate, [this, interface, done = std::move(done)](Status st) mutable {
        if (st != Status::kOk) {
          if (shared_.backend_)
            ts_alts_[interface] = shared_.backend_->alternate_setting(interface);
          shared_.readmit(*this);
        }
        done(st);
      });
}

void DeviceView::clear_halt(uint8_t endpoint, usb::StatusCallback done) {
  const Halt h = halts_.contains(endpoint) ? halts_[endpoint] : Halt::kNone;
  halts_.erase(endpoint);
  if (!connected()) return done(Status::kNoDevice);
  // The device is told when it halted the endpoint itself, or when nobody else could be disturbed
  // by the data-toggle reset a CLEAR_FEATURE(HALT) implies.
  const bool timeslice = shared_.mode_ == SharedDevice::Mode::kTimeslice;
  if (timeslice ? (h == Halt::kDevice && shared_.state_in_device(*this))
                : (h == Halt::kDevice || !shared_.others_hold(*this)))
    return shared_.backend_->clear_halt(endpoint, std::move(done));
  ++stats_.cache_hits;
  done(Status::kOk);
}

void DeviceView::set_halt(uint8_t endpoint, usb::StatusCallback done) {
  if (usb::endpoint_number(endpoint) != 0) halts_[endpoint] = Halt::kVirtual;
  ++stats_.cache_hits;
  done(Status::kOk);
}

// ------------------------------------------------------------------ SharedDevice

SharedDevice::SharedDevice(std::string name, Mode mode, Timer timer,
                           std::chrono::milliseconds control_lock_timeout,
                           std::chrono::milliseconds slice)
    : name_(std::move(name)),
      mode_(mode),
      timer_(std::move(timer)),
      lock_timeout_(control_lock_timeout),
      slice_(slice) {
  if (mode_ == Mode::kTimeslice) slicer_ = std::make_unique<sched::TimeSlicer>(slice_);
}

SharedDevice::~SharedDevice() {
  fanouts_.clear();  // parked iso IN URBs complete with kNoDevice while the views exist
  release_all_held(Status::kNoDevice);
  for (auto& [_, v] : views_) flush_fair_queue(*v, Status::kNoDevice);
  *alive_ = false;
  // Parked transfers belong to the VM adapters: give them back.
  while (!control_waiting_.empty()) {
    Waiting w = control_waiting_.front();
    control_waiting_.pop_front();
    w.view->complete_here(*w.transfer, Status::kNoDevice, 0);
  }
}

void SharedDevice::set_backend(usb::Device* backend) {
  loop_.check();
  backend_ = backend;
  if (backend_) initial_class_state_ = backend_->save_class_state();
  uvc_.reset();
  if (backend_) {
    // A camera: its VideoStreaming interfaces get the sharing rules of UvcSharing.
    std::vector<usb::uvc::StreamingInterface> vs;
    std::vector<uint8_t> bulk;
    for (const auto& config : backend_->descriptors().configurations) {
      for (auto& intf : usb::uvc::find_streaming_interfaces(config)) {
        if (config.alternate_count(intf.interface) == 1) bulk.push_back(intf.interface);
        vs.push_back(std::move(intf));
      }
      if (!vs.empty()) break;
    }
    if (!vs.empty()) {
      uvc_ = std::make_unique<UvcSharing>(std::move(vs));
      for (uint8_t i : bulk) uvc_->set_bulk(i);
    }
  }
  if (!backend_) {
    control_owner_ = nullptr;
    ++lock_generation_;
    while (!control_waiting_.empty()) {
      Waiting w = control_waiting_.front();
      control_waiting_.pop_front();
      w.view->complete_here(*w.transfer, Status::kNoDevice, 0);
    }
    for (auto& [_, v] : views_) v->halts_.clear();
    for (auto& [_, f] : fanouts_) f->clear(Status::kNoDevice);
    release_all_held(Status::kNoDevice);
    for (auto& [_, v] : views_) flush_fair_queue(*v, Status::kNoDevice);
    if (slicer_) slicer_ = std::make_unique<sched::TimeSlicer>(slice_);
    switching_ = false;
    restoring_ = false;
    ++restore_generation_;
    state_owner_ = nullptr;
    if (book_) book_->remove_device(name_);
  }
}

// ------------------------------------------------------------------ fair scheduling

void SharedDevice::set_weight(const std::string& vm, uint32_t weight) {
  if (DeviceView* v = find_view(vm)) fair_.set_weight(v->flow_, weight);
}

size_t SharedDevice::device_window() const {
  size_t busy = 0;
  for (const auto& [_, v] : views_) busy += (v->inflight_ || fair_.queued(v->flow_)) ? 1 : 0;
  return busy > 1 ? contended_device_inflight_ : max_device_inflight_;
}

void SharedDevice::schedule(DeviceView& view, Transfer& t) {
  // Fast path: the device has room and nobody waits.
  if (fair_.queued() == 0 &&
      device_inflight_ <
          (view.inflight_ == device_inflight_ ? max_device_inflight_ : contended_device_inflight_))
    return send_scheduled(view, t);
  t.park(&view);
  if (!fair_.push(view.flow_, {&view, &t, std::chrono::steady_clock::now()},
                  static_cast<uint32_t>(std::min<size_t>(t.length(), UINT32_MAX)))) {
    if (view.stats_.queue_full++ % 1000 == 0)
      spdlog::warn("vusbd: {}: {} has {} URBs waiting for the device; refusing more (-ENOMEM)",
                   name_, view.vm_, fair_.queued(view.flow_));
    return view.complete_here(t, Status::kNoMemory, 0);
  }
}

void SharedDevice::send_scheduled(DeviceView& view, Transfer& t) {
  ++device_inflight_;
  ++view.inflight_;
  t.add_completion_epilogue([this, &view, alive = alive_] {
    if (!*alive) return;
    --device_inflight_;
    --view.inflight_;
    drain_fair_queue();
  });
  view.forward(t);
}

void SharedDevice::drain_fair_queue() {
  while (fair_.queued() && device_inflight_ < device_window()) {
    auto next = fair_.pop();
    if (!next) return;
    Queued q = next->second;
    q.view->stats_.queue_wait += std::chrono::steady_clock::now() - q.since;
    q.transfer->unpark();
    send_scheduled(*q.view, *q.transfer);
  }
}

void SharedDevice::flush_fair_queue(DeviceView& view, Status status) {
  while (auto q = fair_.take_if(view.flow_, [](const Queued&) { return true; }))
    view.complete_here(*q->transfer, status, 0);
}

// ------------------------------------------------------------------ timeslice mode

void SharedDevice::set_mode(Mode mode) {
  loop_.check();
  if (mode == mode_) return;
  // Per-VM timeslice state describes turns that no longer happen (or have not begun).
  for (auto& [_, v] : views_) {
    v->ts_config_.reset();
    v->ts_alts_.clear();
    v->has_class_state_ = false;
  }
  state_owner_ = nullptr;
  if (mode_ == Mode::kTimeslice) {
    // Everyone may send now: held URBs go to the device in their order.
    slicer_.reset();
    switching_ = false;
    restoring_ = false;
    ++restore_generation_;
    for (auto& [_, v] : views_) {
      auto held = std::move(v->waiting_turn_);
      v->waiting_turn_.clear();
      for (auto& w : held) v->forward(*w.transfer);
    }
  }
  mode_ = mode;
  if (mode_ == Mode::kTimeslice) slicer_ = std::make_unique<sched::TimeSlicer>(slice_);
}

DeviceView* SharedDevice::turn_view() const {
  return slicer_ && slicer_->holder() ? find_view(*slicer_->holder()) : nullptr;
}

std::string SharedDevice::turn_holder() const {
  return slicer_ && slicer_->holder() ? *slicer_->holder() : std::string();
}

DeviceView* SharedDevice::find_view(const std::string& vm) const {
  auto it = views_.find(vm);
  return it == views_.end() ? nullptr : it->second.get();
}

void SharedDevice::timeslice_submit(DeviceView& view, Transfer& t) {
  const auto now = std::chrono::steady_clock::now();
  const bool had_turn = slicer_->holder() == view.vm_;
  // While a hand-over waits for the holder's open class/vendor transaction, the holder may still
  // send (its IN closes the transaction).
  const bool may_send = !switching_ || (had_turn && now < view.txn_until_);
  if (may_send && !restoring_ && slicer_->request(view.vm_, now)) {
    if (had_turn) {
      send_in_turn(view, t);
      arm_slice_timer();
      return;
    }
    // Its turn begins (nobody held the device): its state first, then this URB.
    t.park(&view);
    view.waiting_turn_.push_back({&t, now});
    ++view.stats_.turns;
    spdlog::debug("vusbd: {}: {}'s turn", name_, view.vm_);
    begin_turn(view);
    return;
  }
  // Not this VM's turn (or the device is being handed over): hold it, cancellable.
  if ((switching_ || restoring_) && !had_turn) slicer_->request(view.vm_, now);
  t.park(&view);
  view.waiting_turn_.push_back({&t, now});
  arm_slice_timer();
  consider_switch();
}

void SharedDevice::begin_turn(DeviceView& view) {
  restoring_ = true;
  const uint64_t gen = ++restore_generation_;
  restore_state(view, [this, &view, gen, alive = alive_] {
    if (!*alive || gen != restore_generation_ || !slicer_) return;
    restoring_ = false;
    state_owner_ = &view;
    if (turn_view() != &view) return;  // it left meanwhile; finish_switch moved on
    const auto now = std::chrono::steady_clock::now();
    auto held = std::move(view.waiting_turn_);
    view.waiting_turn_.clear();
    handing_over_ = true;  // completions inside forward() must not start another switch
    for (auto& w : held) {
      view.stats_.held_time += now - w.since;
      w.transfer->unpark();
      send_in_turn(view, *w.transfer);
    }
    handing_over_ = false;
    arm_slice_timer();
    consider_switch();
  });
}

void SharedDevice::restore_state(DeviceView& in, std::move_only_function<void()> done) {
  usb::Device* be = backend_;
  DeviceView* out = state_owner_;
  if (!be || out == &in) return done();
  state_owner_ = nullptr;  // half-way: the device is in nobody's state until this completes
  // Steps run one after another; each calls `next` once (device calls may complete later).
  using Next = std::move_only_function<void()>;
  std::vector<std::move_only_function<void(Next)>> steps;
  auto log_failure = [this, &in](const char* what, Status st) {
    if (st != Status::kOk)
      spdlog::warn("vusbd: {}: restoring {}'s state: {} failed ({})", name_, in.vm_, what,
                   usb::to_string(st));
  };
  if (out) {
    out->class_state_ = be->save_class_state();
    out->has_class_state_ = true;
    // The device's own halts belong to the outgoing VM; its view keeps stalling them.
    for (const auto& [ep, h] : out->halts_)
      if (h == DeviceView::Halt::kDevice) {
        auto it = in.halts_.find(ep);
        if (it != in.halts_.end() && it->second == DeviceView::Halt::kDevice) continue;
        steps.push_back([be, ep, log_failure](Next next) mutable {
          be->clear_halt(ep, [log_failure, next = std::move(next)](Status st) mutable {
            log_failure("CLEAR_FEATURE(ENDPOINT_HALT)", st);
            next();
          });
        });
      }
  }
  if (in.ts_config_ && *in.ts_config_ != be->active_configuration())
    steps.push_back([be, value = *in.ts_config_, log_failure](Next next) mutable {
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
    if (cfg && in.ts_config_)
      for (const auto& intf : cfg->interfaces)
        if (intf.alternate == 0) {
          auto it = in.ts_alts_.find(intf.number);
          const uint8_t want = it == in.ts_alts_.end() ? 0 : it->second;
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
  if (in.has_class_state_ || out)
    steps.push_back([this, be, &in](Next next) {
      be->restore_class_state(in.has_class_state_ ? in.class_state_ : initial_class_state_);
      next();
    });
  spdlog::debug("vusbd: {}: device state of {} → {} ({} step(s))", name_,
                out ? out->vm_ : std::string("nobody"), in.vm_, steps.size());
  auto chain = std::make_shared<std::vector<std::move_only_function<void(Next)>>>(std::move(steps));
  auto step = std::make_shared<std::move_only_function<void(size_t)>>();
  // A restore that was abandoned (its VM left, the device went away, the mode changed) stops at
  // its next step: the device it would touch may be gone.
  *step = [this, chain, step, be, gen = restore_generation_, alive = alive_,
           done = std::move(done)](size_t i) mutable {
    if (!*alive || gen != restore_generation_ || backend_ != be) {
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

void SharedDevice::send_in_turn(DeviceView& view, Transfer& t) {
  view.at_device_.push_back(&t);
  if (t.type() == usb::TransferType::kControl && t.setup.type() != RequestType::kStandard) {
    // A class/vendor OUT opens a command/response transaction its next class/vendor IN closes:
    // the turn is not handed over in between (for up to the control lock timeout), because a
    // device whose class state vusbd cannot save (a remote one) would answer another VM's IN.
    t.add_completion_observer([this, &view, alive = alive_](Transfer& x) {
      if (!*alive) return;
      const auto now = std::chrono::steady_clock::now();
      if (x.setup.direction() == usb::Direction::kOut && x.status() == Status::kOk) {
        // An OUT inside an open transaction does not extend it: a VM sending OUTs without
        // end must not keep the turn for ever.
        if (now >= view.txn_until_) view.txn_until_ = now + lock_timeout_;
      } else {
        view.txn_until_ = {};
      }
    });
  }
  t.add_completion_epilogue([this, &view, tp = &t, alive = alive_] {
    if (!*alive) return;
    std::erase(view.at_device_, tp);  // the pointer only: the transfer may be gone
    consider_switch();
  });
  view.forward(t);
}

void SharedDevice::consider_switch() {
  if (!slicer_ || handing_over_ || restoring_) return;
  const auto now = std::chrono::steady_clock::now();
  DeviceView* h = turn_view();
  if (h && now < h->txn_until_ && (!switching_ || h->at_device_.empty())) {
    // The holder is between a class/vendor OUT and its IN: look again when that may be over.
    const uint64_t gen = ++txn_timer_generation_;
    timer_(std::chrono::ceil<std::chrono::milliseconds>(h->txn_until_ - now),
           [this, gen, alive = alive_] {
             if (*alive && gen == txn_timer_generation_) consider_switch();
           });
    return;
  }
  if (!switching_) {
    const bool idle = !h || (h->at_device_.empty() && h->waiting_turn_.empty());
    if (!slicer_->should_switch(now, idle)) return;
    switching_ = true;
    // Quiesce: wait for the holder's URBs at the device; what is still out after the grace time
    // is cancelled (the VM sees it unlinked, as after a real device's reset).
    const uint64_t gen = ++switch_generation_;
    timer_(std::chrono::milliseconds(100), [this, gen, alive = alive_] {
      if (!*alive || !switching_ || gen != switch_generation_ || !slicer_) return;
      if (DeviceView* v = turn_view()) {
        spdlog::info("vusbd: {}: {}'s turn is over; cancelling its {} URB(s) still at the device",
                     name_, v->vm_, v->at_device_.size());
        for (Transfer* t : std::vector<Transfer*>(v->at_device_)) t->cancel();
      }
    });
  }
  if (switching_ && (!h || h->at_device_.empty())) finish_switch();
}

void SharedDevice::finish_switch() {
  restoring_ = false;  // a restore for a VM that left is abandoned
  ++restore_generation_;
  if (!slicer_) return;
  switching_ = false;
  ++switch_generation_;
  const auto now = std::chrono::steady_clock::now();
  slicer_->next(now);
  // Whoever still holds URBs lines up again (the old holder, if it kept submitting meanwhile).
  for (auto& [name, v] : views_)
    if (!v->waiting_turn_.empty()) slicer_->request(name, now);
  DeviceView* h = turn_view();
  if (h) {
    ++h->stats_.turns;
    spdlog::debug("vusbd: {}: {}'s turn ({} waiting)", name_, h->vm_, slicer_->waiting().size());
    return begin_turn(*h);
  }
  arm_slice_timer();
  consider_switch();
}

void SharedDevice::arm_slice_timer() {
  if (!slicer_ || !slicer_->holder() || slicer_->waiting().empty()) return;
  const auto end = slicer_->slice_end();
  if (armed_for_ == end) return;  // one timer per slice, not one per URB
  armed_for_ = end;
  const auto now = std::chrono::steady_clock::now();
  const auto delay = std::chrono::ceil<std::chrono::milliseconds>(
      std::max(end - now, std::chrono::steady_clock::duration::zero()));
  const uint64_t gen = ++timer_generation_;
  timer_(delay, [this, gen, alive = alive_] {
    if (!*alive || gen != timer_generation_) return;
    consider_switch();
    arm_slice_timer();
  });
}

void SharedDevice::release_all_held(Status status) {
  for (auto& [_, v] : views_) {
    auto held = std::move(v->waiting_turn_);
    v->waiting_turn_.clear();
    for (auto& w : held) v->complete_here(*w.transfer, status, 0);
  }
}

void SharedDevice::stream_restarted(uint8_t interface, uint8_t alternate) {
  for (const usb::EndpointDescriptor& e : endpoints(interface, alternate))
    if (auto it = fanouts_.find(e.address); it != fanouts_.end()) it->second->stream_restarted();
}

IsoFanOut& SharedDevice::fanout(uint8_t endpoint) {
  auto& slot = fanouts_[endpoint];
  if (!slot) {
    slot = std::make_unique<IsoFanOut>(endpoint,
                                       [](DeviceView& view, Transfer& t) { view.forward(t); });
    // A camera's stream: followers join at a frame start (see IsoFanOut::set_uvc_payloads).
    if (uvc_ && uvc_->streams_on(endpoint)) slot->set_uvc_payloads(true);
  }
  return *slot;
}

IsoFanOut::FollowerStats SharedDevice::fanout_stats(const DeviceView& view) const {
  IsoFanOut::FollowerStats sum;
  for (const auto& [_, f] : fanouts_) {
    const auto s = f->stats(view);
    sum.copied_packets += s.copied_packets;
    sum.dropped_packets += s.dropped_packets;
    sum.skipped_packets += s.skipped_packets;
  }
  return sum;
}

DeviceView& SharedDevice::view(const std::string& vm, usb::DeviceLocation location) {
  auto& slot = views_[vm];
  if (!slot) {
    slot = std::make_unique<DeviceView>(*this, vm, std::move(location));
    slot->flow_ = fair_.add_flow(1);
  }
  return *slot;
}

std::vector<DeviceView*> SharedDevice::views() const {
  std::vector<DeviceView*> out;
  for (auto& [_, v] : views_) out.push_back(v.get());
  return out;
}

std::vector<usb::EndpointDescriptor> SharedDevice::endpoints(uint8_t interface, uint8_t alternate,
                                                             std::optional<uint8_t> config) const {
  const auto* cfg = !backend_ ? nullptr
                    : config  ? backend_->descriptors().find_configuration(*config)
                              : backend_->active_config_descriptor();
  const auto* intf = cfg ? cfg->find(interface, alternate) : nullptr;
  return intf ? intf->endpoints : std::vector<usb::EndpointDescriptor>{};
}

void SharedDevice::readmit(DeviceView& view) {
  // What the VM uses now — its configuration's alternate 0s and its alternate settings — fitted
  // before, so it fits again (best effort: a failure is logged by admit_interface).
  if (!book_ || !backend_) return;
  book_->leave(view.vm_, name_);
  const auto* cfg = backend_->descriptors().find_configuration(view.active_configuration());
  if (!cfg) return;
  for (const auto& intf : cfg->interfaces)
    if (intf.alternate == view.alternate_setting(intf.number))
      (void)book_->use(view.vm_, bus_, name_, intf.number, intf.alternate, intf.endpoints,
                       backend_->speed());
}

Status SharedDevice::admit_configuration(DeviceView& view, uint8_t value) {
  if (!book_ || !backend_) return Status::kOk;
  book_->leave(view.vm_, name_);
  const usb::ConfigurationDescriptor* cfg = backend_->descriptors().find_configuration(value);
  if (!cfg) return Status::kOk;  // unconfigured (or a value the device will refuse)
  for (const auto& intf : cfg->interfaces) {
    if (intf.alternate != 0) continue;
    if (auto r =
            book_->use(view.vm_, bus_, name_, intf.number, 0, intf.endpoints, backend_->speed());
        !r) {
      readmit(view);  // refused: it keeps what it had
      ++view.stats_.refused;
      spdlog::warn("vusbd: {}: {} asked for configuration {}, refused (-ENOSPC): {}", name_,
                   view.vm_, value, r.error().message);
      return Status::kNoBandwidth;
    }
  }
  return Status::kOk;
}

Status DeviceView::admit_endpoints(std::span<const usb::EndpointDescriptor> eps) {
  return shared_.admit_endpoints(*this, eps);
}

Status SharedDevice::admit_endpoints(DeviceView& view,
                                     std::span<const usb::EndpointDescriptor> eps) {
  if (!book_ || !backend_) return Status::kOk;
  auto periodic = [](const usb::EndpointDescriptor& e) {
    return e.type() == usb::TransferType::kIsochronous || e.type() == usb::TransferType::kInterrupt;
  };
  // Alternate settings reuse endpoint addresses with other packet sizes: an endpoint is the
  // same one when address, type and wMaxPacketSize (with the high-bandwidth bits) agree.
  auto same = [](const usb::EndpointDescriptor& a, const usb::EndpointDescriptor& b) {
    return a.address == b.address && a.type() == b.type() && a.max_packet_size == b.max_packet_size;
  };
  auto listed = [&](const usb::EndpointDescriptor& d) {
    return std::any_of(eps.begin(), eps.end(), [&](const auto& e) { return same(e, d); });
  };
  // The configuration whose interfaces cover the endpoints: for each interface, the alternate
  // setting whose endpoints are all listed (the one with the most, alt 0 when none is listed).
  for (const auto& cfg : backend_->descriptors().configurations) {
    std::map<uint8_t, std::pair<const usb::InterfaceDescriptor*, bool>> best;  // (alt, all listed)
    for (const auto& intf : cfg.interfaces) {
      const bool all = std::all_of(intf.endpoints.begin(), intf.endpoints.end(),
                                   [&](const auto& e) { return listed(e); });
      auto [it, fresh] = best.try_emplace(intf.number, &intf, all);
      auto& [b, b_all] = it->second;
      if (!fresh && all && (!b_all || intf.endpoints.size() > b->endpoints.size())) {
        b = &intf;
        b_all = true;
      }
    }
    std::map<uint8_t, const usb::InterfaceDescriptor*> chosen;
    for (auto& [n, b] : best) chosen[n] = b.first;
    size_t covered = 0;
    for (const auto& e : eps)
      for (auto& [n, intf] : chosen)
        if (std::any_of(intf->endpoints.begin(), intf->endpoints.end(),
                        [&](const auto& x) { return same(x, e); })) {
          ++covered;
          break;
        }
    if (covered != eps.size()) continue;
    book_->leave(view.vm_, name_);
    for (auto& [n, intf] : chosen) {
      if (!std::any_of(intf->endpoints.begin(), intf->endpoints.end(), periodic)) continue;
      if (auto r = book_->use(view.vm_, bus_, name_, intf->number, intf->alternate, intf->endpoints,
                              backend_->speed());
          !r) {
        readmit(view);
        ++view.stats_.refused;
        spdlog::warn(
            "vusbd: {}: {}'s controller asked for interface {} alternate {}, refused "
            "(Bandwidth Error): {}",
            name_, view.vm_, intf->number, intf->alternate, r.error().message);
        return Status::kNoBandwidth;
      }
    }
    return Status::kOk;
  }
  return Status::kOk;  // endpoints no configuration has: the device will refuse, not the bus
}

Status SharedDevice::admit_interface(DeviceView& view, uint8_t interface, uint8_t alternate) {
  if (!book_ || !backend_) return Status::kOk;
  if (auto r = book_->use(view.vm_, bus_, name_, interface, alternate,
                          endpoints(interface, alternate, view.active_configuration()),
                          backend_->speed());
      !r) {
    ++view.stats_.refused;
    spdlog::warn("vusbd: {}: {} asked for interface {} alternate {}, refused (-ENOSPC): {}", name_,
                 view.vm_, interface, alternate, r.error().message);
    return Status::kNoBandwidth;
  }
  return Status::kOk;
}

bool SharedDevice::others_hold(const DeviceView& view) const {
  for (auto& [_, v] : views_)
    if (v.get() != &view && v->held_) return true;
  return false;
}

std::string SharedDevice::holders_except(const DeviceView& view) const {
  std::string out;
  for (auto& [name, v] : views_)
    if (v.get() != &view && v->held_) out += (out.empty() ? "" : ", ") + name;
  return out.empty() ? "nobody" : out;
}

std::string SharedDevice::uvc_streamer(const DeviceView& view, uint8_t interface) const {
  if (uvc_->bulk(interface)) {
    std::string s = uvc_->bulk_streamer(interface);
    return s == view.vm_ ? std::string() : s;
  }
  for (const auto& [name, v] : views_)
    if (v.get() != &view && v->held_ && v->alternate_setting(interface) != 0) return name;
  // A VM that has just committed is about to select its alternate setting.
  return uvc_->recent_committer(interface, view.vm_, std::chrono::steady_clock::now());
}

void SharedDevice::uvc_request(DeviceView& view, Transfer& t) {
  const usb::SetupPacket setup = t.setup;
  const auto* vs = uvc_->target(setup);
  const size_t length = std::min<size_t>(setup.length, t.length());
  const bool out = setup.direction() == usb::Direction::kOut;
  std::vector<uint8_t> data;
  if (out)
    data.assign(t.buffer().begin(), t.buffer().begin() + static_cast<std::ptrdiff_t>(length));
  auto d = uvc_->decide(view.vm_, setup, data, uvc_streamer(view, vs->interface));
  using Kind = UvcSharing::Decision::Kind;
  switch (d.kind) {
    case Kind::kForward:
      t.add_completion_observer(
          [this, vm = view.vm_, setup, data = std::move(data), alive = alive_](Transfer& x) {
            if (*alive && uvc_)
              uvc_->on_forwarded(vm, setup, data, x.status(), std::chrono::steady_clock::now());
          });
      return submit_control(view, t);
    case Kind::kAnswer: {
      if (!d.log.empty()) spdlog::info("vusbd: {}: {}", name_, d.log);
      // The IN that would have closed this VM's class transaction was answered here.
      if (!out && control_owner_ == &view) release_control_lock();
      size_t n = length;
      if (!out) {
        n = std::min(n, d.reply.size());
        if (n) std::memcpy(t.buffer().data(), d.reply.data(), n);
      }
      return view.complete_here(t, Status::kOk, n);
    }
    case Kind::kRefuse:
      spdlog::warn("vusbd: {}: {}", name_, d.log);
      ++view.stats_.refused;
      return view.complete_here(t, Status::kStall, 0);
  }
}

void SharedDevice::submit_control(DeviceView& view, Transfer& t) {
  if (control_owner_ && control_owner_ != &view) {
    // Another VM is between its class/vendor OUT and IN: wait, cancellable (parked here).
    t.park(&view);
    control_waiting_.push_back({&view, &t});
    return;
  }
  const bool out = t.setup.direction() == usb::Direction::kOut;
  if (out && control_owner_ != &view) {
    control_owner_ = &view;
    const uint64_t gen = ++lock_generation_;
    timer_(lock_timeout_, [this, gen, alive = alive_] {
      if (!*alive || control_owner_ == nullptr || lock_generation_ != gen) return;
      spdlog::debug("vusbd: {}: {}'s control transaction timed out; releasing", name_,
                    control_owner_->vm_);
      release_control_lock();
    });
  }
  const uint64_t gen = lock_generation_;
  t.add_completion_observer([this, &view, gen, alive = alive_](Transfer& x) {
    if (*alive) on_control_done(view, x, gen);
  });
  view.forward(t);
}

void SharedDevice::on_control_done(DeviceView& view, const Transfer& t, uint64_t generation) {
  if (control_owner_ != &view || lock_generation_ != generation) return;
  // The owner's IN closes its transaction; a failed OUT never opened one the device remembers.
  if (t.setup.direction() == usb::Direction::kIn || t.status() != Status::kOk)
    release_control_lock();
}

void SharedDevice::release_control_lock() {
  control_owner_ = nullptr;
  ++lock_generation_;
  while (!control_owner_ && !control_waiting_.empty()) {
    Waiting w = control_waiting_.front();
    control_waiting_.pop_front();
    w.transfer->unpark();
    submit_control(*w.view, *w.transfer);
  }
}

void SharedDevice::serialize(std::move_only_function<void()> op) {
  ops_.push_back(std::move(op));
  while (!op_busy_ && !ops_.empty()) {
    auto next = std::move(ops_.front());
    ops_.pop_front();
    op_busy_ = true;
    next();
  }
}

void SharedDevice::op_done() {
  op_busy_ = false;
  while (!op_busy_ && !ops_.empty()) {
    auto next = std::move(ops_.front());
    ops_.pop_front();
    op_busy_ = true;
    next();
  }
}

bool SharedDevice::cancel_waiting(Transfer& t) {
  auto it = std::find_if(control_waiting_.begin(), control_waiting_.end(),
                         [&](const Waiting& w) { return w.transfer == &t; });
  if (it == control_waiting_.end()) return false;
  DeviceView* view = it->view;
  control_waiting_.erase(it);
  view->complete_here(t, Status::kCancelled, 0);
  return true;
}

}  // namespace vusbd
