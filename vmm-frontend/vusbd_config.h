// VusbdConfig: vusbd's TOML configuration — the control API's address, the VMs (each with its
// own USB/IP listen address) and the devices (a source, a sharing mode, the VMs that may use it
// and the VM-local port each of them sees it on). vusbd writes it back whenever the control API
// changes something, so a restart restores every VM's devices, addresses and modes.
//
//   [control]   listen = "127.0.0.1:3250"   (or "unix:PATH": local root and vusbd's user are
//                                            admin there; or "tls:HOST:PORT", [tls] below)
//               anonymous = "read"   (a TCP caller without a token may read; "none": nothing)
//   [[control.token]]  file = "/etc/vusbd/ci.token"  role = "admin" | "read" | "vm"
//                      vm = "vm1" (role vm: sees only that VM)   name = "ci" (for logs)
//               (api_access.h; vusbctl --token-file FILE or $VUSBD_TOKEN)
//   [tls]       ca = "ca.crt"  cert = "vusbd.crt"  key = "vusbd.key"   (its certificate both as a
//               server — tls: VM ports — and as a client — usbips:// sources)
//               psk = "psk.txt"  psk_identity = "laptop"  (or a PSK, e.g. for a phone's stub)
//               server_name = "*"  (what a server's certificate must name; default: the host
//                                   dialled; "*": the CA's signature only)
//   [[vm]]      name = "vm1"   listen = "127.0.0.1:41001" (or "tls:0.0.0.0:41001", "unix:PATH")
//               allow = ["cn:vm1", "10.0.2.15", "uid:1000"]  (who may connect to its ports: its
//                                   TLS identity, its address, its local user; default: anyone
//                                   who reaches them)
//               weight = 1 (share of a busy device)
//               bandwidth_device = false   (true: a device at bus id 1-126 whose iso/interrupt
//                                           endpoints show what other VMs reserve on its buses)
//               camera = "emulated"  (give it a webcam: the device "camera", an emulated UVC
//                                     camera in its own process, shared by every VM that asks;
//                                     or the name of a configured device)
//               usbredir = [{ device = "gz", listen = "127.0.0.1:4000" },
//                           { device = "cam", connect = "unix:/run/qemu/vm1-cam.sock" }]
//                 (QEMU's -device usb-redir: vusbd listens for QEMU's chardev, or connects to a
//                 QEMU that listens; the device must be given to the VM)
//   [[device]]  name = "gz"
//               source = "usbip://HOST:PORT/BUSID" | "usbip://HOST:PORT/*" | "libusb:VID:PID"
//                      | "usbips://HOST:PORT/BUSID" | "usbips://HOST:PORT/*" (over TLS, [tls])
//                      | "usbip+unix:///PATH/BUSID" | "usbip+unix:///PATH/*" (a UNIX socket)
//                      | "usbredir://HOST:PORT" | "usbredir+unix:///PATH"
//                      | "libusb:BUSID" | "emulated:TYPE[?key=value,...]"
//                      | "process:TYPE[?key=value,...]"
//               (usbredir: a usbredir host's one device, e.g. `usbredirect --device VID:PID
//               --as HOST:PORT`; vusbd connects to it as QEMU's usb-redir would)
//               (TYPE: gadget-zero or uvc-camera; emulated: inside vusbd; process: in a
//               seccomp-restricted process of its own that vusbd restarts when it dies)
//               (gadget-zero options: see devices::parse_gadget_zero_options, e.g.
//               "emulated:gadget-zero?isoc_mult=1,isoc_interval=1,bulk_rate=1000000")
//               ("/*": every device that server exports, devices behind hubs included, each as
//               a device named NAME-BUSID with this entry's mode and VMs, following the list)
//               mode = "shared" | "exclusive" | "timeslice"     vms = ["vm1", "vm2"]
//               slice_ms = 100                    (timeslice: the length of a VM's turn)
//               ports = { vm1 = 1, vm2 = 3 }      (optional; written back by vusbd)
//               bus = "lab"        (optional: the bus whose periodic bandwidth it shares; by
//                                   default a server's bus number for usbip sources, the host
//                                   for usbredir ones, "libusb" and "emulated" for the others)
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "devices/libusb/device_filter.h"
#include "usb/core/error.h"
#include "usb/net/address.h"
#include "usb/net/endpoint.h"
#include "usb/net/tls.h"
#include "vmm-frontend/adapters/usbredir_attachment.h"
#include "vmm-frontend/api_access.h"

namespace vusbd {

struct VmConfig {
  std::string name;
  usb::net::Endpoint listen;  // HOST:PORT, or unix:PATH for a local VMM
  uint32_t weight = 1;            // its share of a busy shared device (fair queue weight, 1..1000)
  bool bandwidth_device = false;  // a ReservationDevice on its bus (bus id 1-126)
  std::string camera{};           // "emulated" or a device name (see above); "" = none
  std::vector<UsbredirAttachment> usbredir{};  // devices it reaches through QEMU's usb-redir
  std::vector<std::string> allow{};  // peer rules for its ports (usb/net/peer_rule.h)
};

struct DeviceConfig {
  std::string name;
  std::string source;  // as written
  enum class Kind { kUsbip, kUsbipAll, kUsbredir, kLibusb, kEmulated, kProcess } kind = Kind::kUsbip;
  usb::net::Endpoint server;       // kUsbip, kUsbipAll, kUsbredir: TCP or a UNIX socket
  std::string busid;               // kUsbip ("*" for kUsbipAll)
  devices::DeviceFilter libusb{};  // kLibusb
  std::string emulated;            // kEmulated, kProcess: "gadget-zero" or "uvc-camera"
  std::string emulated_options;    // kEmulated, kProcess: what follows '?' (validated)
  std::string bus;                 // as written ("" = derived, see bus_of)
  std::string mode = "shared";
  uint32_t slice_ms = 100;  // timeslice mode: one VM's turn
  std::vector<std::string> vms;
  std::map<std::string, uint32_t> ports;  // VM → port on its virtual bus (bus id "1-PORT")
};

struct VusbdConfig {
  usb::net::Endpoint control{"127.0.0.1", 3250};  // or unix:PATH (owner and root only)
  std::vector<ApiTokenConfig> control_tokens;      // [[control.token]]
  std::string control_anonymous = "read";          // a TCP caller without a token: read or none
  usb::net::TlsConfig tls;
  std::vector<VmConfig> vms;
  std::vector<DeviceConfig> devices;

  DeviceConfig* device(const std::string& name);
  const DeviceConfig* device(const std::string& name) const;
  const VmConfig* vm(const std::string& name) const;
};

// The bus whose periodic bandwidth the device shares (see `bus` above).
std::string bus_of(const DeviceConfig& d);
// Parses a source (see above) into `d` (d.source included).
usb::Result<void> parse_source(const std::string& source, DeviceConfig& d);
usb::Result<VusbdConfig> load_config(const std::string& path);
// Names unique and non-empty, every device's VMs exist, modes known, ports in range and unique
// per VM.
usb::Result<void> validate(const VusbdConfig& config);
// Every [[vm]] usbredir attachment names a device the file defines and gives to that VM. Checked
// on the whole file only: vusbd creates its devices and gives them to VMs one at a time.
usb::Result<void> validate_usbredir_devices(const VusbdConfig& config);
// The config as TOML that load_config reads back to the same config.
std::string to_toml(const VusbdConfig& config);
// Writes to_toml(config) to `path` atomically (a temporary file renamed over it).
usb::Result<void> save_config(const VusbdConfig& config, const std::string& path);

}  // namespace vusbd
