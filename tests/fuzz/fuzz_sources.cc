// libFuzzer: vusbd's device source strings (usbip://HOST:PORT/BUSID, usbip+unix://PATH/BUSID,
// libusb:..., and emulated:gadget-zero?key=value,... with its option decoder). Every input either
// parses into a config that validate() and the TOML round trip accept, or is refused with a
// message. The same text goes to parse_endpoint() (every listen/connect address: HOST:PORT or
// unix:PATH) and parse_url(): a UNIX endpoint and a USB/IP location print back to themselves, a
// refusal says why.
#include <cstddef>
#include <cstdint>
#include <string>

#include "devices/emulated/gadget_zero.h"
#include "usb/net/endpoint.h"
#include "usb/usbip/url.h"
#include "vmm-frontend/vusbd_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  vusbd::DeviceConfig d;
  d.name = "dev";
  if (auto r = vusbd::parse_source(text, d); r) {
    (void)vusbd::bus_of(d);
    if (d.kind == vusbd::DeviceConfig::Kind::kEmulated) {
      auto o = devices::parse_gadget_zero_options(d.emulated_options);
      if (!o) __builtin_trap();  // parse_source accepted what the option decoder refuses
      devices::GadgetZero gz(*o);
      (void)gz.descriptors().configurations.at(0).build();
    }
  } else if (r.error().message.empty()) {
    __builtin_trap();  // a refusal says why
  }
  (void)devices::parse_gadget_zero_options(text);
  if (auto e = usb::net::parse_endpoint(text); e) {
    if (e->is_unix()) {
      auto back = usb::net::parse_endpoint(e->to_string());
      if (!back || *back != *e) __builtin_trap();  // a UNIX endpoint prints back to itself
    }
  } else if (e.error().message.empty()) {
    __builtin_trap();
  }
  // usbip:// and usbip+unix:// locations print back to themselves.
  if (auto u = usb::usbip::parse_url(text); u) {
    auto back = usb::usbip::parse_url(usb::usbip::url(u->server, u->busid));
    if (!back || *back != *u) __builtin_trap();
  } else if (u.error().message.empty()) {
    __builtin_trap();
  }
  return 0;
}
