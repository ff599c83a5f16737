#include "usb/net/peer_rule.h"

#include <algorithm>
#include <charconv>

namespace usb::net {

namespace ip = boost::asio::ip;

namespace {

bool starts_with(std::string_view s, std::string_view p, std::string_view& rest) {
  if (!s.starts_with(p)) return false;
  rest = s.substr(p.size());
  return true;
}

ip::address unmapped(const ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  return a;
}

bool in_network(const ip::address& addr, const ip::address& net, unsigned prefix) {
  const ip::address a = unmapped(addr);
  if (a.is_v4() != net.is_v4()) return false;
  auto compare = [prefix](const auto& x, const auto& y) {
    for (unsigned bit = 0; bit < prefix; ++bit) {
      const unsigned byte = bit / 8, mask = 0x80u >> (bit % 8);
      if ((x[byte] & mask) != (y[byte] & mask)) return false;
    }
    return true;
  };
  return a.is_v4() ? compare(a.to_v4().to_bytes(), net.to_v4().to_bytes())
                   : compare(a.to_v6().to_bytes(), net.to_v6().to_bytes());
}

}  // namespace

Result<PeerRule> parse_peer_rule(std::string_view text) {
  PeerRule r;
  r.text = std::string(text);
  std::string_view rest;
  auto bad = [&](const std::string& why) {
    return Error::make(Error::Code::kInvalidArgument,
                       "bad peer rule '" + std::string(text) + "': " + why);
  };
  if (text == "any") {
    r.kind = PeerRule::Kind::kAny;
  } else if (text == "authenticated") {
    r.kind = PeerRule::Kind::kAuthenticated;
  } else if (starts_with(text, "cn:", rest)) {
    if (rest.empty()) return bad("a common name after cn:");
    r.kind = PeerRule::Kind::kCommonName;
    r.value = std::string(rest);
  } else if (starts_with(text, "sha256:", rest)) {
    std::string hex;
    for (char c : rest)
      if (c != ':') hex += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (hex.size() != 64 || !std::ranges::all_of(hex, [](char c) { return std::isxdigit(c); }))
      return bad("a SHA-256 fingerprint is 64 hex digits");
    r.kind = PeerRule::Kind::kFingerprint;
    r.value = hex;
  } else if (starts_with(text, "psk:", rest)) {
    if (rest.empty()) return bad("an identity after psk:");
    r.kind = PeerRule::Kind::kPsk;
    r.value = std::string(rest);
  } else if (starts_with(text, "uid:", rest)) {
    unsigned uid = 0;
    auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), uid);
    if (ec != std::errc() || p != rest.data() + rest.size() || rest.empty())
      return bad("a numeric uid after uid:");
    r.kind = PeerRule::Kind::kUid;
    r.value = std::to_string(uid);  // compared as a number ("uid:01000" is uid 1000)
  } else {
    const auto slash = text.find('/');
    boost::system::error_code ec;
    r.network = unmapped(ip::make_address(std::string(text.substr(0, slash)), ec));
    if (ec)
      return bad("expected any, authenticated, cn:NAME, sha256:HEX, psk:ID, uid:N or an "
                 "address[/prefix]");
    const unsigned max = r.network.is_v4() ? 32 : 128;
    r.prefix = max;
    if (slash != std::string_view::npos) {
      const auto p = text.substr(slash + 1);
      auto [end, ec2] = std::from_chars(p.data(), p.data() + p.size(), r.prefix);
      if (ec2 != std::errc() || end != p.data() + p.size() || p.empty() || r.prefix > max)
        return bad("prefix must be 0.." + std::to_string(max));
    }
    r.kind = PeerRule::Kind::kNetwork;
  }
  return r;
}

bool PeerRule::matches(const PeerInfo& peer) const {
  switch (kind) {
    case Kind::kAny:
      return true;
    case Kind::kAuthenticated:
      return peer.authenticated();
    case Kind::kCommonName:
      return peer.tls && peer.tls->psk_identity.empty() && peer.tls->common_name == value;
    case Kind::kFingerprint:
      return peer.tls && peer.tls->psk_identity.empty() && peer.tls->fingerprint == value;
    case Kind::kPsk:
      return peer.tls && peer.tls->psk_identity == value;
    case Kind::kUid:
      return peer.uid && std::to_string(*peer.uid) == value;
    case Kind::kNetwork:
      return peer.address && in_network(*peer.address, network, prefix);
  }
  return false;
}

Result<PeerList> PeerList::parse(const std::vector<std::string>& rules) {
  PeerList out;
  for (const auto& t : rules) {
    auto r = parse_peer_rule(t);
    if (!r) return std::unexpected(r.error());
    out.rules_.push_back(std::move(*r));
  }
  return out;
}

bool PeerList::admits(const PeerInfo& peer) const {
  return std::ranges::any_of(rules_, [&](const PeerRule& r) { return r.matches(peer); });
}

std::string PeerList::to_string() const {
  std::string s;
  for (const auto& r : rules_) s += (s.empty() ? "" : ", ") + r.text;
  return s;
}

}  // namespace usb::net
