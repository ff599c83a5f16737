#include "vmm-frontend/vusbd_config.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <toml.hpp>

#include "devices/emulated/emulated_factory.h"
#include "devices/emulated/gadget_zero.h"
#include "usb/net/peer_rule.h"
#include "usb/usbip/url.h"
#include "usb/usbredir/url.h"
#include "vmm-frontend/address_map.h"

namespace vusbd {

namespace {

// [tls]'s keys and the TlsConfig fields they name: the loader and the write-back share the list.
template <class Tls>  // usb::net::TlsConfig, const or not
auto tls_keys(Tls& t) {
  return std::array{std::pair{"ca", &t.ca_file},           std::pair{"cert", &t.cert_file},
                    std::pair{"key", &t.key_file},         std::pair{"psk", &t.psk_file},
                    std::pair{"psk_identity", &t.psk_identity},
                    std::pair{"server_name", &t.server_name}};
}

std::unexpected<usb::Error> bad(std::string msg) {
  return usb::Error::make(usb::Error::Code::kInvalidArgument, std::move(msg));
}

// A TOML string literal for any string (toml11 picks the quoting and escapes).
std::string quote(const std::string& s) {
  return toml::format(toml::value(s));
}

// Names appear in logs, URLs and TOML keys: letters, digits, '.', '_', '-', at most 64.
bool good_name(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '_' && ch != '-')
      return false;
  return true;
}

bool known_mode(const std::string& m) {
  return m == "shared" || m == "exclusive" || m == "timeslice";
}

}  // namespace

DeviceConfig* VusbdConfig::device(const std::string& name) {
  for (auto& d : devices)
    if (d.name == name) return &d;
  return nullptr;
}

const DeviceConfig* VusbdConfig::device(const std::string& name) const {
  for (const auto& d : devices)
    if (d.name == name) return &d;
  return nullptr;
}

const VmConfig* VusbdConfig::vm(const std::string& name) const {
  for (const auto& v : vms)
    if (v.name == name) return &v;
  return nullptr;
}

std::string bus_of(const DeviceConfig& d) {
  if (!d.bus.empty()) return d.bus;
  switch (d.kind) {
    case DeviceConfig::Kind::kUsbip:
    case DeviceConfig::Kind::kUsbipAll:
      return usb::usbip::url(d.server, d.busid.substr(0, d.busid.find('-')));
    case DeviceConfig::Kind::kUsbredir:
      return usb::usbredir::url(d.server);
    case DeviceConfig::Kind::kLibusb:
      return "libusb";
    case DeviceConfig::Kind::kEmulated:
    case DeviceConfig::Kind::kProcess:
      return "emulated";
  }
  return "emulated";
}

usb::Result<void> parse_source(const std::string& source, DeviceConfig& d) {
  constexpr std::string_view kLibusb = "libusb:", kEmulated = "emulated:", kProcess = "process:";
  if (&source != &d.source) d.source = source;
  if (usb::usbip::is_url(source)) {
    auto u = usb::usbip::parse_url(source);
    if (!u) return bad("source " + u.error().message);
    d.kind = u->busid == "*" ? DeviceConfig::Kind::kUsbipAll : DeviceConfig::Kind::kUsbip;
    d.server = std::move(u->server);
    d.busid = std::move(u->busid);
    return {};
  }
  if (usb::usbredir::is_url(source)) {
    auto host = usb::usbredir::parse_url(source);
    if (!host) return bad("source " + host.error().message);
    d.kind = DeviceConfig::Kind::kUsbredir;
    d.server = std::move(*host);
    d.busid.clear();
    return {};
  }
  if (source.starts_with(kLibusb)) {
    auto f = devices::parse_device_filter(source.substr(kLibusb.size()));
    if (!f) return bad("source '" + source + "': " + f.error().message);
    if (f->kind == devices::DeviceFilter::Kind::kAll)
      return bad("source '" + source + "': name one device (VID:PID or a bus id), not all");
    d.kind = DeviceConfig::Kind::kLibusb;
    d.libusb = *f;
    return {};
  }
  if (source.starts_with(kEmulated) || source.starts_with(kProcess)) {
    const bool process = source.starts_with(kProcess);
    d.kind = process ? DeviceConfig::Kind::kProcess : DeviceConfig::Kind::kEmulated;
    d.emulated = source.substr(process ? kProcess.size() : kEmulated.size());
    d.emulated_options.clear();
    if (auto q = d.emulated.find('?'); q != std::string::npos) {
      d.emulated_options = d.emulated.substr(q + 1);
      d.emulated.resize(q);
    }
    if (auto o = devices::validate_emulated(d.emulated, d.emulated_options); !o)
      return bad("source '" + source + "': " + o.error().message);
    return {};
  }
  return bad("source '" + source +
             "': expected usbip://HOST:PORT/BUSID, usbip://HOST:PORT/*, usbip+unix://PATH/BUSID, "
             "usbredir://HOST:PORT, usbredir+unix://PATH, libusb:VID:PID, "
             "libusb:BUSID, emulated:TYPE or process:TYPE (TYPE: " +
             std::string(devices::known_emulated_types()) + ")");
}

