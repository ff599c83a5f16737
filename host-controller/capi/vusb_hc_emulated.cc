// vusb_hc_attach_emulated (vusb_hc.h): emulated devices by name for the C API — kept apart from
// the controller's C API (vusb_hc.cc), which takes devices through vusb_hc_attach_device and
// depends on no device type. Built into vusb_hc_capi; vusb_hc_capi_core is the C API without it.
#include <spdlog/spdlog.h>

#include <cerrno>
#include <string_view>

#include "devices/emulated/gadget_zero.h"
#include "host-controller/capi/vusb_hc.h"
#include "host-controller/capi/vusb_hc_device.h"

extern "C" int vusb_hc_attach_emulated(vusb_hc* h, int vm, uint32_t port, const char* spec) {
  if (!h || !spec) return -EINVAL;
  std::string_view s(spec);
  std::string_view options;
  if (auto q = s.find('?'); q != std::string_view::npos) {
    options = s.substr(q + 1);
    s = s.substr(0, q);
  }
  if (s != "gadget-zero") return -EINVAL;
  auto o = devices::parse_gadget_zero_options(options);
  if (!o) {
    spdlog::error("vusb_hc: {}: {}", spec, o.error().message);
    return -EINVAL;
  }
  return vusb_hc_attach_device(h, vm, port, std::make_unique<devices::GadgetZero>(*o));
}
