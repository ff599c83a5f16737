#include "devices/libusb/device_filter.h"

#include <charconv>
#include <cstdio>
#include <optional>

namespace devices {
namespace {

// USB allows at most 7 tiers, so a device sits behind at most 7 ports (libusb reports <= 7).
constexpr size_t kMaxPortDepth = 7;

std::unexpected<usb::Error> invalid(std::string_view spec, std::string why) {
  return usb::Error::make(usb::Error::Code::kInvalidArgument,
                          "device filter '" + std::string(spec) + "': " + std::move(why));
}

// Parses the whole of `s` as an unsigned number in `base`; nullopt on any junk or overflow.
template <typename T>
std::optional<T> parse_number(std::string_view s, int base) {
  if (s.empty() || s.front() == '+' || s.front() == '-') return std::nullopt;
  T value{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value, base);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return value;
}

usb::Result<DeviceFilter> parse_vid_pid(std::string_view spec, size_t colon) {
  std::string_view vid_text = spec.substr(0, colon);
  std::string_view pid_text = spec.substr(colon + 1);
  auto hex16 = [](std::string_view s) -> std::optional<uint16_t> {
    if (s.empty() || s.size() > 4) return std::nullopt;
    return parse_number<uint16_t>(s, 16);
  };
  auto vid = hex16(vid_text);
  if (!vid) return invalid(spec, "vendor id '" + std::string(vid_text) + "' is not 1-4 hex digits");
  auto pid = hex16(pid_text);
  if (!pid)
    return invalid(spec, "product id '" + std::string(pid_text) + "' is not 1-4 hex digits");
  return DeviceFilter::vid_pid(*vid, *pid);
}

usb::Result<DeviceFilter> parse_busid(std::string_view spec, size_t dash) {
  std::string_view bus_text = spec.substr(0, dash);
  auto bus = parse_number<unsigned>(bus_text, 10);
  if (!bus || *bus < 1 || *bus > 255)
    return invalid(spec, "bus number '" + std::string(bus_text) + "' is not 1-255");
  uint8_t ports[kMaxPortDepth];
  size_t depth = 0;
  std::string_view rest = spec.substr(dash + 1);
  for (;;) {
    size_t dot = rest.find('.');
    std::string_view port_text = rest.substr(0, dot);
    auto port = parse_number<unsigned>(port_text, 10);
    if (!port || *port < 1 || *port > 255)
      return invalid(spec, "port '" + std::string(port_text) + "' is not 1-255");
    if (depth == kMaxPortDepth)
      return invalid(spec, "more than " + std::to_string(kMaxPortDepth) + " ports");
    ports[depth++] = static_cast<uint8_t>(*port);
    if (dot == std::string_view::npos) break;
    rest = rest.substr(dot + 1);
  }
  // Canonical form: "01-1" and "1-01" both name "1-1".
  return DeviceFilter::bus_id(format_busid(static_cast<uint8_t>(*bus), {ports, depth}));
}

}  // namespace

bool DeviceFilter::matches(const DeviceIdentity& d) const {
  if (d.device_class == kHubClass) return false;
  switch (kind) {
    case Kind::kAll:
      return true;
    case Kind::kVidPid:
      return d.vendor_id == vendor_id && d.product_id == product_id;
    case Kind::kBusid:
      return d.busid == busid;
  }
  return false;
}

std::string DeviceFilter::to_string() const {
  switch (kind) {
    case Kind::kAll:
      return "all";
    case Kind::kVidPid: {
      char buf[16];
      std::snprintf(buf, sizeof buf, "%04x:%04x", vendor_id, product_id);
      return buf;
    }
    case Kind::kBusid:
      return busid;
  }
  return "?";
}

usb::Result<DeviceFilter> parse_device_filter(std::string_view spec) {
  if (spec == "all" || spec == "*") return DeviceFilter::all();
  if (spec.empty()) return invalid(spec, "empty; expected VID:PID, a bus id like 1-1.2, or all");
  size_t colon = spec.find(':');
  size_t dash = spec.find('-');
  if (colon != std::string_view::npos && dash == std::string_view::npos)
    return parse_vid_pid(spec, colon);
  if (dash != std::string_view::npos && colon == std::string_view::npos)
    return parse_busid(spec, dash);
  return invalid(spec, "expected VID:PID (e.g. 046d:c52b), a bus id (e.g. 1-1.2) or all");
}

std::string format_busid(uint8_t bus, std::span<const uint8_t> ports) {
  if (ports.empty()) return "usb" + std::to_string(bus);
  std::string s = std::to_string(bus) + "-";
  for (size_t i = 0; i < ports.size(); ++i) {
    if (i) s += '.';
    s += std::to_string(ports[i]);
  }
  return s;
}

}  // namespace devices
