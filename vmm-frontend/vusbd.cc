#include "vmm-frontend/vusbd.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cctype>
#include <set>

#include "devices/emulated/emulated_factory.h"
#include "usb/net/asio_timer.h"
#include "usb/net/peer_rule.h"
#include "usb/usbip/url.h"
#include "vmm-frontend/backends/emulated_source.h"
#include "vmm-frontend/backends/libusb_backend.h"
#include "vmm-frontend/backends/process_source.h"
#include "vmm-frontend/backends/remote_backend.h"
#include "vmm-frontend/backends/usbredir_backend.h"

namespace vusbd {

namespace {

SharedDevice::Mode mode_of(const std::string& mode) {
  if (mode == "exclusive") return SharedDevice::Mode::kExclusive;
  if (mode == "timeslice") return SharedDevice::Mode::kTimeslice;
  return SharedDevice::Mode::kShared;
}

std::unexpected<usb::Error> not_found(std::string what) {
  return usb::Error::make(usb::Error::Code::kNotFound, std::move(what));
}

}  // namespace

Vusbd::Vusbd(boost::asio::io_context& io, VusbdConfig config, std::string config_path)
    : io_(io), config_(std::move(config)), config_path_(std::move(config_path)) {
  make_tls();
  for (const auto& vc : config_.vms) {
    auto vm = std::make_unique<Vm>();
    vm->config = vc;
    auto usbip = std::make_unique<UsbipVmAdapter>(io_, vc.name, vc.listen, vm_listener(vc));
    vm->usbip = usbip.get();
    vm->adapters.push_back(std::move(usbip));
    if (!vc.usbredir.empty()) {
      auto redir =
          std::make_unique<UsbredirVmAdapter>(io_, vc.name, vc.usbredir, vm_listener(vc));
      vm->usbredir = redir.get();
      vm->adapters.push_back(std::move(redir));
    }
    vms_.push_back(std::move(vm));
  }
  bandwidth_.on_change([this] {
    // Exports change outside the control request that changed the reservations.
    if (refresh_posted_) return;
    refresh_posted_ = true;
    boost::asio::post(io_, [this, alive = alive_] {
      if (!*alive) return;
      refresh_posted_ = false;
      refresh_reservation_devices();
    });
  });
}

Vusbd::~Vusbd() {
  stop();
  // Register sets leave the controller while it and the devices' views still exist.
  for (auto& vm : vms_)
    if (vm->hc) detach_controller(vm->config.name);
  *alive_ = false;
}

void Vusbd::make_tls() {
  if (!config_.tls.enabled()) return;
  // One [tls] for both roles; each context is made only where the files allow it, and a part of
  // the config that needs a missing one says so (start(), the connector).
  if (auto c = usb::net::TlsContext::make(config_.tls, usb::net::TlsRole::kClient); c)
    tls_client_ = *c;
  else
    tls_error_ = c.error().message;
  if (auto s = usb::net::TlsContext::make(config_.tls, usb::net::TlsRole::kServer); s)
    tls_server_ = *s;
  else if (tls_error_.empty())
    tls_error_ = s.error().message;
}

usb::net::Listener::Options Vusbd::vm_listener(const VmConfig& vc) const {
  usb::net::Listener::Options o;
  o.tls = tls_server_;
  auto allow = usb::net::PeerList::parse(vc.allow);  // validated in start()
  if (allow && !allow->empty()) {
    o.authenticated = true;  // its allow-list guards it
    o.check = [vm = vc.name, allow = *allow](const usb::net::PeerInfo& peer) -> usb::Result<void> {
      if (allow.admits(peer)) return {};
      return usb::Error::make(usb::Error::Code::kDenied,
                              "not vm " + vm + "'s (allow = " + allow.to_string() + ")");
    };
  }
  return o;
}

usb::Result<void> Vusbd::start(std::function<void()> on_ready) {
  on_ready_ = std::move(on_ready);
  if (auto r = validate(config_); !r) return r;
  for (const auto& vc : config_.vms)
    if (vc.listen.tls && !tls_server_)
      return usb::Error::make(usb::Error::Code::kInvalidArgument,
                              "vm '" + vc.name + "': [tls]: " + tls_error_);
  for (auto& vm : vms_)
    for (auto& adapter : vm->adapters)
      if (auto r = adapter->start(); !r)
        return usb::Error::make(r.error().code, "vm '" + vm->config.name + "' (" +
                                                    std::string(adapter->kind()) +
                                                    "): " + r.error().message);
  started_ = true;
  for (auto& vm : vms_)
    if (vm->config.bandwidth_device) {
      const auto id = addresses_.add_device("bandwidth@" + vm->config.name);
      if (auto r = addresses_.assign(vm->config.name, id, kReservationPort); !r)
        return std::unexpected(r.error());
    }
  refresh_reservation_devices();
  // Create every device, give the fixed ports, then the automatic ones (so an automatic port
  // never takes a port the config names), then start the backends.
  auto devices = std::move(config_.devices);
  config_.devices.clear();
  for (auto& dc : devices)
    if (auto r = create_device(dc); !r) return r;
  for (bool fixed : {true, false})
    for (const auto& dc : devices)
      for (const auto& vm :
           dc.kind == DeviceConfig::Kind::kUsbipAll ? std::vector<std::string>{} : dc.vms) {
        auto p = dc.ports.find(vm);
        if ((p != dc.ports.end()) != fixed) continue;
        if (auto r = attach(dc.name, vm, fixed ? p->second : 0); !r)
          spdlog::warn("vusbd: {} not given to {}: {}", dc.name, vm, r.error().message);
      }
  for (auto& d : devices_)
    if (auto r = start_device(*d); !r)
      return usb::Error::make(r.error().code, "device '" + d->name + "': " + r.error().message);
  save();
  check_ready();
  return {};
}

// ------------------------------------------------------------------ control operations

usb::Result<void> Vusbd::add_device(DeviceConfig dc) {
  if (auto r = create_device(dc); !r) return r;
  Dev& d = *devices_.back();
  // A whole server keeps its VMs as the template for what it discovers (create_device parsed
  // the source).
  const bool discovery = device_config(d.name).kind == DeviceConfig::Kind::kUsbipAll;
  for (const auto& vm : discovery ? std::vector<std::string>{} : dc.vms) {
    auto p = dc.ports.find(vm);
    if (auto r = attach(d.name, vm, p == dc.ports.end() ? 0 : p->second); !r)
      spdlog::warn("vusbd: {} not given to {}: {}", d.name, vm, r.error().message);
  }
  if (auto r = start_device(d); !r) {
    spdlog::error("vusbd: device {}: {}", d.name, r.error().message);
    (void)remove_device(d.name);
    return r;
  }
  save();
  return {};
}

usb::Result<void> Vusbd::create_device(DeviceConfig dc, const std::string& parent) {
  if (find_device(dc.name))
    return usb::Error::make(usb::Error::Code::kBusy, "device '" + dc.name + "' exists");
  if (auto r = parse_source(dc.source, dc); !r) return r;
  {
    VusbdConfig probe = config_;
    probe.devices.push_back(dc);
    if (auto r = validate(probe); !r) return r;
  }
  auto dev = std::make_unique<Dev>();
  Dev& d = *dev;
  d.name = dc.name;
  d.parent = parent;
  d.id = addresses_.add_device(dc.name);
  d.shared = std::make_unique<SharedDevice>(dc.name, mode_of(dc.mode), usb::net::asio_timer(io_),
                                            std::chrono::milliseconds(200),
                                            std::chrono::milliseconds(dc.slice_ms));
  d.shared->set_bandwidth(&bandwidth_, bus_of(dc));
  d.shared->on_hold_change([this, &d](DeviceView& view, bool held) {
    emit({{"event", held ? "imported" : "released"},
          {"device", d.name},
          {"vm", view.vm()},
          {"busid", view.location().busid}});
  });
  if (dc.kind != DeviceConfig::Kind::kUsbipAll) {  // a discovery keeps its VMs as a template
    dc.vms.clear();
    dc.ports.clear();
  }
  emit({{"event", "device-added"}, {"device", d.name}, {"source", dc.source}, {"mode", dc.mode}});
  (parent.empty() ? config_.devices : discovered_).push_back(std::move(dc));
  devices_.push_back(std::move(dev));
  return {};
}

usb::Result<void> Vusbd::remove_device(const std::string& name) {
  return remove(std::string(name), /*by_discovery=*/false);
}

usb::Result<void> Vusbd::remove(const std::string name, bool by_discovery) {
  // `name` is a copy: the caller's string may belong to the Dev destroyed below.
  Dev* d = find_device(name);
  if (!d) return not_found("no device '" + name + "'");
  for (const auto& [busid, child] : std::map<std::string, std::string>(d->children))
    if (!child.empty()) (void)remove(child, /*by_discovery=*/true);
  for (const auto& vm : std::vector<std::string>(d->vms)) (void)detach(name, vm);
  d->discovery.reset();
  if (!d->parent.empty())
    if (Dev* p = find_device(d->parent))
      for (auto& [busid, child] : p->children)
        // Removed by hand: the discovery remembers not to offer it again while it is listed.
        if (child == name && !by_discovery) child.clear();
  // Withdrawn everywhere: now the backend goes (in-flight URBs complete with kNoDevice while the
  // views still exist), then the views.
  d->shared->set_backend(nullptr);
  d->source.reset();
  addresses_.remove_device(d->id);
  std::erase_if(config_.devices, [&](const DeviceConfig& c) { return c.name == name; });
  std::erase_if(discovered_, [&](const DeviceConfig& c) { return c.name == name; });
  std::erase_if(devices_, [&](const auto& p) { return p.get() == d; });
  spdlog::info("vusbd: device {} removed", name);
  emit({{"event", "device-removed"}, {"device", name}});
  save();
  return {};
}

usb::Result<VmAddress> Vusbd::attach(const std::string& device, const std::string& vm_name,
                                     uint32_t port) {
  Dev* d = find_device(device);
  if (!d) return not_found("no device '" + device + "'");
  Vm* vm = find_vm(vm_name);
  if (!vm) return not_found("no vm '" + vm_name + "'");
  if (device_config(device).kind == DeviceConfig::Kind::kUsbipAll)
    return usb::Error::make(usb::Error::Code::kInvalidArgument,
                            "'" + device + "' is a whole server (" + device_config(device).source +
                                "); attach its devices (" + device +
                                "-BUSID) or list the vm in "
                                "its vms");
  const bool already = std::ranges::find(d->vms, vm_name) != d->vms.end();
  if (already) {
    auto addr = addresses_.address(vm_name, d->id);
    if (port && addr && addr->port != port)
      return usb::Error::make(usb::Error::Code::kBusy, "'" + device + "' is already at " +
                                                           addr->busid + " in vm '" + vm_name +
                                                           "'; detach it first");
    return *addr;
  }
  auto addr = give(*d, *vm, port);
  if (!addr) return addr;
  emit({{"event", "attached"},
        {"device", device},
        {"vm", vm_name},
        {"busid", addr->busid},
        {"devid", addr->devid()}});
  save();
  return addr;
}

usb::Result<VmAddress> Vusbd::give(Dev& d, Vm& vm, uint32_t port) {
  auto addr = addresses_.assign(vm.config.name, d.id, port);
  if (!addr) return addr;
  d.vms.push_back(vm.config.name);
  DeviceConfig& dc = device_config(d.name);
  dc.vms.push_back(vm.config.name);
  dc.ports[vm.config.name] = addr->port;
  // The view may exist from an earlier attach, at another address: it gets this one.
  d.shared->view(vm.config.name, {})
      .set_location(usb::DeviceLocation{addr->busnum, addr->devnum, addr->busid,
                                        "/vusbd/" + vm.config.name + "/" + d.name});
  d.shared->set_weight(vm.config.name, vm.config.weight);
  spdlog::info("vusbd: {} given to vm {} at {} (devid {:#x}, global id {})", d.name, vm.config.name,
               addr->busid, addr->devid(), d.id);
  if (d.shared->backend()) offer(d, vm);
  return addr;
}

usb::Result<void> Vusbd::detach(const std::string& device, const std::string& vm_name) {
  Dev* d = find_device(device);
  if (!d) return not_found("no device '" + device + "'");
  Vm* vm = find_vm(vm_name);
  if (!vm) return not_found("no vm '" + vm_name + "'");
  if (std::ranges::find(d->vms, vm_name) == d->vms.end())
    return not_found("'" + device + "' is not given to vm '" + vm_name + "'");
  const auto addr = addresses_.address(vm_name, d->id);
  withdraw(*d, *vm);
  if (vm->usbredir && vm->usbredir->carries(device)) {
    // Its usbredir channel goes with it (QEMU sees the device unplugged).
    vm->usbredir->remove(device);
    std::erase_if(vm->config.usbredir, [&](const auto& a) { return a.device == device; });
    for (auto& c : config_.vms)
      if (c.name == vm_name) c.usbredir = vm->config.usbredir;
  }
  addresses_.release(vm_name, d->id);
  std::erase(d->vms, vm_name);
  DeviceConfig& dc = device_config(device);
  std::erase(dc.vms, vm_name);
  dc.ports.erase(vm_name);
  spdlog::info("vusbd: {} taken from vm {}", device, vm_name);
  emit({{"event", "detached"},
        {"device", device},
        {"vm", vm_name},
        {"busid", addr ? addr->busid : ""}});
  save();
  return {};
}

usb::Result<void> Vusbd::set_mode(const std::string& device, const std::string& mode) {
  Dev* d = find_device(device);
  if (!d) return not_found("no device '" + device + "'");
  {
    // Validate the new mode on a copy (the device may be a discovered one, not in config_).
    VusbdConfig probe;
    probe.vms = config_.vms;
    DeviceConfig copy = device_config(device);
    copy.mode = mode;
    copy.ports.clear();
    probe.devices = {copy};
    if (auto r = validate(probe); !r) return r;
  }
  device_config(device).mode = mode;
  d->shared->set_mode(mode_of(mode));
  spdlog::info("vusbd: {} is now {}", device, mode);
  emit({{"event", "mode"}, {"device", device}, {"mode", mode}});
  for (const auto& [busid, child] : d->children)
    if (!child.empty()) (void)set_mode(child, mode);
  save();
  return {};
}

usb::Result<void> Vusbd::set_weight(const std::string& vm_name, uint32_t weight) {
  Vm* vm = find_vm(vm_name);
  if (!vm) return not_found("no vm '" + vm_name + "'");
  if (weight < 1 || weight > 1000)
    return usb::Error::make(usb::Error::Code::kInvalidArgument, "weight must be 1..1000");
  vm->config.weight = weight;
  for (auto& c : config_.vms)
    if (c.name == vm_name) c.weight = weight;
  for (auto& d : devices_) d->shared->set_weight(vm_name, weight);
  spdlog::info("vusbd: vm {} has weight {}", vm_name, weight);
  emit({{"event", "weight"}, {"vm", vm_name}, {"weight", weight}});
  save();
  return {};
}

usb::Result<void> Vusbd::add_usbredir(const std::string& vm_name, UsbredirAttachment a) {
  Vm* vm = find_vm(vm_name);
  if (!vm) return not_found("no vm '" + vm_name + "'");
  Dev* d = find_device(a.device);
  if (!d || std::ranges::find(d->vms, vm_name) == d->vms.end())
    return not_found("vm '" + vm_name + "' has no device '" + a.device + "' (attach it first)");
  if (vm->usbredir && vm->usbredir->carries(a.device))
    return usb::Error::make(usb::Error::Code::kBusy,
                            "vm '" + vm_name + "' has a usbredir channel for " + a.device);
  usb::Result<void> result;
  // The device leaves the VM's other adapter and comes to its usbredir channel.
  rearrange(*vm, [&] {
    if (!vm->usbredir) {
      auto redir = std::make_unique<UsbredirVmAdapter>(io_, vm_name,
                                                       std::vector<UsbredirAttachment>{});
      if (started_)
        if (auto r = redir->start(); !r) {
          result = r;
          return;
        }
      vm->usbredir = redir.get();
      vm->adapters.push_back(std::move(redir));
    }
    result = vm->usbredir->add(a);
  });
  if (!result) return result;
  vm->config.usbredir.push_back(a);
  for (auto& c : config_.vms)
    if (c.name == vm_name) c.usbredir = vm->config.usbredir;
  spdlog::info("vusbd: vm {}: {} goes through usbredir ({} {})", vm_name, a.device,
               a.connect ? "to" : "on", a.endpoint.to_string());
  emit({{"event", "usbredir"}, {"vm", vm_name}, {"device", a.device},
        {a.connect ? "connect" : "listen", a.endpoint.to_string()}});
  save();
  return {};
}

usb::Result<void> Vusbd::remove_usbredir(const std::string& vm_name, const std::string& device) {
  Vm* vm = find_vm(vm_name);
  if (!vm) return not_found("no vm '" + vm_name + "'");
  if (!vm->usbredir || !vm->usbredir->carries(device))
    return not_found("vm '" + vm_name + "' has no usbredir channel for '" + device + "'");
  // The device goes back to the VM's USB/IP port (or its controller function).
  rearrange(*vm, [&] { vm->usbredir->remove(device); });
  std::erase_if(vm->config.usbredir, [&](const auto& a) { return a.device == device; });
  for (auto& c : config_.vms)
    if (c.name == vm_name) c.usbredir = vm->config.usbredir;
  emit({{"event", "usbredir-removed"}, {"vm", vm_name}, {"device", device}});
  save();
  return {};
}

// ------------------------------------------------------------------ bandwidth reservations

namespace {
// Bus time as the ledgers count it: ns shown in µs, or bytes for SuperSpeed.
std::string bus_time(uint32_t amount, bool bytes) {
  return bytes ? fmt::format("{} B", amount) : fmt::format("{:.1f} us", amount / 1000.0);
}
}  // namespace

devices::ReservationList Vusbd::reservations_for(const Vm& vm) const {
  // The buses this VM has devices on, and what the others hold there.
  std::set<std::string> buses;
  for (const auto& d : devices_)
    if (std::ranges::find(d->vms, vm.config.name) != d->vms.end()) buses.insert(d->shared->bus());
  devices::ReservationList list;
  for (const auto* h : bandwidth_.holdings()) {
    if (!buses.contains(h->bus) || h->vms.contains(vm.config.name)) continue;
    std::string who;
    for (const auto& v : h->vms) who += (who.empty() ? "" : "+") + v;
    const bool bytes = h->speed == usb::Speed::kSuper || h->speed == usb::Speed::kSuperPlus;
    list.entries.push_back(
        {fmt::format("{}: {} if {} alt {}, {} per {}frame", who, h->device, h->interface,
                     h->alternate, bus_time(h->peak(), bytes),
                     h->speed == usb::Speed::kFull || h->speed == usb::Speed::kLow ? "" : "micro"),
         h->endpoints, h->speed});
  }
  for (const auto& b : bandwidth_.buses()) {
    if (!buses.contains(b.bus)) continue;
    const auto* l = b.ledger;
    const bool bytes = std::string_view(l->unit()) == "bytes";
    list.summary += fmt::format("{}{}: {} of {} free", list.summary.empty() ? "" : "; ", b.label,
                                bus_time(l->headroom(), bytes), bus_time(l->budget(), bytes));
  }
  if (list.summary.empty()) list.summary = "no periodic bandwidth reserved";
  return list;
}

void Vusbd::refresh_reservation_devices() {
  if (!started_) return;
  for (auto& vm : vms_) {
    if (!vm->config.bandwidth_device) continue;
    auto list = reservations_for(*vm);
    // Only the others' reservations re-plug it (the free-time summary follows the VM's own
    // streams too; it is brought up to date with the next change of the others').
    if (vm->reservations && vm->reservations->list().entries == list.entries) continue;
    // New descriptors mean a new enumeration: the VM sees the old device unplugged.
    unplace_reservations(*vm);
    const auto id =
        addresses_.resolve_busid(vm->config.name, "1-" + std::to_string(kReservationPort));
    const auto addr = id ? addresses_.address(vm->config.name, *id) : std::nullopt;
    if (!addr) continue;
    vm->reservations = std::make_unique<devices::ReservationDevice>(
        list, usb::DeviceLocation{addr->busnum, addr->devnum, addr->busid,
                                  "/vusbd/" + vm->config.name + "/bandwidth"});
    vm->reservations->set_configuration(1, [](usb::Status) {});
    place_reservations(*vm);
    spdlog::info("vusbd: vm {}: bandwidth device at {}: {} reservation(s) of other VMs; {}",
                 vm->config.name, addr->busid, list.entries.size(), list.summary);
  }
}

// ------------------------------------------------------------------ backends and exports

std::unique_ptr<DeviceSource> Vusbd::make_source(Dev& d) {
  const DeviceConfig& dc = device_config(d.name);
  auto on_change = [this, &d](usb::Device* backend) { on_backend(d, backend); };
  switch (dc.kind) {
    case DeviceConfig::Kind::kUsbip:
      return std::make_unique<RemoteBackend>(io_, dc.server, dc.busid, tls_client_, on_change);
    case DeviceConfig::Kind::kUsbredir:
      return std::make_unique<UsbredirBackend>(io_, dc.server, on_change);
    case DeviceConfig::Kind::kLibusb:
      return std::make_unique<LibusbBackend>(io_, dc.libusb, on_change);
    case DeviceConfig::Kind::kEmulated:
      return std::make_unique<EmulatedSource>(
          io_,
          devices::EmulatedSpec{.type = dc.emulated, .options = dc.emulated_options, .location = {}},
          on_change);
    case DeviceConfig::Kind::kProcess: {
      devices::DeviceProcess::Options options;
      options.device = {.type = dc.emulated, .options = dc.emulated_options, .location = {}};
      options.program = devices::DeviceProcess::default_devhost_path();
      return std::make_unique<ProcessSource>(io_, std::move(options), on_change);
    }
    case DeviceConfig::Kind::kUsbipAll:
      break;
  }
  return nullptr;
}

usb::Result<void> Vusbd::start_device(Dev& d) {
  const DeviceConfig& dc = device_config(d.name);
  if (dc.kind == DeviceConfig::Kind::kUsbipAll) {
    d.discovery = std::make_unique<RemoteDiscovery>(
        io_, dc.server, std::chrono::seconds(2),
        [this, &d](const auto& list) { on_discovered(d, list); }, tls_client_);
    d.discovery->start();
    return {};
  }
  d.source = make_source(d);
  return d.source->start();
}

void Vusbd::on_backend(Dev& d, usb::Device* backend) {
  if (!backend) {
    // Withdraw first (importing VMs get their in-flight URBs back and a disconnect), then drop.
    for (const auto& vm : d.vms) withdraw(d, *find_vm(vm));
    d.shared->set_backend(nullptr);
    emit({{"event", "disconnected"}, {"device", d.name}});
    return;
  }
  d.shared->set_backend(backend);
  emit({{"event", "connected"},
        {"device", d.name},
        {"vendor_id", backend->descriptors().device.vendor_id},
        {"product_id", backend->descriptors().device.product_id}});
  for (const auto& vm : d.vms) offer(d, *find_vm(vm));
  check_ready();
}

void Vusbd::on_discovered(Dev& parent, const std::vector<usb::wire::usbip::DevlistEntry>& list) {
  const DeviceConfig template_config = device_config(parent.name);
  std::set<std::string> listed;
  for (const auto& e : list) {
    const std::string busid = e.device.busid;
    // A bus id is "B-P[.P...]" (at most 31 bytes on the wire): anything else is not taken (it
    // would end up in names, sources and log lines).
    const bool good = !busid.empty() && busid.size() < 32 &&
                      busid.find_first_not_of("0123456789.-") == std::string::npos;
    if (!good) {
      if (!parent.children.contains(busid))
        spdlog::warn("vusbd: {} lists a device with a malformed bus id; ignoring it",
                     template_config.source);
      parent.children[busid] = {};
    }
    listed.insert(busid);
    if (parent.children.contains(busid)) continue;
    DeviceConfig child;
    child.name = parent.name + "-" + busid;
    for (char& c : child.name)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
    child.source = usb::usbip::url(template_config.server, busid);
    child.mode = template_config.mode;
    child.slice_ms = template_config.slice_ms;
    child.bus = template_config.bus;
    // A device vusbd already imports under another name stays with it (one importer each).
    const DeviceConfig* same = nullptr;
    for (const auto& d : devices_)
      if (device_config(d->name).source == child.source) same = &device_config(d->name);
    if (same) {
      spdlog::info("vusbd: {} lists {}, already served as {}", template_config.source, busid,
                   same->name);
      parent.children[busid] = {};
      continue;
    }
    if (auto r = create_device(child, parent.name); !r) {
      spdlog::warn("vusbd: {}: cannot take {} ({:04x}:{:04x}): {}", parent.name, busid,
                   e.device.id_vendor, e.device.id_product, r.error().message);
      parent.children[busid] = {};  // do not retry every listing
      continue;
    }
    parent.children[busid] = child.name;
    spdlog::info("vusbd: {} lists {} ({:04x}:{:04x}, class {:02x}); offering it as {}",
                 template_config.source, busid, e.device.id_vendor, e.device.id_product,
                 e.device.device_class, child.name);
    emit({{"event", "discovered"},
          {"device", child.name},
          {"parent", parent.name},
          {"busid", busid}});
    for (const auto& vm : template_config.vms)
      if (auto r = attach(child.name, vm); !r)
        spdlog::warn("vusbd: {} not given to {}: {}", child.name, vm, r.error().message);
    if (Dev* c = find_device(child.name))
      if (auto r = start_device(*c); !r)
        spdlog::warn("vusbd: {}: {}", child.name, r.error().message);
  }
  for (const auto& [busid, name] : std::map<std::string, std::string>(parent.children)) {
    if (listed.contains(busid)) continue;
    spdlog::info("vusbd: {} no longer lists {}; removing {}", template_config.source, busid,
                 name.empty() ? "nothing" : name);
    if (!name.empty()) (void)remove(name, /*by_discovery=*/true);
    parent.children.erase(busid);
  }
  check_ready();
}

VmAdapter& Vusbd::Vm::adapter_for(const std::string& device) {
  for (auto it = adapters.rbegin(); it != adapters.rend(); ++it)
    if ((*it)->carries(device)) return **it;
  return *adapters.front();  // its USB/IP server carries every device
}

void Vusbd::offer(Dev& d, Vm& vm) {
  DeviceView& view = *d.shared->find_view(vm.config.name);  // give() made it
  VmAdapter& adapter = vm.adapter_for(d.name);
  if (auto r = adapter.offer(d.name, view); !r)
    spdlog::warn("vusbd: cannot offer {} to {} ({}): {}", d.name, vm.config.name, adapter.kind(),
                 r.error().message);
  else
    spdlog::info("vusbd: {} offered to vm {} as {} ({} mode, {})", d.name, vm.config.name, *r,
                 device_config(d.name).mode, adapter.kind());
}

void Vusbd::withdraw(Dev& d, Vm& vm) {
  if (DeviceView* view = d.shared->find_view(vm.config.name))
    for (auto& adapter : vm.adapters) adapter->withdraw(*view);
}

void Vusbd::place_reservations(Vm& vm) {
  if (vm.reservations) vm.adapters.back()->place_reservations(*vm.reservations);
}

void Vusbd::unplace_reservations(Vm& vm) {
  if (!vm.reservations) return;
  for (auto& adapter : vm.adapters) adapter->unplace_reservations(*vm.reservations);
}

void Vusbd::rearrange(Vm& vm, const std::function<void()>& change) {
  auto given = [&](const Dev& d) {
    return std::ranges::find(d.vms, vm.config.name) != d.vms.end();
  };
  for (auto& d : devices_)
    if (given(*d)) withdraw(*d, vm);
  unplace_reservations(vm);
  change();
  if (started_)
    for (auto& d : devices_)
      if (given(*d) && d->shared->backend()) offer(*d, vm);
  place_reservations(vm);
}

hc::Controller& Vusbd::controller() {
  if (!controller_)
    controller_ = std::make_unique<hc::Controller>(
        [this](std::function<void()> f) { boost::asio::post(io_, std::move(f)); },
        [] { return std::chrono::steady_clock::now(); }, hc::Controller::Options{},
        [this](std::chrono::nanoseconds delay, std::function<void()> f) {
          auto timer = std::make_shared<boost::asio::steady_timer>(io_, delay);
          timer->async_wait([timer, f = std::move(f)](const boost::system::error_code& ec) {
            if (!ec) f();
          });
        });
  return *controller_;
}

usb::Result<hc::Controller::VmId> Vusbd::attach_controller(const std::string& vm_name,
                                                           hc::GuestMemory& memory,
                                                           hc::IrqLine& irq,
                                                           hc::Controller::Model model) {
  Vm* vm = find_vm(vm_name);
  if (!vm) return not_found("no vm '" + vm_name + "'");
  if (vm->hc) return usb::Error::make(usb::Error::Code::kBusy, "vm '" + vm_name + "' has one");
  // Its devices leave its USB/IP export and come to its controller function's ports.
  rearrange(*vm, [&] {
    auto adapter = std::make_unique<ControllerPortAdapter>(controller(), vm_name, memory, irq,
                                                           vm->config.weight, model);
    vm->hc = adapter.get();
    vm->adapters.push_back(std::move(adapter));
  });
  return vm->hc->id();
}

void Vusbd::detach_controller(const std::string& vm_name) {
  Vm* vm = find_vm(vm_name);
  if (!vm || !vm->hc) return;
  // Back to USB/IP.
  rearrange(*vm, [&] {
    std::erase_if(vm->adapters, [&](const auto& a) { return a.get() == vm->hc; });
    vm->hc = nullptr;
  });
}

uint32_t Vusbd::controller_port(const std::string& vm_name, const std::string& device) const {
  for (const auto& vm : vms_) {
    if (vm->config.name != vm_name || !vm->hc) continue;
    if (device == "bandwidth") return vm->hc->reservation_port();
    const Dev* d = find_device(device);
    return d ? vm->hc->port_of(d->shared->find_view(vm_name)) : 0;
  }
  return 0;
}

void Vusbd::check_ready() {
  if (ready_ || !started_) return;
  for (auto& dev : devices_)
    if (dev->discovery ? !dev->discovery->listed() : !dev->shared->backend()) return;
  ready_ = true;
  spdlog::info("vusbd: ready");
  if (on_ready_) on_ready_();
}

void Vusbd::stop() {
  if (!started_) return;
  started_ = false;
  for (auto& vm : vms_) {
    for (auto& adapter : vm->adapters) adapter->stop();
    unplace_reservations(*vm);
    vm->reservations.reset();
  }
  for (auto& dev : devices_) {
    for (const auto& vm : dev->vms) withdraw(*dev, *find_vm(vm));
    dev->shared->set_backend(nullptr);
    dev->discovery.reset();
    dev->source.reset();
  }
}

// ------------------------------------------------------------------ helpers

Vusbd::Dev* Vusbd::find_device(const std::string& name) {
  for (auto& d : devices_)
    if (d->name == name) return d.get();
  return nullptr;
}

const Vusbd::Dev* Vusbd::find_device(const std::string& name) const {
  for (auto& d : devices_)
    if (d->name == name) return d.get();
  return nullptr;
}

Vusbd::Vm* Vusbd::find_vm(const std::string& name) {
  for (auto& v : vms_)
    if (v->config.name == name) return v.get();
  return nullptr;
}

DeviceConfig& Vusbd::device_config(const std::string& name) {
  if (DeviceConfig* c = config_.device(name)) return *c;
  for (auto& c : discovered_)
    if (c.name == name) return c;
  std::abort();  // every Dev has a config
}

const DeviceConfig& Vusbd::device_config(const std::string& name) const {
  return const_cast<Vusbd*>(this)->device_config(name);
}

void Vusbd::emit(nlohmann::json event) {
  if (on_event_) on_event_(event);
}

void Vusbd::save() {
  if (config_path_.empty() || !started_) return;
  if (auto r = save_config(config_, config_path_); !r)
    spdlog::error("vusbd: config not written back: {}", r.error().message);
  else
    spdlog::debug("vusbd: config written to {}", config_path_);
}

usb::Result<nlohmann::json> Vusbd::qemu_snippets(const std::string& vm,
                                                  const std::string& controller) const {
  using Controller = UsbredirVmAdapter::GuestController;
  if (controller != "xhci" && controller != "ehci")
    return usb::Error::make(usb::Error::Code::kInvalidArgument,
                            "controller must be xhci or ehci, not '" + controller + "'");
  for (const auto& v : vms_) {
    if (v->config.name != vm) continue;
    if (!v->usbredir || v->usbredir->empty())
      return not_found("vm '" + vm + "' has no usbredir devices ([[vm]] usbredir = [...])");
    auto j = v->usbredir->qemu_snippets(controller == "ehci" ? Controller::kEhci
                                                              : Controller::kXhci);
    j["vm"] = vm;
    return j;
  }
  return not_found("no vm '" + vm + "'");
}

uint16_t Vusbd::vm_port(const std::string& vm) const {
  for (auto& v : vms_)
    if (v->config.name == vm) return v->usbip->local_port();
  return 0;
}

nlohmann::json Vusbd::devices_json() const {
  auto out = nlohmann::json::array();
  for (const auto& d : devices_) {
    const DeviceConfig& dc = device_config(d->name);
    const usb::Device* be = d->shared->backend();
    nlohmann::json j = {
        {"name", dc.name},    {"source", dc.source},
        {"mode", dc.mode},    {"connected", d->discovery ? d->discovery->listed() : be != nullptr},
        {"global_id", d->id}, {"vms", nlohmann::json::array()}};
    if (!d->parent.empty()) j["parent"] = d->parent;
    if (d->discovery) {
      j["discovers_for"] = dc.vms;
      j["discovered"] = nlohmann::json::array();
      for (const auto& [busid, name] : d->children)
        if (!name.empty()) j["discovered"].push_back(name);
    }
    if (be) {
      j["vendor_id"] = be->descriptors().device.vendor_id;
      j["product_id"] = be->descriptors().device.product_id;
      j["speed"] = usb::to_string(be->speed());
    }
    for (const auto& vm : d->vms) {
      auto addr = addresses_.address(vm, d->id);
      const DeviceView* view = d->shared->find_view(vm);
      j["vms"].push_back({{"vm", vm},
                          {"busid", addr ? addr->busid : ""},
                          {"devid", addr ? addr->devid() : 0},
                          {"imported", view && view->held()}});
    }
    out.push_back(std::move(j));
  }
  return out;
}

nlohmann::json Vusbd::vms_json() const {
  auto out = nlohmann::json::array();
  for (const auto& vm : vms_) {
    nlohmann::json j = {{"name", vm->config.name},
                        {"weight", vm->config.weight},
                        {"adapters", nlohmann::json::array()},
                        {"devices", nlohmann::json::array()}};
    for (const auto& adapter : vm->adapters) {
      j["adapters"].push_back(adapter->kind());
      adapter->describe(j);
    }
    for (const auto& d : devices_) {
      if (std::ranges::find(d->vms, vm->config.name) == d->vms.end()) continue;
      auto addr = addresses_.address(vm->config.name, d->id);
      const DeviceView* view = d->shared->find_view(vm->config.name);
      const bool held = view && view->held();
      j["devices"].push_back({{"device", d->name},
                              {"busid", addr ? addr->busid : ""},
                              {"devid", addr ? addr->devid() : 0},
                              {"connected", d->shared->backend() != nullptr},
                              {"imported", held}});
    }
    out.push_back(std::move(j));
  }
  return out;
}

nlohmann::json Vusbd::stats() const {
  nlohmann::json out;
  // Periodic bandwidth: per bus, and who holds what.
  auto reserved = [this](const std::string& device, const std::string& vm) {
    uint64_t sum = 0;
    for (const auto* h : bandwidth_.holdings())
      if (h->device == device && h->vms.contains(vm)) sum += h->peak();
    return sum;
  };
  out["buses"] = nlohmann::json::object();
  for (const auto& b : bandwidth_.buses()) {
    const auto* l = b.ledger;
    std::vector<uint32_t> slots;
    for (size_t i = 0; i < l->slots(); ++i) slots.push_back(l->load(i));
    out["buses"][b.label] = {{"unit", l->unit()},
                             {"budget", l->budget()},
                             {"free", l->headroom()},
                             {"peak", l->budget() - l->headroom()},
                             {"slots", slots}};
  }
  out["reservations"] = nlohmann::json::array();
  for (const auto* h : bandwidth_.holdings())
    out["reservations"].push_back({{"bus", h->bus},
                                   {"device", h->device},
                                   {"interface", h->interface},
                                   {"alternate", h->alternate},
                                   {"vms", h->vms},
                                   {"peak", h->peak()}});
  out["vms"] = nlohmann::json::object();
  out["devices"] = nlohmann::json::object();
  for (auto& vm : vms_) out["vms"][vm->config.name] = nlohmann::json::object();
  for (auto& dev : devices_) {
    const DeviceConfig& dc = device_config(dev->name);
    out["devices"][dev->name] = {
        {"source", dc.source}, {"mode", dc.mode}, {"connected", dev->shared->backend() != nullptr}};
    out["devices"][dev->name]["bus"] = dev->shared->bus();
    if (dev->source) dev->source->add_stats(out["devices"][dev->name]);
    if (const UvcSharing* uvc = dev->shared->uvc()) {
      out["devices"][dev->name]["camera"] = {{"steered", uvc->steered()},
                                             {"refused", uvc->refused()}};
    }
    if (dc.mode == "timeslice") {
      out["devices"][dev->name]["turn"] = dev->shared->turn_holder();
      out["devices"][dev->name]["switches"] = dev->shared->turn_switches();
      out["devices"][dev->name]["slice_ms"] = dc.slice_ms;
    }
    for (DeviceView* view : dev->shared->views()) {
      if (std::ranges::find(dev->vms, view->vm()) == dev->vms.end()) continue;
      const ViewStats& s = view->stats();
      const auto fan = dev->shared->fanout_stats(*view);
      out["vms"][view->vm()][dev->name] = {
          {"iso_fanout_packets", fan.copied_packets},
          {"iso_fanout_dropped", fan.dropped_packets},
          {"iso_fanout_skipped", fan.skipped_packets},
          {"turns", s.turns},
          {"queued", dev->shared->queued(*view)},
          {"queue_full", s.queue_full},
          {"queue_wait_ms", std::chrono::duration<double, std::milli>(s.queue_wait).count()},
          {"held_ms", std::chrono::duration<double, std::milli>(s.held_time).count()},
          {"busid", view->location().busid},
          {"urbs", s.urbs},
          {"bytes_in", s.bytes_in},
          {"bytes_out", s.bytes_out},
          {"cache_hits", s.cache_hits},
          {"stalls", s.stalls},
          {"errors", s.errors},
          {"refused", s.refused},
          {"reserved", reserved(dev->name, view->vm())},
          {"avg_latency_us",
           s.urbs ? std::chrono::duration<double, std::micro>(s.latency_total).count() /
                        static_cast<double>(s.urbs)
                  : 0.0}};
    }
  }
  return out;
}

}  // namespace vusbd
