#include "vmm-frontend/sharing/shared_device.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

namespace vusbd {

using usb::Status;
using usb::Transfer;

SharedDevice::SharedDevice(std::string name, Mode mode, Timer timer,
                           std::chrono::milliseconds control_lock_timeout,
                           std::chrono::milliseconds slice, Clock clock)
    : name_(std::move(name)),
      mode_(mode),
      timer_(std::move(timer)),
      clock_(std::move(clock)),
      control_(*this, control_lock_timeout),
      timeslice_(*this, slice, mode_ == Mode::kTimeslice) {}

SharedDevice::~SharedDevice() {
  fanouts_.clear();  // parked iso IN URBs complete with kNoDevice while the views exist
  timeslice_.release_all_held(Status::kNoDevice);
  for (auto& [_, v] : views_) fair_.flush(*v, Status::kNoDevice);
  *alive_ = false;
  control_.drop(Status::kNoDevice);
}

void SharedDevice::set_backend(usb::Device* backend) {
  loop_.check();
  backend_ = backend;
  if (backend_) timeslice_.device_appeared(*backend_);
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
    control_.drop(Status::kNoDevice);
    for (auto& [_, v] : views_) v->state_.clear_halts();
    for (auto& [_, f] : fanouts_) f->clear(Status::kNoDevice);
    timeslice_.release_all_held(Status::kNoDevice);
    for (auto& [_, v] : views_) fair_.flush(*v, Status::kNoDevice);
    timeslice_.device_gone();
    bandwidth_.device_gone();
  }
}

void SharedDevice::set_weight(const std::string& vm, uint32_t weight) {
  if (DeviceView* v = find_view(vm)) fair_.set_weight(*v, weight);
}

void SharedDevice::set_mode(Mode mode) {
  loop_.check();
  if (mode == mode_) return;
  timeslice_.forget_device_states();
  if (mode_ == Mode::kTimeslice) timeslice_.stop();
  mode_ = mode;
  if (mode_ == Mode::kTimeslice) timeslice_.start();
}

DeviceView& SharedDevice::view(const std::string& vm, usb::DeviceLocation location) {
  auto& slot = views_[vm];
  if (!slot) {
    slot = std::make_unique<DeviceView>(*this, vm, std::move(location));
    fair_.add(*slot);
  }
  return *slot;
}

std::vector<DeviceView*> SharedDevice::views() const {
  std::vector<DeviceView*> out;
  for (auto& [_, v] : views_) out.push_back(v.get());
  return out;
}

DeviceView* SharedDevice::find_view(const std::string& vm) const {
  auto it = views_.find(vm);
  return it == views_.end() ? nullptr : it->second.get();
}

bool SharedDevice::others_hold(const DeviceView& view) const {
  for (auto& [_, v] : views_)
    if (v.get() != &view && v->held()) return true;
  return false;
}

std::string SharedDevice::holders_except(const DeviceView& view) const {
  std::string out;
  for (auto& [name, v] : views_)
    if (v.get() != &view && v->held()) out += (out.empty() ? "" : ", ") + name;
  return out.empty() ? "nobody" : out;
}

std::vector<usb::EndpointDescriptor> SharedDevice::endpoints(uint8_t interface, uint8_t alternate,
                                                             std::optional<uint8_t> config) const {
  const auto* cfg = !backend_ ? nullptr
                    : config  ? backend_->descriptors().find_configuration(*config)
                              : backend_->active_config_descriptor();
  const auto* intf = cfg ? cfg->find(interface, alternate) : nullptr;
  return intf ? intf->endpoints : std::vector<usb::EndpointDescriptor>{};
}

// ------------------------------------------------------------------ isochronous IN fan-out

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

// ------------------------------------------------------------------ cameras

std::string SharedDevice::uvc_streamer(const DeviceView& view, uint8_t interface) const {
  if (uvc_->bulk(interface)) {
    std::string s = uvc_->bulk_streamer(interface);
    return s == view.vm() ? std::string() : s;
  }
  for (const auto& [name, v] : views_)
    if (v.get() != &view && v->held() && v->alternate_setting(interface) != 0) return name;
  // A VM that has just committed is about to select its alternate setting.
  return uvc_->recent_committer(interface, view.vm(), now());
}

void SharedDevice::uvc_request(DeviceView& view, Transfer& t) {
  const usb::SetupPacket setup = t.setup;
  const auto* vs = uvc_->target(setup);
  const size_t length = std::min<size_t>(setup.length, t.length());
  const bool out = setup.direction() == usb::Direction::kOut;
  std::vector<uint8_t> data;
  if (out)
    data.assign(t.buffer().begin(), t.buffer().begin() + static_cast<std::ptrdiff_t>(length));
  auto d = uvc_->decide(view.vm(), setup, data, uvc_streamer(view, vs->interface));
  using Kind = UvcSharing::Decision::Kind;
  switch (d.kind) {
    case Kind::kForward:
      t.add_completion_observer(
          [this, vm = view.vm(), setup, data = std::move(data), alive = alive_](Transfer& x) {
            if (*alive && uvc_) uvc_->on_forwarded(vm, setup, data, x.status(), now());
          });
      return control_.submit(view, t);
    case Kind::kAnswer: {
      if (!d.log.empty()) spdlog::info("vusbd: {}: {}", name_, d.log);
      // The IN that would have closed this VM's class transaction was answered here.
      if (!out && control_.owner() == &view) control_.release();
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

}  // namespace vusbd