// `camera = ...` in a VM: the VM is given that device; "emulated" means the device "camera", an
// emulated UVC camera in a process of its own, created for the first VM that asks.
static usb::Result<void> give_cameras(VusbdConfig& c) {
  for (const auto& vm : c.vms) {
    if (vm.camera.empty()) continue;
    const std::string name = vm.camera == "emulated" ? "camera" : vm.camera;
    DeviceConfig* d = c.device(name);
    if (!d && vm.camera == "emulated") {
      DeviceConfig cam;
      cam.name = "camera";
      if (auto r = parse_source("process:uvc-camera", cam); !r) return r;
      c.devices.push_back(std::move(cam));
      d = &c.devices.back();
    }
    if (!d) return bad("vm '" + vm.name + "': camera '" + vm.camera + "' is not a device");
    if (vm.camera == "emulated" && d->kind != DeviceConfig::Kind::kProcess &&
        d->kind != DeviceConfig::Kind::kEmulated) {
      return bad("vm '" + vm.name + "': camera = \"emulated\" needs the device 'camera', which " +
                 "is configured as '" + d->source + "'");
    }
    if (std::find(d->vms.begin(), d->vms.end(), vm.name) == d->vms.end()) d->vms.push_back(vm.name);
  }
  return {};
}

usb::Result<VusbdConfig> load_config(const std::string& path) {
  VusbdConfig c;
  try {
    const toml::value root = toml::parse(path);
    if (root.contains("control")) {
      const auto& control = toml::find(root, "control");
      if (control.contains("listen")) {
        auto hp =
            usb::net::parse_endpoint(toml::find<std::string>(control, "listen"), "127.0.0.1");
        if (!hp) return bad("control: " + hp.error().message);
        c.control = *hp;
      }
      if (control.contains("anonymous"))
        c.control_anonymous = toml::find<std::string>(control, "anonymous");
      if (control.contains("token"))
        for (const auto& t : toml::find<toml::array>(control, "token")) {
          ApiTokenConfig tc;
          tc.file = toml::find<std::string>(t, "file");
          tc.role = toml::find<std::string>(t, "role");
          if (t.contains("vm")) tc.vm = toml::find<std::string>(t, "vm");
          if (t.contains("name")) tc.name = toml::find<std::string>(t, "name");
          c.control_tokens.push_back(std::move(tc));
        }
    }
    if (root.contains("tls")) {
      const auto& t = toml::find(root, "tls");
      for (auto [key, out] : tls_keys(c.tls))
        if (t.contains(key)) *out = toml::find<std::string>(t, key);
    }
    if (root.contains("vm"))
      for (const auto& v : toml::find<toml::array>(root, "vm")) {
        VmConfig vm;
        vm.name = toml::find<std::string>(v, "name");
        auto hp = usb::net::parse_endpoint(toml::find<std::string>(v, "listen"), "127.0.0.1");
        if (!hp) return bad("vm '" + vm.name + "': " + hp.error().message);
        vm.listen = *hp;
        if (v.contains("weight")) {
          const auto w = toml::find<toml::integer>(v, "weight");
          if (w < 1 || w > 1000) return bad("vm '" + vm.name + "': weight must be 1..1000");
          vm.weight = static_cast<uint32_t>(w);
        }
        if (v.contains("bandwidth_device"))
          vm.bandwidth_device = toml::find<bool>(v, "bandwidth_device");
        if (v.contains("camera")) vm.camera = toml::find<std::string>(v, "camera");
        if (v.contains("allow")) vm.allow = toml::find<std::vector<std::string>>(v, "allow");
        if (v.contains("usbredir"))
          for (const auto& u : toml::find<toml::array>(v, "usbredir")) {
            UsbredirAttachment a;
            a.device = toml::find<std::string>(u, "device");
            const bool listen = u.contains("listen"), connect = u.contains("connect");
            if (listen == connect)
              return bad("vm '" + vm.name + "': usbredir for '" + a.device +
                         "' needs one of listen or connect");
            a.connect = connect;
            auto e = usb::net::parse_endpoint(toml::find<std::string>(u, connect ? "connect" : "listen"),
                                              "127.0.0.1");
            if (!e) return bad("vm '" + vm.name + "': usbredir for '" + a.device + "': " +
                               e.error().message);
            a.endpoint = *e;
            vm.usbredir.push_back(a);
          }
        c.vms.push_back(vm);
      }
    if (root.contains("device"))
      for (const auto& v : toml::find<toml::array>(root, "device")) {
        DeviceConfig d;
        d.name = toml::find<std::string>(v, "name");
        d.source = toml::find<std::string>(v, "source");
        if (auto r = parse_source(d.source, d); !r) return std::unexpected(r.error());
        if (v.contains("mode")) d.mode = toml::find<std::string>(v, "mode");
        if (v.contains("vms")) d.vms = toml::find<std::vector<std::string>>(v, "vms");
        if (v.contains("bus")) d.bus = toml::find<std::string>(v, "bus");
        if (v.contains("slice_ms")) {
          const auto ms = toml::find<toml::integer>(v, "slice_ms");
          if (ms < 1 || ms > 60000)
            return bad("device '" + d.name + "': slice_ms must be 1..60000");
          d.slice_ms = static_cast<uint32_t>(ms);
        }
        if (v.contains("ports"))
          for (const auto& [vm, port] : toml::find<toml::table>(v, "ports")) {
            const auto n = port.as_integer();
            if (n < 1 || n > AddressMap::kMaxPort)
              return bad("device '" + d.name + "': port " + std::to_string(n) + " for vm '" + vm +
                         "' is not 1.." + std::to_string(AddressMap::kMaxPort));
            d.ports[vm] = static_cast<uint32_t>(n);
          }
        c.devices.push_back(d);
      }
  } catch (const std::exception& e) {
    // toml11 reports errors by exception; this is start-up, not the data path.
    return bad("config " + path + ": " + e.what());
  }
  if (auto r = give_cameras(c); !r) return std::unexpected(r.error());
  if (auto r = validate(c); !r) return std::unexpected(r.error());
  if (auto r = validate_usbredir_devices(c); !r) return std::unexpected(r.error());
  return c;
}

