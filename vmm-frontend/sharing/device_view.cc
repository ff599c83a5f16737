#include "vmm-frontend/sharing/device_view.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd {

using usb::Recipient;
using usb::RequestType;
using usb::Status;
using usb::Transfer;
namespace rq = usb::request;

namespace {
const usb::DescriptorSet kNoDescriptors{};
}  // namespace

DeviceView::DeviceView(SharedDevice& shared, std::string vm, usb::DeviceLocation location)
    : shared_(shared), vm_(std::move(vm)), location_(std::move(location)) {}

DeviceView::~DeviceView() = default;

const usb::DescriptorSet& DeviceView::descriptors() const {
  return shared_.backend() ? shared_.backend()->descriptors() : kNoDescriptors;
}
usb::Speed DeviceView::speed() const {
  return shared_.backend() ? shared_.backend()->speed() : usb::Speed::kUnknown;
}
uint8_t DeviceView::active_configuration() const {
  if (shared_.mode() == SharedDevice::Mode::kTimeslice && turn_.config) return *turn_.config;
  return shared_.backend() ? shared_.backend()->active_configuration() : 0;
}
uint8_t DeviceView::alternate_setting(uint8_t interface) const {
  if (shared_.mode() == SharedDevice::Mode::kTimeslice && turn_.config) {
    auto it = turn_.alts.find(interface);
    return it == turn_.alts.end() ? 0 : it->second;
  }
  if (auto alt = state_.alternate(interface)) return *alt;
  return shared_.backend() ? shared_.backend()->alternate_setting(interface) : 0;
}
bool DeviceView::connected() const {
  return shared_.backend() && shared_.backend()->connected();
}

bool DeviceView::try_acquire() {
  if (shared_.mode() == SharedDevice::Mode::kExclusive && shared_.others_hold(*this)) {
    spdlog::warn("vusbd: {}: {} asked for it in exclusive mode while {} holds it", shared_.name(),
                 vm_, shared_.holders_except(*this));
    return false;
  }
  held_ = true;
  if (shared_.on_hold_change_) shared_.on_hold_change_(*this, true);
  return true;
}

void DeviceView::release() {
  held_ = false;
  shared_.timeslice_.forget(*this);
  shared_.bandwidth_.leave(*this);
  state_.clear_halts();
  state_.clear_alternates();
  if (shared_.uvc_) {
    // A bulk camera this VM was streaming stops with it.
    for (uint8_t ep : shared_.uvc_->forget(vm_))
      if (shared_.backend()) shared_.backend()->clear_halt(ep, [](Status) {});
  }
  if (shared_.control_.owner() == this) shared_.control_.release();
  for (auto& [_, f] : shared_.fanouts_) f->drop_view(*this, Status::kCancelled);
  shared_.fair_.flush(*this, Status::kCancelled);
  shared_.timeslice_.leave(*this);
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
  usb::Device* be = shared_.backend();
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
        if (state_.halted(ep)) status[0] = 1;
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
  shared_.backend()->submit(t);
}

