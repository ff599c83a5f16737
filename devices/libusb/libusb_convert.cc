#include "devices/libusb/libusb_convert.h"

#include <algorithm>

#include "usb/core/status.h"

namespace devices {

// usb/core/status.cc spells libusb values as numbers so the core needs no libusb header. These
// pin them to <libusb.h>: if one fails, fix the table in status.cc, not this list.
static_assert(LIBUSB_SUCCESS == 0);
static_assert(LIBUSB_ERROR_IO == -1);
static_assert(LIBUSB_ERROR_INVALID_PARAM == -2);
static_assert(LIBUSB_ERROR_ACCESS == -3);
static_assert(LIBUSB_ERROR_NO_DEVICE == -4);
static_assert(LIBUSB_ERROR_NOT_FOUND == -5);
static_assert(LIBUSB_ERROR_BUSY == -6);
static_assert(LIBUSB_ERROR_TIMEOUT == -7);
static_assert(LIBUSB_ERROR_OVERFLOW == -8);
static_assert(LIBUSB_ERROR_PIPE == -9);
static_assert(LIBUSB_ERROR_INTERRUPTED == -10);
static_assert(LIBUSB_ERROR_NO_MEM == -11);
static_assert(LIBUSB_ERROR_NOT_SUPPORTED == -12);
static_assert(LIBUSB_ERROR_OTHER == -99);
static_assert(LIBUSB_TRANSFER_COMPLETED == 0);
static_assert(LIBUSB_TRANSFER_ERROR == 1);
static_assert(LIBUSB_TRANSFER_TIMED_OUT == 2);
static_assert(LIBUSB_TRANSFER_CANCELLED == 3);
static_assert(LIBUSB_TRANSFER_STALL == 4);
static_assert(LIBUSB_TRANSFER_NO_DEVICE == 5);
static_assert(LIBUSB_TRANSFER_OVERFLOW == 6);
// usb::Speed mirrors Linux's usb_device_speed, libusb's enum is shifted above "high".
static_assert(LIBUSB_SPEED_LOW == 1 && LIBUSB_SPEED_FULL == 2 && LIBUSB_SPEED_HIGH == 3 &&
              LIBUSB_SPEED_SUPER == 4 && LIBUSB_SPEED_SUPER_PLUS == 5);
static_assert(LIBUSB_DT_CONFIG_SIZE == 9 && LIBUSB_DT_INTERFACE_SIZE == 9 &&
              LIBUSB_DT_ENDPOINT_SIZE == 7 && LIBUSB_DT_ENDPOINT_AUDIO_SIZE == 9);

usb::Speed speed_from_libusb(int s) {
  switch (s) {
    case LIBUSB_SPEED_LOW:
      return usb::Speed::kLow;
    case LIBUSB_SPEED_FULL:
      return usb::Speed::kFull;
    case LIBUSB_SPEED_HIGH:
      return usb::Speed::kHigh;
    case LIBUSB_SPEED_SUPER:
      return usb::Speed::kSuper;
    case LIBUSB_SPEED_SUPER_PLUS:
      return usb::Speed::kSuperPlus;
    default:
      return usb::Speed::kUnknown;
  }
}

namespace {

void put16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v));
  out.push_back(static_cast<uint8_t>(v >> 8));
}

void put_extra(std::vector<uint8_t>& out, const unsigned char* extra, int length) {
  if (extra && length > 0) out.insert(out.end(), extra, extra + length);
}

}  // namespace

std::vector<uint8_t> raw_config_from_libusb(const libusb_config_descriptor& c) {
  std::vector<uint8_t> out;
  out.reserve(c.wTotalLength);
  out.push_back(LIBUSB_DT_CONFIG_SIZE);
  out.push_back(c.bDescriptorType);
  put16(out, 0);  // wTotalLength, patched below
  out.push_back(c.bNumInterfaces);
  out.push_back(c.bConfigurationValue);
  out.push_back(c.iConfiguration);
  out.push_back(c.bmAttributes);
  out.push_back(c.MaxPower);
  put_extra(out, c.extra, c.extra_length);
  for (int i = 0; c.interface && i < c.bNumInterfaces; ++i) {
    const libusb_interface& itf = c.interface[i];
    for (int a = 0; itf.altsetting && a < itf.num_altsetting; ++a) {
      const libusb_interface_descriptor& d = itf.altsetting[a];
      out.push_back(LIBUSB_DT_INTERFACE_SIZE);
      out.push_back(d.bDescriptorType);
      out.push_back(d.bInterfaceNumber);
      out.push_back(d.bAlternateSetting);
      out.push_back(d.bNumEndpoints);
      out.push_back(d.bInterfaceClass);
      out.push_back(d.bInterfaceSubClass);
      out.push_back(d.bInterfaceProtocol);
      out.push_back(d.iInterface);
      put_extra(out, d.extra, d.extra_length);
      for (int e = 0; d.endpoint && e < d.bNumEndpoints; ++e) {
        const libusb_endpoint_descriptor& ep = d.endpoint[e];
        const bool audio = ep.bLength >= LIBUSB_DT_ENDPOINT_AUDIO_SIZE;
        out.push_back(audio ? LIBUSB_DT_ENDPOINT_AUDIO_SIZE : LIBUSB_DT_ENDPOINT_SIZE);
        out.push_back(ep.bDescriptorType);
        out.push_back(ep.bEndpointAddress);
        out.push_back(ep.bmAttributes);
        put16(out, ep.wMaxPacketSize);
        out.push_back(ep.bInterval);
        if (audio) {
          out.push_back(ep.bRefresh);
          out.push_back(ep.bSynchAddress);
        }
        put_extra(out, ep.extra, ep.extra_length);
      }
    }
  }
  const size_t total = std::min<size_t>(out.size(), 0xffff);
  out[2] = static_cast<uint8_t>(total);
  out[3] = static_cast<uint8_t>(total >> 8);
  return out;
}

std::string libusb_error_text(int err) {
  return std::string(libusb_error_name(err)) + " (" + std::to_string(err) + ")";
}

}  // namespace devices