usb::Result<void> validate_usbredir_devices(const VusbdConfig& c) {
  for (const auto& vm : c.vms)
    for (const auto& a : vm.usbredir) {
      const DeviceConfig* d = c.device(a.device);
      if (!d)
        return bad("vm '" + vm.name + "': usbredir for '" + a.device + "', a device not defined");
      if (std::ranges::find(d->vms, vm.name) == d->vms.end())
        return bad("vm '" + vm.name + "': usbredir for '" + a.device +
                   "', a device not given to it");
    }
  return {};
}

usb::Result<void> validate(const VusbdConfig& c) {
  std::set<std::string> vms, devices;
  for (const auto& vm : c.vms) {
    if (!good_name(vm.name))
      return bad("vm name '" + vm.name + "': use 1-64 letters, digits, '.', '_' or '-'");
    if (!vms.insert(vm.name).second) return bad("vm '" + vm.name + "' is defined twice");
    if (vm.weight < 1 || vm.weight > 1000)
      return bad("vm '" + vm.name + "': weight must be 1..1000, not " + std::to_string(vm.weight));
    if (auto p = usb::net::PeerList::parse(vm.allow); !p)
      return bad("vm '" + vm.name + "': allow: " + p.error().message);
    if (vm.listen.tls && c.tls.cert_file.empty() && c.tls.psk_file.empty())
      return bad("vm '" + vm.name + "': a tls: port needs [tls] cert and key (or psk)");
    std::set<std::string> redirected;
    for (const auto& a : vm.usbredir) {
      if (!redirected.insert(a.device).second)
        return bad("vm '" + vm.name + "': usbredir names '" + a.device + "' twice");
    }
  }
  std::map<std::string, std::map<uint32_t, std::string>> used;  // vm → port → device
  for (const auto& d : c.devices) {
    if (!good_name(d.name))
      return bad("device name '" + d.name + "': use 1-64 letters, digits, '.', '_' or '-'");
    if (!devices.insert(d.name).second) return bad("device '" + d.name + "' is defined twice");
    if (!d.bus.empty() && !good_name(d.bus))
      return bad("device '" + d.name + "': bus name '" + d.bus +
                 "': use 1-64 letters, digits, '.', '_' or '-'");
    if (!known_mode(d.mode))
      return bad("device '" + d.name + "': mode must be shared, exclusive or timeslice, not '" +
                 d.mode + "'");
    if (d.slice_ms < 1 || d.slice_ms > 60000)
      return bad("device '" + d.name + "': slice_ms must be 1..60000, not " +
                 std::to_string(d.slice_ms));
    std::set<std::string> seen;
    for (const auto& vm : d.vms) {
      if (!vms.contains(vm)) return bad("device '" + d.name + "' names unknown vm '" + vm + "'");
      if (!seen.insert(vm).second)
        return bad("device '" + d.name + "' names vm '" + vm + "' twice");
    }
    if (d.kind == DeviceConfig::Kind::kUsbipAll && !d.ports.empty())
      return bad("device '" + d.name +
                 "': a whole server (/*) takes no ports; its devices get "
                 "the lowest free ones");
    for (const auto& [vm, port] : d.ports) {
      if (!seen.contains(vm))
        return bad("device '" + d.name + "' has a port for vm '" + vm + "' it is not given to");
      if (port < 1 || port > AddressMap::kMaxPort)
        return bad("device '" + d.name + "': port " + std::to_string(port) + " out of range");
      auto [it, fresh] = used[vm].emplace(port, d.name);
      if (!fresh)
        return bad("vm '" + vm + "' port " + std::to_string(port) + " is given to both '" +
                   it->second + "' and '" + d.name + "'");
    }
  }
  return {};
}

