#include "vmm-frontend/vusbd_config.h"

#include <set>
#include <toml.hpp>

namespace vusbd {

namespace {
std::unexpected<usb::Error> bad(std::string msg) {
  return usb::Error::make(usb::Error::Code::kInvalidArgument, std::move(msg));
}
}  // namespace

usb::Result<void> parse_source(const std::string& source, DeviceConfig& d) {
  constexpr std::string_view kUsbip = "usbip://", kEmulated = "emulated:";
  if (source.starts_with(kUsbip)) {
    const std::string rest = source.substr(kUsbip.size());
    const auto slash = rest.find('/');
    if (slash == std::string::npos || slash + 1 >= rest.size())
      return bad("source '" + source + "': expected usbip://HOST:PORT/BUSID");
    auto hp = usb::net::parse_host_port(rest.substr(0, slash), "127.0.0.1");
    if (!hp) return bad("source '" + source + "': " + hp.error().message);
    d.kind = DeviceConfig::Kind::kUsbip;
    d.server = *hp;
    d.busid = rest.substr(slash + 1);
    if (d.busid.size() >= 32) return bad("source '" + source + "': bus id longer than 31 bytes");
    return {};
  }
  if (source.starts_with(kEmulated)) {
    d.kind = DeviceConfig::Kind::kEmulated;
    d.emulated = source.substr(kEmulated.size());
    if (d.emulated != "gadget-zero")
      return bad("source '" + source + "': known emulated devices: gadget-zero");
    return {};
  }
  return bad("source '" + source + "': expected usbip://HOST:PORT/BUSID or emulated:gadget-zero");
}

usb::Result<VusbdConfig> load_config(const std::string& path) {
  VusbdConfig c;
  try {
    const toml::value root = toml::parse(path);
    if (root.contains("vm"))
      for (const auto& v : toml::find<toml::array>(root, "vm")) {
        VmConfig vm;
        vm.name = toml::find<std::string>(v, "name");
        auto hp = usb::net::parse_host_port(toml::find<std::string>(v, "listen"), "127.0.0.1");
        if (!hp) return bad("vm '" + vm.name + "': " + hp.error().message);
        vm.listen = *hp;
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
        c.devices.push_back(d);
      }
  } catch (const std::exception& e) {
    // toml11 reports errors by exception; this is start-up, not the data path.
    return bad("config " + path + ": " + e.what());
  }
  if (auto r = validate(c); !r) return std::unexpected(r.error());
  return c;
}

usb::Result<void> validate(const VusbdConfig& c) {
  std::set<std::string> vms, devices;
  for (const auto& vm : c.vms)
    if (!vms.insert(vm.name).second) return bad("vm '" + vm.name + "' is defined twice");
  for (const auto& d : c.devices) {
    if (!devices.insert(d.name).second) return bad("device '" + d.name + "' is defined twice");
    if (d.mode != "shared" && d.mode != "exclusive")
      return bad("device '" + d.name + "': mode must be shared or exclusive, not '" + d.mode + "'");
    for (const auto& vm : d.vms)
      if (!vms.contains(vm)) return bad("device '" + d.name + "' names unknown vm '" + vm + "'");
  }
  return {};
}

}  // namespace vusbd
