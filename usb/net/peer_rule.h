// Access lists over PeerInfo: who a rule admits, written as text in config files and on command
// lines —
//   "any"            every peer the listener let in
//   "authenticated"  a peer that proved who it is: a TLS identity, or a local user (UNIX socket)
//   "cn:NAME"        a TLS client certificate with that common name
//   "sha256:HEX"     a TLS client certificate with that SHA-256 fingerprint (64 hex digits)
//   "psk:IDENTITY"   a TLS PSK identity
//   "uid:N"          a local user on a UNIX socket
//   "ADDRESS" or "ADDRESS/PREFIX"  a TCP peer's IPv4 or IPv6 address or network (an IPv4 address
//                    written as ::ffff:a.b.c.d matches its IPv4 rule)
// A PeerList admits a peer when any of its rules matches. Pure values.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ip/address.hpp>

#include "usb/core/error.h"
#include "usb/net/stream.h"

namespace usb::net {

struct PeerRule {
  enum class Kind { kAny, kAuthenticated, kCommonName, kFingerprint, kPsk, kUid, kNetwork };
  Kind kind = Kind::kAny;
  std::string value;                      // name, fingerprint, identity, uid
  boost::asio::ip::address network;       // kNetwork
  unsigned prefix = 0;                    // kNetwork: leading bits that must match
  std::string text;                       // as written

  bool matches(const PeerInfo& peer) const;
};

Result<PeerRule> parse_peer_rule(std::string_view text);

class PeerList {
 public:
  PeerList() = default;
  // Each entry a rule; errors name the bad one.
  static Result<PeerList> parse(const std::vector<std::string>& rules);
  bool empty() const { return rules_.empty(); }
  bool admits(const PeerInfo& peer) const;
  // "cn:vm1, 10.0.0.0/8"
  std::string to_string() const;
  const std::vector<PeerRule>& rules() const { return rules_; }

 private:
  std::vector<PeerRule> rules_;
};

}  // namespace usb::net
