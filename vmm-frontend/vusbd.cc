#include "vmm-frontend/vusbd.h"

#include <spdlog/spdlog.h>

#include <boost/asio/steady_timer.hpp>

#include "devices/emulated/gadget_zero.h"

namespace vusbd {

namespace {

SharedDevice::Timer asio_timer(boost::asio::io_context& io) {
  return [&io](std::chrono::milliseconds delay, std::move_only_function<void()> fn) {
    auto timer = std::make_shared<boost::asio::steady_timer>(io, delay);
    auto boxed = std::make_shared<std::move_only_function<void()>>(std::move(fn));
    timer->async_wait([timer, boxed](boost::system::error_code ec) {
      if (!ec) (*boxed)();
    });
  };
}

}  // namespace

Vusbd::Vusbd(boost::asio::io_context& io, VusbdConfig config)
    : io_(io), config_(std::move(config)) {
  for (const auto& vc : config_.vms) {
    auto vm = std::make_unique<Vm>();
    vm->config = vc;
    vm->table = std::make_unique<stub::ExportTable>();
    stub::ConnectionLimits limits;
    limits.label = "vm " + vc.name;
    vm->server = std::make_unique<stub::UsbipServer>(io_, *vm->table, limits);
    vms_.push_back(std::move(vm));
  }
  for (const auto& dc : config_.devices) {
    auto dev = std::make_unique<Dev>();
    dev->config = dc;
    dev->shared = std::make_unique<SharedDevice>(
        dc.name,
        dc.mode == "exclusive" ? SharedDevice::Mode::kExclusive : SharedDevice::Mode::kShared,
        asio_timer(io_));
    // Each VM's view gets the next VM-local address on that VM's bus 1.
    for (const auto& vm_name : dc.vms) {
      for (auto& vm : vms_) {
        if (vm->config.name != vm_name) continue;
        uint32_t n = 1;
        for (const auto& other : config_.devices) {
          if (other.name == dc.name) break;
          if (std::find(other.vms.begin(), other.vms.end(), vm_name) != other.vms.end()) ++n;
        }
        usb::DeviceLocation loc{1, n + 1, "1-" + std::to_string(n),
                                "/vusbd/" + vm_name + "/" + dc.name};
        dev->exports.push_back({vm.get(), &dev->shared->view(vm_name, loc)});
      }
    }
    devices_.push_back(std::move(dev));
  }
}

Vusbd::~Vusbd() {
  stop();
}

usb::Result<void> Vusbd::start(std::function<void()> on_ready) {
  on_ready_ = std::move(on_ready);
  for (auto& vm : vms_) {
    if (auto r = vm->server->listen(vm->config.listen); !r)
      return usb::Error::make(r.error().code, "vm '" + vm->config.name + "': " + r.error().message);
    spdlog::info("vusbd: vm {} served on {}:{}", vm->config.name, vm->config.listen.host,
                 vm->server->local_port());
  }
  for (auto& dev : devices_) {
    Dev* d = dev.get();
    if (d->config.kind == DeviceConfig::Kind::kUsbip) {
      d->remote = std::make_unique<RemoteBackend>(
          io_, d->config.server, d->config.busid,
          [this, d](usb::Device* backend) { on_backend(*d, backend); });
      d->remote->start();
    } else {
      auto gz = std::make_unique<devices::GadgetZero>(devices::GadgetZeroOptions{},
                                                      usb::DeviceLocation{});
      gz->set_configuration(gz->descriptors().configurations.front().value, [](usb::Status) {});
      d->local = std::move(gz);
      on_backend(*d, d->local.get());
    }
  }
  check_ready();
  return {};
}

void Vusbd::on_backend(Dev& dev, usb::Device* backend) {
  if (!backend) {
    // Withdraw first (importing VMs get their in-flight URBs back and a disconnect), then drop.
    for (auto& e : dev.exports) e.vm->table->remove(*e.view);
    dev.shared->set_backend(nullptr);
    return;
  }
  dev.shared->set_backend(backend);
  for (auto& e : dev.exports) {
    if (auto r = e.vm->table->add(*e.view, e.view); !r)
      spdlog::warn("vusbd: cannot offer {} to {}: {}", dev.config.name, e.vm->config.name,
                   r.error().message);
    else
      spdlog::info("vusbd: {} offered to vm {} as {} ({} mode)", dev.config.name, e.vm->config.name,
                   *r, dev.config.mode);
  }
  check_ready();
}

void Vusbd::check_ready() {
  if (ready_) return;
  for (auto& dev : devices_)
    if (!dev->shared->backend()) return;
  ready_ = true;
  spdlog::info("vusbd: ready");
  if (on_ready_) on_ready_();
}

void Vusbd::stop() {
  for (auto& vm : vms_) vm->server->stop();
  for (auto& dev : devices_) {
    for (auto& e : dev->exports) e.vm->table->remove(*e.view);
    dev->shared->set_backend(nullptr);
    dev->remote.reset();
    dev->local.reset();
  }
}

uint16_t Vusbd::vm_port(const std::string& vm) const {
  for (auto& v : vms_)
    if (v->config.name == vm) return v->server->local_port();
  return 0;
}

nlohmann::json Vusbd::stats() const {
  nlohmann::json out;
  out["vms"] = nlohmann::json::object();
  out["devices"] = nlohmann::json::object();
  for (auto& vm : vms_) out["vms"][vm->config.name] = nlohmann::json::object();
  for (auto& dev : devices_) {
    out["devices"][dev->config.name] = {{"source", dev->config.source},
                                        {"mode", dev->config.mode},
                                        {"connected", dev->shared->backend() != nullptr}};
    for (auto& e : dev->exports) {
      const ViewStats& s = e.view->stats();
      out["vms"][e.vm->config.name][dev->config.name] = {
          {"busid", e.view->location().busid},
          {"urbs", s.urbs},
          {"bytes_in", s.bytes_in},
          {"bytes_out", s.bytes_out},
          {"cache_hits", s.cache_hits},
          {"stalls", s.stalls},
          {"errors", s.errors},
          {"refused", s.refused},
          {"avg_latency_us",
           s.urbs ? std::chrono::duration<double, std::micro>(s.latency_total).count() /
                        static_cast<double>(s.urbs)
                  : 0.0}};
    }
  }
  return out;
}

}  // namespace vusbd