void DeviceView::submit(Transfer& t) {
  shared_.loop_.check();
  if (t.state() != Transfer::State::kIdle) return;
  if (!connected()) return complete_here(t, Status::kNoDevice, 0);
  const auto t0 = shared_.now();
  t.add_completion_observer([this, t0](Transfer& x) {
    ++stats_.urbs;
    (x.direction() == usb::Direction::kIn ? stats_.bytes_in : stats_.bytes_out) +=
        x.actual_length();
    if (x.status() == Status::kStall)
      ++stats_.stalls;
    else if (x.status() != Status::kOk && x.status() != Status::kCancelled &&
             x.status() != Status::kUnlinked)
      ++stats_.errors;
    stats_.latency_total += shared_.now() - t0;
    if (x.status() == Status::kStall && usb::endpoint_number(x.endpoint()) != 0)
      state_.device_stalled(x.endpoint());
  });

  if (usb::endpoint_number(t.endpoint()) != 0) {
    if (state_.halted(t.endpoint())) return complete_here(t, Status::kStall, 0);
    if (shared_.mode() == SharedDevice::Mode::kTimeslice) return shared_.timeslice_.submit(*this, t);
    if (t.type() == usb::TransferType::kIsochronous &&
        usb::endpoint_direction(t.endpoint()) == usb::Direction::kIn &&
        shared_.mode() == SharedDevice::Mode::kShared)
      return shared_.fanout(t.endpoint()).submit(*this, t);
    return shared_.fair_.submit(*this, t);
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
        state_.clear_halt(ep);
        return shared_.backend()->clear_halt(ep, done);
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
  if (shared_.mode() == SharedDevice::Mode::kTimeslice) return shared_.timeslice_.submit(*this, t);
  if (shared_.uvc_ && shared_.mode() == SharedDevice::Mode::kShared && shared_.uvc_->target(s))
    return shared_.uvc_request(*this, t);
  shared_.control_.submit(*this, t);
}

void DeviceView::cancel(Transfer& t) {
  // Reached only for transfers parked here (forwarded ones are cancelled by the backend).
  if (shared_.fair_.cancel(*this, t)) return;
  if (shared_.timeslice_.cancel(*this, t)) return;
  for (auto& [_, f] : shared_.fanouts_)
    if (f->cancel(t)) return;
  if (auto it = std::find(control_queue_.begin(), control_queue_.end(), &t);
      it != control_queue_.end()) {
    control_queue_.erase(it);
    return complete_here(t, Status::kCancelled, 0);
  }
  if (!shared_.control_.cancel(t)) complete_here(t, Status::kCancelled, 0);
}

void DeviceView::reset(usb::StatusCallback done) {
  state_.clear_halts();
  if (!connected()) return done(Status::kNoDevice);
  if (shared_.others_hold(*this)) {
    // Resetting the real device would pull it from under the other VMs: this VM's view is reset.
    spdlog::info("vusbd: {}: {} reset its view (not the device: {} use it)", shared_.name(), vm_,
                 shared_.holders_except(*this));
    ++stats_.cache_hits;
    return done(Status::kOk);
  }
  shared_.backend()->reset(std::move(done));
}

void DeviceView::set_configuration(uint8_t value, usb::StatusCallback done) {
  shared_.config_.set_configuration(*this, value, std::move(done));
}

void DeviceView::set_interface(uint8_t interface, uint8_t alternate, usb::StatusCallback done) {
  shared_.config_.set_interface(*this, interface, alternate, std::move(done));
}

void DeviceView::clear_halt(uint8_t endpoint, usb::StatusCallback done) {
  const ViewState::Halt h = state_.clear_halt(endpoint);
  if (!connected()) return done(Status::kNoDevice);
  // The device is told when it halted the endpoint itself, or when nobody else could be disturbed
  // by the data-toggle reset a CLEAR_FEATURE(HALT) implies.
  const bool timeslice = shared_.mode() == SharedDevice::Mode::kTimeslice;
  if (timeslice ? (h == ViewState::Halt::kDevice && shared_.timeslice_.state_in_device(*this))
                : (h == ViewState::Halt::kDevice || !shared_.others_hold(*this)))
    return shared_.backend()->clear_halt(endpoint, std::move(done));
  ++stats_.cache_hits;
  done(Status::kOk);
}

void DeviceView::set_halt(uint8_t endpoint, usb::StatusCallback done) {
  if (usb::endpoint_number(endpoint) != 0) state_.set_virtual_halt(endpoint);
  ++stats_.cache_hits;
  done(Status::kOk);
}

Status DeviceView::admit_endpoints(std::span<const usb::EndpointDescriptor> eps) {
  return shared_.bandwidth_.admit_endpoints(*this, eps);
}

}  // namespace vusbd