std::string to_toml(const VusbdConfig& c) {
  std::ostringstream out;
  out << "# vusbd configuration. vusbd rewrites this file when its control API changes something;\n"
         "# comments are not kept.\n\n";
  out << "[control]\nlisten = " << quote(c.control.to_string()) << "\n";
  if (c.control_anonymous != "read") out << "anonymous = " << quote(c.control_anonymous) << "\n";
  for (const auto& t : c.control_tokens)
    out << "\n[[control.token]]\nfile = " << quote(t.file) << "\nrole = " << quote(t.role) << "\n"
        << (t.vm.empty() ? "" : "vm = " + quote(t.vm) + "\n")
        << (t.name.empty() ? "" : "name = " + quote(t.name) + "\n");
  if (c.tls.enabled()) {
    out << "\n[tls]\n";
    for (auto [key, value] : tls_keys(c.tls))
      if (!value->empty()) out << key << " = " << quote(*value) << "\n";
  }
  for (const auto& vm : c.vms) {
    out << "\n[[vm]]\nname = " << quote(vm.name) << "\nlisten = " << quote(vm.listen.to_string())
        << "\n"
        << (vm.weight != 1 ? "weight = " + std::to_string(vm.weight) + "\n" : "")
        << (vm.bandwidth_device ? "bandwidth_device = true\n" : "")
        << (vm.camera.empty() ? "" : "camera = " + quote(vm.camera) + "\n");
    if (!vm.allow.empty()) {
      out << "allow = [";
      for (size_t i = 0; i < vm.allow.size(); ++i) out << (i ? ", " : "") << quote(vm.allow[i]);
      out << "]\n";
    }
    if (!vm.usbredir.empty()) {
      out << "usbredir = [";
      for (size_t i = 0; i < vm.usbredir.size(); ++i) {
        const auto& a = vm.usbredir[i];
        out << (i ? ", " : "") << "{ device = " << quote(a.device) << ", "
            << (a.connect ? "connect" : "listen") << " = " << quote(a.endpoint.to_string())
            << " }";
      }
      out << "]\n";
    }
  }
  for (const auto& d : c.devices) {
    out << "\n[[device]]\nname = " << quote(d.name) << "\nsource = " << quote(d.source)
        << "\nmode = " << quote(d.mode) << "\n";
    if (d.slice_ms != 100) out << "slice_ms = " << d.slice_ms << "\n";
    if (!d.bus.empty()) out << "bus = " << quote(d.bus) << "\n";
    out << "vms = [";
    for (size_t i = 0; i < d.vms.size(); ++i) out << (i ? ", " : "") << quote(d.vms[i]);
    out << "]\nports = {";
    bool first = true;
    for (const auto& [vm, port] : d.ports) {
      // Quoted: a VM name may hold '.', which a bare TOML key would read as a table path.
      out << (first ? " " : ", ") << quote(vm) << " = " << port;
      first = false;
    }
    out << (first ? "}" : " }") << "\n";
  }
  return out.str();
}

usb::Result<void> save_config(const VusbdConfig& config, const std::string& path) {
  // A new file next to the old one — unique (mkstemp: never an existing file or a symlink),
  // owner-only, written and fsynced — renamed over it, then the directory fsynced: after a crash
  // the config is the old one or the new one, never a torn or empty one.
  auto io_error = [](const std::string& what) {
    return usb::Error::make(usb::Error::Code::kIo, what + ": " + std::strerror(errno));
  };
  const std::filesystem::path target(path);
  const std::filesystem::path dir =
      target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  std::string tmp = (dir / ("." + target.filename().string() + ".XXXXXX")).string();
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) return io_error("cannot create a temporary file in " + dir.string());
  const std::string text = to_toml(config);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      auto e = io_error("cannot write " + tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return e;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    auto e = io_error("cannot sync " + tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return e;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto e = io_error("cannot replace " + path);
    ::unlink(tmp.c_str());
    return e;
  }
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);  // the rename itself survives a crash
    ::close(dfd);
  }
  return {};
}

}  // namespace vusbd
