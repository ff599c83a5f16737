// Vusbd: the daemon's registry. Owns every VM's adapters (how the VM reaches its devices: its
// USB/IP server, its register set on vusbd's controller — vmm-frontend/adapters/), every device
// (its backend and the SharedDevice that hands each VM a view) and the AddressMap that gives each
// VM its own bus ids and devids. When a backend appears, its views are offered to the VMs it was
// given, each through the VM's newest adapter that carries it; when it goes away they are
// withdrawn (importing VMs see the disconnect) and offered again when it comes back.
//
// The control operations (add/remove a device, attach/detach it to a VM, change its mode) change
// the running daemon, emit an event to the subscriber (the control API's WebSocket stream) and
// write the config back to its file, so a restart restores the same state.
// A source "usbip://HOST:PORT/*" is a discovery: every device that server lists (devices behind
// hubs included) becomes a device of its own, NAME-BUSID, with the entry's mode and VMs; devices
// leave when the server stops listing them. Discovered devices are not written to the config
// (the entry is), so a restart discovers them again.
// Owned by main; lives on vusbd's loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "devices/emulated/reservation_device.h"
#include "host-controller/controller.h"
#include "schedulers/bus_reservations.h"
#include "vmm-frontend/adapters/controller_port_adapter.h"
#include "vmm-frontend/adapters/usbip_vm_adapter.h"
#include "vmm-frontend/adapters/usbredir_vm_adapter.h"
#include "vmm-frontend/adapters/vm_adapter.h"
#include "vmm-frontend/address_map.h"
#include "vmm-frontend/backends/device_source.h"
#include "vmm-frontend/backends/remote_discovery.h"
#include "vmm-frontend/sharing/shared_device.h"
#include "vmm-frontend/vusbd_config.h"

namespace vusbd {

class Vusbd {
 public:
  // Where a VM's bandwidth device sits on its bus (bus id "1-126").
  static constexpr uint32_t kReservationPort = AddressMap::kMaxPort;

  // `config_path`: where changes are written back; empty: nowhere (tests).
  Vusbd(boost::asio::io_context& io, VusbdConfig config, std::string config_path = {});
  ~Vusbd();

  // Binds every VM's server and starts importing. `on_ready` runs once when every VM listens
  // and every device has a backend.
  usb::Result<void> start(std::function<void()> on_ready = {});
  void stop();

  // Control operations. Errors: kNotFound (no such device / vm), kInvalidArgument (bad name,
  // source or mode), kBusy (name taken, port taken, bus full).
  usb::Result<void> add_device(DeviceConfig device);
  usb::Result<void> remove_device(const std::string& device);
  usb::Result<VmAddress> attach(const std::string& device, const std::string& vm,
                                uint32_t port = 0);
  usb::Result<void> detach(const std::string& device, const std::string& vm);
  usb::Result<void> set_mode(const std::string& device, const std::string& mode);
  // A VM's share of every busy shared device it uses (1..1000), at once.
  usb::Result<void> set_weight(const std::string& vm, uint32_t weight);
  // A device the VM has (attach) reaches it through QEMU's usb-redir from now on (vusbd listens
  // or dials `attachment.endpoint`), or no longer (back on the VM's USB/IP port). Written back
  // to the config. kNotFound: no such vm / device not given to it; kBusy: it has one already.
  usb::Result<void> add_usbredir(const std::string& vm, UsbredirAttachment attachment);
  usb::Result<void> remove_usbredir(const std::string& vm, const std::string& device);

  // Events, as JSON objects {"event": ..., ...}: device-added, device-removed, connected,
  // disconnected, attached, detached, mode, imported, released. One subscriber.
  using EventSink = std::function<void(const nlohmann::json&)>;
  void on_event(EventSink sink) { on_event_ = std::move(sink); }

  // [{name, source, mode, connected, global_id, vendor_id, product_id, speed,
  //   vms: [{vm, busid, devid, imported}]}]
  nlohmann::json devices_json() const;
  // [{name, listen, port, devices: [{device, busid, devid, imported}]}]
  nlohmann::json vms_json() const;
  // {"vms": {VM: {DEVICE: {busid, urbs, bytes_in, bytes_out, cache_hits, stalls, errors,
  //  refused, avg_latency_us, queued, queue_wait_ms, reserved, ...}}},
  //  "devices": {DEVICE: {source, mode, connected, bus}},
  //  "buses": {BUS: {unit, budget, peak, free, slots}},
  //  "reservations": [{bus, device, interface, alternate, vms, peak, unit}]}
  nlohmann::json stats() const;
  uint16_t vm_port(const std::string& vm) const;
  // QEMU command-line arguments and libvirt XML for `vm`'s usbredir devices (kNotFound: no such
  // vm, or it has none).
  // `controller`: "xhci" (default, every speed) or "ehci" (high-speed devices only).
  usb::Result<nlohmann::json> qemu_snippets(const std::string& vm,
                                            const std::string& controller = "xhci") const;

