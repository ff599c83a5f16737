#include "vmm-frontend/sharing/config_arbiter.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd {

using usb::Status;

ConfigArbiter::ConfigArbiter(SharedDevice& shared) : shared_(shared) {}

void ConfigArbiter::set_configuration(DeviceView& view, uint8_t value, usb::StatusCallback done) {
  serialize([this, &view, value, done = std::move(done)]() mutable {
    configure(view, value, [this, done = std::move(done)](Status st) mutable {
      done(st);
      op_done();
    });
  });
}

void ConfigArbiter::set_interface(DeviceView& view, uint8_t interface, uint8_t alternate,
                                  usb::StatusCallback done) {
  serialize([this, &view, interface, alternate, done = std::move(done)]() mutable {
    select_alternate(view, interface, alternate, [this, done = std::move(done)](Status st) mutable {
      done(st);
      op_done();
    });
  });
}

void ConfigArbiter::serialize(std::move_only_function<void()> op) {
  ops_.push_back(std::move(op));
  while (!op_busy_ && !ops_.empty()) {
    auto next = std::move(ops_.front());
    ops_.pop_front();
    op_busy_ = true;
    next();
  }
}

void ConfigArbiter::op_done() {
  op_busy_ = false;
  while (!op_busy_ && !ops_.empty()) {
    auto next = std::move(ops_.front());
    ops_.pop_front();
    op_busy_ = true;
    next();
  }
}

void ConfigArbiter::configure(DeviceView& view, uint8_t value, usb::StatusCallback done) {
  if (!view.connected()) return done(Status::kNoDevice);
  if (shared_.mode() == SharedDevice::Mode::kTimeslice)
    return shared_.timeslice_.set_configuration(view, value, std::move(done));
  usb::Device* be = shared_.backend();
  const uint8_t current = be->active_configuration();
  // An unconfigured device takes the first configuration asked for, held by others or not: the
  // other holders' drivers have not configured it yet (and will ask for the same one), and
  // nobody loses a configuration they use. Once configured, only a sole holder changes it.
  const bool others_use = shared_.others_hold(view) && current != 0;
  if (current == value || !others_use)
    if (Status st = shared_.bandwidth_.admit_configuration(view, value); st != Status::kOk)
      return done(st);
  if (current == value) {
    ++view.stats_.cache_hits;
    view.state_.clear_halts();
    view.state_.clear_alternates();
    return done(Status::kOk);
  }
  if (others_use) {
    ++view.stats_.refused;
    spdlog::warn("vusbd: {}: {} asked for configuration {}, refused: {} use configuration {}",
                 shared_.name(), view.vm(), value, shared_.holders_except(view), current);
    return done(Status::kStall);
  }
  view.state_.clear_halts();
  view.state_.clear_alternates();
  be->set_configuration(value, [this, &view, done = std::move(done)](Status st) mutable {
    if (st != Status::kOk) shared_.bandwidth_.readmit(view);  // bandwidth follows the device
    done(st);
  });
}

void ConfigArbiter::select_alternate(DeviceView& view, uint8_t interface, uint8_t alternate,
                                     usb::StatusCallback done) {
  if (!view.connected()) return done(Status::kNoDevice);
  if (shared_.mode() == SharedDevice::Mode::kTimeslice)
    return shared_.timeslice_.set_interface(view, interface, alternate, std::move(done));
  usb::Device* be = shared_.backend();
  const auto* cfg = be->active_config_descriptor();
  if (!cfg || !cfg->find(interface, alternate)) return done(Status::kStall);  // as a device would
  view.state_.clear_halts();
  const uint8_t device_alt = be->alternate_setting(interface);
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
  const uint8_t previous = view.alternate_setting(interface);
  if (device_alt == alternate) {
    if (Status st = shared_.bandwidth_.admit_interface(view, interface, alternate);
        st != Status::kOk)
      return done(st);
    ++view.stats_.cache_hits;
    view.state_.follow_device(interface);
    return done(Status::kOk);
  }
  // Switch the device if every other VM's endpoints survive the switch.
  bool others_fit = true;
  for (DeviceView* v : shared_.views())
    if (v != &view && v->held())
      others_fit = others_fit &&
                   contains(wanted, shared_.endpoints(interface, v->alternate_setting(interface)));
  if (others_fit) {
    if (Status st = shared_.bandwidth_.admit_interface(view, interface, alternate);
        st != Status::kOk)
      return done(st);
    // Others keep the setting they chose, now possibly different from the device's.
    for (DeviceView* v : shared_.views())
      if (v != &view && v->held() && !v->state_.has_alternate(interface))
        v->state_.set_alternate(interface, device_alt);
    be->set_interface(
        interface, alternate,
        [this, &view, interface, alternate, previous, done = std::move(done)](Status st) mutable {
          if (st == Status::kOk) {
            view.state_.follow_device(interface);
            shared_.stream_restarted(interface, alternate);
          } else {  // the bandwidth goes back to what the VM had
            (void)shared_.bandwidth_.admit_interface(view, interface, previous);
          }
          // Views whose choice now equals the device's follow it again.
          for (DeviceView* v : shared_.views())
            if (v->state_.alternate(interface) == alternate) v->state_.follow_device(interface);
          done(st);
        });
    return;
  }
  // Otherwise this VM alone may use `alternate` if its endpoints exist in the device's setting.
  if (contains(shared_.endpoints(interface, device_alt), wanted)) {
    if (Status st = shared_.bandwidth_.admit_interface(view, interface, alternate);
        st != Status::kOk)
      return done(st);
    ++view.stats_.cache_hits;
    view.state_.set_alternate(interface, alternate);
    return done(Status::kOk);
  }
  ++view.stats_.refused;
  spdlog::warn("vusbd: {}: {} asked for interface {} alternate {}, refused: {} need alternate {}",
               shared_.name(), view.vm(), interface, alternate, shared_.holders_except(view),
               device_alt);
  done(Status::kStall);
}

}  // namespace vusbd
