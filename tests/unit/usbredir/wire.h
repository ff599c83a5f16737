// Raw usbredir bytes for tests and fuzzers that play a hostile peer: a hello as
// libusbredirparser itself writes it (host or guest side, QEMU's capabilities) and single
// packets with 64-bit ids written by hand, so they can say what no well-behaved parser would.
#pragma once

#include <usbredirparser.h>
#include <usbredirproto.h>

#include <cstdint>
#include <span>
#include <vector>

namespace usb::testing {

// The hello a peer's parser sends: usb-host side (`host`) or usb-guest side, with the
// capabilities QEMU and usbredirhost use (64-bit ids, 32-bit bulk lengths, ep_info packet sizes).
inline std::vector<uint8_t> usbredir_hello(bool host) {
  std::vector<uint8_t> bytes;
  usbredirparser* p = usbredirparser_create();
  p->priv = &bytes;
  p->log_func = [](void*, int, const char*) {};
  p->write_func = [](void* priv, uint8_t* data, int count) -> int {
    auto* out = static_cast<std::vector<uint8_t>*>(priv);
    out->insert(out->end(), data, data + count);
    return count;
  };
  uint32_t caps[USB_REDIR_CAPS_SIZE] = {};
  for (int cap : {usb_redir_cap_connect_device_version, usb_redir_cap_filter,
                  usb_redir_cap_device_disconnect_ack, usb_redir_cap_ep_info_max_packet_size,
                  usb_redir_cap_64bits_ids, usb_redir_cap_32bits_bulk_length})
    usbredirparser_caps_set_cap(caps, cap);
  static char version[] = "vusb-test-peer";
  usbredirparser_init(p, version, caps, USB_REDIR_CAPS_SIZE,
                      host ? usbredirparser_fl_usb_host : 0);
  usbredirparser_do_write(p);
  usbredirparser_destroy(p);
  return bytes;
}

// One packet (after a hello with 64-bit ids): the header, `size` bytes of the type header `h`
// (less than sizeof(H) for headers that shrink without a capability), then `data`.
template <typename H>
void usbredir_put(std::vector<uint8_t>& out, uint32_t type, uint64_t id, const H& h,
                  std::span<const uint8_t> data = {}, size_t size = sizeof(H)) {
  usb_redir_header header{type, static_cast<uint32_t>(size + data.size()), id};
  const auto* hb = reinterpret_cast<const uint8_t*>(&header);
  out.insert(out.end(), hb, hb + sizeof header);
  const auto* tb = reinterpret_cast<const uint8_t*>(&h);
  out.insert(out.end(), tb, tb + size);
  out.insert(out.end(), data.begin(), data.end());
}

}  // namespace usb::testing
