// ExportAccess: which peers may list and import which exports of a USB/IP server — vusb-stub's
// per-export access lists. Each rule names devices and the peers (usb/net/peer_rule.h) allowed
// them:
//   devices: a bus id ("1-1"), "class:HH" (the device's class or any interface's, hex), "hid"
//            (input devices: class 03, keyboards, mice, sensor hubs), or "*"
// A device named by one or more rules is listed to and imported by only the peers those rules
// admit. A device no rule names is open to every peer the listener let in — except an input
// device, which only an authenticated peer (TLS identity, local user) gets: whoever imports a
// keyboard reads what is typed on it. A refused import is answered with USB/IP's "not available"
// status, logged and counted, and the connection stays polite; a refused device is left out of
// the device list.
//
// Built from the config at start; read on the server's loop by its connections (the counter is
// theirs to bump).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "usb/core/error.h"
#include "usb/net/peer_rule.h"
#include "usb/usbip/export_table.h"

namespace usb::usbip {

class ExportAccess {
 public:
  struct Rule {
    std::vector<std::string> devices;
    std::vector<std::string> peers;
  };
  // Errors name the bad rule.
  static usb::Result<ExportAccess> make(const std::vector<Rule>& rules);

  // kOk, or kDenied saying why (for the log line).
  usb::Result<void> check(const usb::net::PeerInfo& peer, const ExportTable::Entry& entry) const;
  void count_refusal() const { ++refused_; }
  uint64_t refused() const { return refused_; }
  size_t size() const { return rules_.size(); }

 private:
  struct Compiled {
    std::vector<std::string> devices;
    usb::net::PeerList peers;
  };
  std::vector<Compiled> rules_;
  mutable uint64_t refused_ = 0;
};

// "1-1,class:0e=cn:vm1,psk:phone" (the command line's --access): devices before '=', peers after.
usb::Result<ExportAccess::Rule> parse_access_rule(std::string_view text);

}  // namespace usb::usbip
