// Vusbd: the daemon's registry. Owns every VM's USB/IP server (its own address, its own export
// table = the VM's address space: VM-local bus ids and devids) and every device (its backend and
// the SharedDevice that hands each VM a view). When a backend appears, its views are exported to
// the VMs the config names under their VM-local bus ids; when it goes away they are withdrawn
// (importing VMs see the disconnect) and offered again when it comes back.
// Owned by main; lives on vusbd's loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "usb-stub/export_table.h"
#include "usb-stub/usbip_server.h"
#include "vmm-frontend/remote_backend.h"
#include "vmm-frontend/shared_device.h"
#include "vmm-frontend/vusbd_config.h"

namespace vusbd {

class Vusbd {
 public:
  Vusbd(boost::asio::io_context& io, VusbdConfig config);
  ~Vusbd();

  // Binds every VM's server and starts importing. `on_ready` runs once when every VM listens
  // and every device has a backend.
  usb::Result<void> start(std::function<void()> on_ready = {});
  void stop();

  // {"vms": {VM: {DEVICE: {urbs, bytes_in, bytes_out, cache_hits, errors, refused,
  //  avg_latency_us}}}, "devices": {DEVICE: {source, mode, connected}}}
  nlohmann::json stats() const;
  uint16_t vm_port(const std::string& vm) const;

 private:
  struct Vm {
    VmConfig config;
    std::unique_ptr<stub::ExportTable> table;
    std::unique_ptr<stub::UsbipServer> server;
  };
  struct Exported {
    Vm* vm;
    DeviceView* view;
  };
  struct Dev {
    DeviceConfig config;
    std::unique_ptr<SharedDevice> shared;
    std::unique_ptr<RemoteBackend> remote;
    std::unique_ptr<usb::Device> local;
    std::vector<Exported> exports;
  };

  void on_backend(Dev& dev, usb::Device* backend);
  void check_ready();

  boost::asio::io_context& io_;
  VusbdConfig config_;
  std::vector<std::unique_ptr<Vm>> vms_;
  std::vector<std::unique_ptr<Dev>> devices_;
  std::function<void()> on_ready_;
  bool ready_ = false;
};

}  // namespace vusbd
