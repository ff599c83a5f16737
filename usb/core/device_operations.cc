#include "usb/core/device_operations.h"

namespace usb {

bool is_device_operation(const SetupPacket& s) {
  namespace rq = request;
  if (s.is_standard(Recipient::kDevice, rq::kSetConfiguration)) return true;
  if (s.is_standard(Recipient::kInterface, rq::kSetInterface)) return true;
  if (s.is_standard(Recipient::kEndpoint, rq::kClearFeature) && s.value == feature::kEndpointHalt)
    return true;
  // Hub class SET_FEATURE(PORT_RESET) to "other": reset the device (stub_rx.c does the same).
  return s.request_type == 0x23 && s.request == rq::kSetFeature && s.value == kHubPortResetFeature;
}

void submit_or_perform(Device& device, Transfer& t) {
  if (t.type() != TransferType::kControl || !is_device_operation(t.setup) ||
      device.performs_standard_requests())
    return device.submit(t);
  const SetupPacket s = t.setup;
  auto done = [&t](Status status) { t.complete(status, 0); };
  if (s.request == request::kSetConfiguration)
    return device.set_configuration(static_cast<uint8_t>(s.value), done);
  if (s.request == request::kSetInterface)
    return device.set_interface(static_cast<uint8_t>(s.index), static_cast<uint8_t>(s.value), done);
  if (s.request == request::kClearFeature)
    return device.clear_halt(static_cast<uint8_t>(s.index), done);
  device.reset(done);
}

}  // namespace usb
