// StubConfig: everything vusb-stub is told by its command line or its TOML config file.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "usb/core/error.h"
#include "usb/net/endpoint.h"
#include "usb/net/tls.h"
#include "usb/usbip/export_access.h"
#include "usb/usbip/server_connection.h"

namespace stub {

struct EmulateSpec {
  std::string type;            // "gadget-zero" or "uvc-camera"
  std::string busid;           // empty: the next free "1-N"
  std::string speed = "high";  // Gadget Zero: "high" or "super"
  std::string options;         // the type's other options, "key=value,..." (validated)
  friend bool operator==(const EmulateSpec&, const EmulateSpec&) = default;
};

struct StubConfig {
  // Where it listens, one server each. Loopback unless told otherwise: USB/IP has no
  // authentication of its own. A UNIX socket, "unix:/run/vusb-stub.sock"; TLS, "tls:0.0.0.0:3241".
  std::vector<usb::net::Endpoint> listen{usb::net::Endpoint{"127.0.0.1", 3240}};
  usb::net::TlsConfig tls;  // certificates / PSKs for the TLS listeners
  std::vector<std::string> allow;  // peer rules every connection must match (empty: anyone)
  std::vector<usb::usbip::ExportAccess::Rule> access;  // per-export access lists
  std::vector<EmulateSpec> emulate;
  std::vector<std::string> libusb;  // "VID:PID" or a bus id "B-P.P"
  bool libusb_all = false;
  std::vector<std::string> sensors;  // --sensors specs (one hub)
  std::string record_sensors;        // a trace file, or empty
  std::vector<std::string> inputs;   // --input specs
  usb::usbip::ConnectionLimits limits;
  size_t max_connections = 1024;  // open at once per listener (0: no cap)
  size_t max_connections_per_address = 128;
  std::string log_level = "info";
};

// Parses "gadget-zero", "gadget-zero=1-1", "gadget-zero=1-1,speed=super", "uvc-camera" or
// "uvc-camera=1-2,transport=bulk".
usb::Result<EmulateSpec> parse_emulate(std::string_view text);

// Reads a TOML file into `config` (keys absent from the file keep their values):
//   listen = "127.0.0.1:3240"        # the default; "0.0.0.0:3240" for the network, or
//                                    # "unix:/run/vusb-stub.sock", or a list of them, TLS
//                                    # ones written "tls:0.0.0.0:3241"
//   allow = ["127.0.0.1", "10.1.0.0/16", "cn:vm1"]   # who may connect at all (peer_rule.h)
//   [tls]        ca = "ca.crt"  cert = "stub.crt"  key = "stub.key"  psk = "psk.txt"
//   [[access]]   devices = ["1-1", "hid", "class:0e"]  peers = ["cn:vm1", "psk:phone"]
//   max_urb_bytes = 16777216          # per-URB buffer bound
//   max_inflight_bytes = 67108864     # per connection
//   max_connections = 1024            # open at once per listener, and from one address:
//   max_connections_per_address = 128
//   log_level = "info"
//   [[emulate]]  type = "gadget-zero"  busid = "1-1"  speed = "high"
//   [libusb]     devices = ["0525:a4a0", "3-1.2"]  all = false
//   [sensors]    sources = ["evdev", "iio"]  record = "walk.trace"
//   [input]      devices = ["evdev:/dev/input/event5", "evdev:/dev/input/event7,nograb"]
usb::Result<void> load_toml(const std::string& path, StubConfig& config);

// Cross-field checks (a URB larger than the in-flight budget could never be accepted, ...).
usb::Result<void> validate(const StubConfig& config);

}  // namespace stub
