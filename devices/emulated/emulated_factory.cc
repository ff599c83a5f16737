#include "devices/emulated/emulated_factory.h"

#include "devices/emulated/gadget_zero.h"
#include "devices/emulated/uvc_camera.h"

namespace devices {

std::string_view known_emulated_types() {
  return "gadget-zero, uvc-camera";
}

usb::Result<void> validate_emulated(std::string_view type, std::string_view options) {
  if (type == "gadget-zero") {
    if (auto o = parse_gadget_zero_options(options); !o) return std::unexpected(o.error());
    return {};
  }
  if (type == "uvc-camera") {
    if (auto o = parse_uvc_camera_options(options); !o) return std::unexpected(o.error());
    return {};
  }
  return usb::Error::make(usb::Error::Code::kInvalidArgument,
                          "unknown emulated device '" + std::string(type) +
                              "' (known: " + std::string(known_emulated_types()) + ")");
}

usb::Result<std::unique_ptr<usb::Device>> make_emulated(const EmulatedSpec& spec,
                                                        EmulatedTimer timer, EmulatedClock clock) {
  if (auto ok = validate_emulated(spec.type, spec.options); !ok) return std::unexpected(ok.error());
  std::unique_ptr<EmulatedDevice> device;
  if (spec.type == "gadget-zero") {
    auto gz = std::make_unique<GadgetZero>(*parse_gadget_zero_options(spec.options), spec.location);
    gz->set_pacing([timer](std::chrono::milliseconds d,
                           std::move_only_function<void()> fn) { timer(d, std::move(fn)); },
                   clock);
    device = std::move(gz);
  } else {
    auto cam = std::make_unique<UvcCamera>(*parse_uvc_camera_options(spec.options), spec.location);
    cam->set_clock(timer, clock);
    device = std::move(cam);
  }
  if (const auto& configs = device->descriptors().configurations; !configs.empty())
    device->set_configuration(configs.front().value, [](usb::Status) {});
  return device;
}

}  // namespace devices