  // The register-level path. A VMM that embeds vusbd's shared host controller hands a VM's guest
  // memory and IRQ line over: the VM gets its own xHCI function on vusbd's controller
  // (hc::Controller: its own registers, slots and addresses, its rings served through the
  // controller's fair queue), and every device vusbd gives that VM — by its AddressMap — goes to
  // one of the function's root-hub ports instead of the VM's USB/IP export: the VM's view of the
  // shared device, with the same sharing, fair queueing and periodic bandwidth admission (xHCI
  // Configure Endpoint answers Bandwidth Error where USB/IP gets -ENOSPC). The memory and IRQ
  // line must outlive detach_controller().
  // `model`: an xHCI or an EHCI function. A VM with `bandwidth_device` finds its reservation
  // device on one of the ports too (re-plugged — a port status change — when it changes).
  usb::Result<hc::Controller::VmId> attach_controller(
      const std::string& vm, hc::GuestMemory& memory, hc::IrqLine& irq,
      hc::Controller::Model model = hc::Controller::Model::kXhci);
  void detach_controller(const std::string& vm);
  hc::Controller& controller();
  // The root-hub port of `device` on `vm`'s function (0: none); "bandwidth" names the VM's
  // reservation device.
  uint32_t controller_port(const std::string& vm, const std::string& device) const;
  const VusbdConfig& config() const { return config_; }
  // The [tls] server context (null without one): tls: VM ports, a tls: control address.
  std::shared_ptr<const usb::net::TlsContext> tls_server() const { return tls_server_; }
  const AddressMap& addresses() const { return addresses_; }

 private:
  struct Vm {
    VmConfig config;
    // How the VM reaches its devices; each device goes to the newest adapter that carries it.
    std::vector<std::unique_ptr<VmAdapter>> adapters;
    UsbipVmAdapter* usbip = nullptr;                           // adapters[0]
    ControllerPortAdapter* hc = nullptr;                       // attach_controller()
    UsbredirVmAdapter* usbredir = nullptr;                     // config.usbredir
    std::unique_ptr<devices::ReservationDevice> reservations;  // config.bandwidth_device

    VmAdapter& adapter_for(const std::string& device);
  };
  struct Dev {
    std::string name;
    AddressMap::GlobalId id = 0;
    std::unique_ptr<SharedDevice> shared;
    std::unique_ptr<DeviceSource> source;        // where the backend comes from
    std::unique_ptr<RemoteDiscovery> discovery;  // kUsbipAll instead: the devices are children
    std::vector<std::string> vms;                     // given to, in config order
    std::string parent;                               // a discovered device: its discovery's name
    std::map<std::string, std::string> children;      // discovery: server bus id -> device name
  };

  // Not yet given to VMs, not started. `parent`: a discovered device (not written back).
  usb::Result<void> create_device(DeviceConfig device, const std::string& parent = {});
  usb::Result<void> start_device(Dev& dev);
  // The source `dev`'s config names (not kUsbipAll).
  std::unique_ptr<DeviceSource> make_source(Dev& dev);
  // Removes a device (and a discovery's devices). `by_discovery`: its server stopped listing it.
  usb::Result<void> remove(const std::string name, bool by_discovery);
  void on_backend(Dev& dev, usb::Device* backend);
  void on_discovered(Dev& parent, const std::vector<usb::wire::usbip::DevlistEntry>& list);
  usb::Result<VmAddress> give(Dev& dev, Vm& vm, uint32_t port);
  // The VM's view of the device to the VM's adapter for it / off every adapter.
  void offer(Dev& dev, Vm& vm);
  void withdraw(Dev& dev, Vm& vm);
  // The VM's reservation device onto its bus (through its newest adapter) / off it.
  void place_reservations(Vm& vm);
  void unplace_reservations(Vm& vm);
  // Changes the VM's adapters (`change`), moving its devices and its reservation device over.
  void rearrange(Vm& vm, const std::function<void()>& change);
  Dev* find_device(const std::string& name);
  const Dev* find_device(const std::string& name) const;
  Vm* find_vm(const std::string& name);
  DeviceConfig& device_config(const std::string& name);
  const DeviceConfig& device_config(const std::string& name) const;
  // Rebuilds the VMs' reservation devices whose content changed (posted after a change).
  void refresh_reservation_devices();
  devices::ReservationList reservations_for(const Vm& vm) const;
  void emit(nlohmann::json event);
  void save();
  void check_ready();

  void make_tls();
  // A VM's listeners: its allow-list as the peer check, the server TLS context for tls: ports.
  usb::net::Listener::Options vm_listener(const VmConfig& vc) const;

  boost::asio::io_context& io_;
  VusbdConfig config_;
  std::vector<DeviceConfig> discovered_;  // configs of discovered devices (not written back)
  std::string config_path_;
  std::shared_ptr<const usb::net::TlsContext> tls_client_;  // usbips:// imports
  std::shared_ptr<const usb::net::TlsContext> tls_server_;  // tls: VM ports
  std::string tls_error_;                                   // why one of them is missing
  AddressMap addresses_;
  sched::BusReservations bandwidth_;
  bool refresh_posted_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::vector<std::unique_ptr<Vm>> vms_;
  std::vector<std::unique_ptr<Dev>> devices_;
  std::unique_ptr<hc::Controller> controller_;  // after devices_: destroyed before their views
  EventSink on_event_;
  std::function<void()> on_ready_;
  bool started_ = false;
  bool ready_ = false;
};

}  // namespace vusbd
