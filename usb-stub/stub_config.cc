#include "usb-stub/stub_config.h"

#include <toml.hpp>

#include "devices/emulated/emulated_factory.h"

namespace stub {

namespace {
usb::Result<void> bad(std::string msg) {
  return usb::Error::make(usb::Error::Code::kInvalidArgument, std::move(msg));
}
}  // namespace

usb::Result<EmulateSpec> parse_emulate(std::string_view text) {
  EmulateSpec spec;
  auto eq = text.find('=');
  spec.type = std::string(text.substr(0, eq));
  if (auto known = devices::validate_emulated(spec.type, ""); !known)
    return std::unexpected(known.error());
  if (eq == std::string_view::npos) return spec;
  std::string_view rest = text.substr(eq + 1);
  bool first = true;
  while (!rest.empty()) {
    auto comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    if (item.starts_with("speed=") && spec.type == "gadget-zero") {
      spec.speed = std::string(item.substr(6));
      if (spec.speed != "high" && spec.speed != "super")
        return usb::Error::make(usb::Error::Code::kInvalidArgument,
                                "speed must be 'high' or 'super', not '" + spec.speed + "'");
    } else if (first && item.find('=') == std::string_view::npos) {
      spec.busid = std::string(item);
    } else if (auto o = devices::validate_emulated(spec.type, item); o) {
      // the device type's own options (Gadget Zero's pattern, isoc_*, ...; the camera's transport)
      spec.options += (spec.options.empty() ? "" : ",") + std::string(item);
    } else {
      return usb::Error::make(usb::Error::Code::kInvalidArgument,
                              "emulate option '" + std::string(item) + "': " + o.error().message);
    }
    first = false;
  }
  if (spec.busid.size() >= 32)
    return usb::Error::make(usb::Error::Code::kInvalidArgument, "bus id longer than 31 bytes");
  return spec;
}

usb::Result<void> load_toml(const std::string& path, StubConfig& c) {
  try {
    const toml::value root = toml::parse(path);
    if (root.contains("listen")) {
      const auto& l = toml::find(root, "listen");
      std::vector<std::string> texts = l.is_array() ? toml::get<std::vector<std::string>>(l)
                                                    : std::vector{toml::get<std::string>(l)};
      if (texts.empty()) return bad("listen names no address");
      c.listen.clear();
      for (const auto& t : texts) {
        auto at = usb::net::parse_endpoint(t);
        if (!at) return std::unexpected(at.error());
        c.listen.push_back(*at);
      }
    }
    if (root.contains("allow")) c.allow = toml::find<std::vector<std::string>>(root, "allow");
    if (root.contains("tls")) {
      const auto& t = toml::find(root, "tls");
      auto path = [&](const char* key, std::string& out) {
        if (t.contains(key)) out = toml::find<std::string>(t, key);
      };
      path("ca", c.tls.ca_file);
      path("cert", c.tls.cert_file);
      path("key", c.tls.key_file);
      path("psk", c.tls.psk_file);
    }
    if (root.contains("access")) {
      for (const auto& a : toml::find<toml::array>(root, "access"))
        c.access.push_back({toml::find<std::vector<std::string>>(a, "devices"),
                            toml::find<std::vector<std::string>>(a, "peers")});
    }
    // Read as TOML's signed integer and range-checked: a negative value converted straight to
    // an unsigned type would wrap to a huge limit and switch the cap off.
    if (root.contains("max_urb_bytes")) {
      const auto n = toml::find<toml::integer>(root, "max_urb_bytes");
      if (n < 1 || n > (int64_t{1} << 30)) return bad("max_urb_bytes must be 1..1073741824");
      c.limits.wire.max_transfer_length = static_cast<uint32_t>(n);
    }
    if (root.contains("max_inflight_bytes")) {
      const auto n = toml::find<toml::integer>(root, "max_inflight_bytes");
      if (n < 1 || n > (int64_t{1} << 36)) return bad("max_inflight_bytes must be 1..68719476736");
      c.limits.max_inflight_bytes = static_cast<uint64_t>(n);
    }
    for (auto [key, out] : {std::pair{"max_connections", &c.max_connections},
                            {"max_connections_per_address", &c.max_connections_per_address}})
      if (root.contains(key)) {
        const auto n = toml::find<toml::integer>(root, key);
        if (n < 1 || n > 1000000) return bad(std::string(key) + " must be 1..1000000");
        *out = static_cast<size_t>(n);
      }
    if (root.contains("log_level")) c.log_level = toml::find<std::string>(root, "log_level");
    if (root.contains("emulate")) {
      for (const auto& e : toml::find<toml::array>(root, "emulate")) {
        std::string text = toml::find<std::string>(e, "type");
        if (e.contains("busid")) text += "=" + toml::find<std::string>(e, "busid");
        auto spec = parse_emulate(text);
        if (!spec) return std::unexpected(spec.error());
        if (e.contains("speed")) spec->speed = toml::find<std::string>(e, "speed");
        if (e.contains("options")) {
          spec->options = toml::find<std::string>(e, "options");
          if (auto o = devices::validate_emulated(spec->type, spec->options); !o)
            return std::unexpected(o.error());
        }
        if (spec->speed != "high" && spec->speed != "super")
          return bad("emulate speed must be 'high' or 'super'");
        c.emulate.push_back(*spec);
      }
    }
    if (root.contains("libusb")) {
      const auto& l = toml::find(root, "libusb");
      if (l.contains("devices"))
        for (auto& d : toml::find<std::vector<std::string>>(l, "devices")) c.libusb.push_back(d);
      if (l.contains("all")) c.libusb_all = toml::find<bool>(l, "all");
    }
    if (root.contains("sensors")) {
      const auto& l = toml::find(root, "sensors");
      if (l.contains("sources"))
        for (auto& d : toml::find<std::vector<std::string>>(l, "sources")) c.sensors.push_back(d);
      if (l.contains("record")) c.record_sensors = toml::find<std::string>(l, "record");
    }
    if (root.contains("input")) {
      const auto& l = toml::find(root, "input");
      if (l.contains("devices"))
        for (auto& d : toml::find<std::vector<std::string>>(l, "devices")) c.inputs.push_back(d);
    }
  } catch (const std::exception& e) {
    // toml11 reports errors by exception; this is start-up, not the data path.
    return usb::Error::make(usb::Error::Code::kInvalidArgument, "config " + path + ": " + e.what());
  }
  return {};
}

usb::Result<void> validate(const StubConfig& c) {
  if (c.limits.wire.max_transfer_length == 0) return bad("max_urb_bytes must be > 0");
  if (c.limits.max_inflight_bytes < c.limits.wire.max_transfer_length)
    return bad("max_inflight_bytes must be at least max_urb_bytes");
  if (c.limits.wire.max_transfer_length > (1u << 30)) return bad("max_urb_bytes must be <= 1 GiB");
  bool tls = false;
  for (const auto& l : c.listen) tls = tls || l.tls;
  if (tls && !c.tls.enabled())
    return bad("a tls: listener needs [tls] cert and key (with ca for client certificates) or psk");
  if (!tls && c.tls.enabled()) return bad("[tls] is set but no listener is tls:ADDR:PORT");
  if (auto p = usb::net::PeerList::parse(c.allow); !p) return std::unexpected(p.error());
  if (auto a = usb::usbip::ExportAccess::make(c.access); !a) return std::unexpected(a.error());
  if (!c.record_sensors.empty() && c.sensors.empty())
    return bad("recording sensors (--record-sensors, [sensors] record) needs a sensor source");
  return {};
}

}  // namespace stub
