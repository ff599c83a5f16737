#include "usb/usbip/export_access.h"

#include <algorithm>
#include <charconv>

#include "usb/core/device.h"

namespace usb::usbip {

namespace {

constexpr uint8_t kHidClass = 0x03;

// The device's class, or any interface's in any of its configurations (an unconfigured keyboard
// is still a keyboard).
bool has_class(const usb::Device& d, uint8_t cls) {
  const auto& desc = d.descriptors();
  if (desc.device.device_class == cls) return true;
  return std::ranges::any_of(desc.configurations, [cls](const auto& cfg) {
    return std::ranges::any_of(cfg.interfaces,
                               [cls](const auto& i) { return i.interface_class == cls; });
  });
}

usb::Result<void> check_selector(const std::string& s) {
  if (s == "*" || s == "hid") return {};
  if (s.starts_with("class:")) {
    unsigned v = 0;
    const auto hex = std::string_view(s).substr(6);
    auto [p, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), v, 16);
    if (ec != std::errc() || p != hex.data() + hex.size() || hex.empty() || v > 0xff)
      return usb::Error::make(usb::Error::Code::kInvalidArgument,
                              "bad device selector '" + s + "': class:HH takes a hex class");
    return {};
  }
  if (s.empty() || s.size() > 31 || s.find('/') != std::string::npos)
    return usb::Error::make(usb::Error::Code::kInvalidArgument,
                            "bad device selector '" + s +
                                "': expected a bus id, class:HH, hid or *");
  return {};
}

bool selects(const std::string& s, const ExportTable::Entry& e) {
  if (s == "*") return true;
  if (s == "hid") return has_class(*e.device, kHidClass);
  if (s.starts_with("class:"))
    return has_class(*e.device, static_cast<uint8_t>(std::stoul(s.substr(6), nullptr, 16)));
  return s == e.busid;
}

}  // namespace

usb::Result<ExportAccess> ExportAccess::make(const std::vector<Rule>& rules) {
  ExportAccess out;
  for (const auto& r : rules) {
    if (r.devices.empty() || r.peers.empty())
      return usb::Error::make(usb::Error::Code::kInvalidArgument,
                              "an access rule names devices and peers");
    for (const auto& d : r.devices)
      if (auto ok = check_selector(d); !ok) return std::unexpected(ok.error());
    auto peers = usb::net::PeerList::parse(r.peers);
    if (!peers) return std::unexpected(peers.error());
    out.rules_.push_back({r.devices, std::move(*peers)});
  }
  return out;
}

usb::Result<void> ExportAccess::check(const usb::net::PeerInfo& peer,
                                      const ExportTable::Entry& entry) const {
  bool named = false;
  std::string allowed;
  for (const auto& r : rules_) {
    if (!std::ranges::any_of(r.devices, [&](const auto& s) { return selects(s, entry); }))
      continue;
    named = true;
    if (r.peers.admits(peer)) return {};
    allowed += (allowed.empty() ? "" : "; ") + r.peers.to_string();
  }
  if (named)
    return usb::Error::make(usb::Error::Code::kDenied,
                            "its access list admits only " + allowed);
  if (has_class(*entry.device, kHidClass) && !peer.authenticated())
    return usb::Error::make(usb::Error::Code::kDenied,
                            "an input device goes only to an authenticated peer (TLS or a local "
                            "user), or to peers an access rule names");
  return {};
}

usb::Result<ExportAccess::Rule> parse_access_rule(std::string_view text) {
  const auto eq = text.find('=');
  auto split = [](std::string_view s) {
    std::vector<std::string> out;
    size_t at = 0;
    while (at <= s.size()) {
      const auto comma = s.find(',', at);
      const auto part = s.substr(at, comma == std::string_view::npos ? s.npos : comma - at);
      if (!part.empty()) out.emplace_back(part);
      if (comma == std::string_view::npos) break;
      at = comma + 1;
    }
    return out;
  };
  if (eq == std::string_view::npos)
    return usb::Error::make(usb::Error::Code::kInvalidArgument,
                            "bad access rule '" + std::string(text) +
                                "': expected DEVICES=PEERS, e.g. 1-1,hid=cn:vm1,10.0.0.0/8");
  ExportAccess::Rule r{split(text.substr(0, eq)), split(text.substr(eq + 1))};
  if (auto ok = ExportAccess::make({r}); !ok) return std::unexpected(ok.error());
  return r;
}

}  // namespace usb::usbip
