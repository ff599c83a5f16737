// libFuzzer target: every USB/IP decoder in usb/wire/usbip_codec.h over the same input; each
// successful decode is re-encoded and must decode to the same value (a violation traps).
#include <cstddef>
#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "usb/wire/usbip_codec.h"

namespace {

namespace ip = usb::wire::usbip;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

uint32_t be32(std::span<const uint8_t> in, size_t off) {
  if (in.size() < off + 4) return 0;
  return (uint32_t{in[off]} << 24) | (uint32_t{in[off + 1]} << 16) | (uint32_t{in[off + 2]} << 8) |
         in[off + 3];
}

void fuzz_urb(std::span<const uint8_t> in, const ip::Limits& limits) {
  auto pdu = ip::decode_urb_header(in, limits);
  if (!pdu) {
    check(!pdu.error().message.empty());
    return;
  }
  const auto bytes = std::visit([](const auto& p) { return ip::encode(p); }, *pdu);
  // Everything but padding survives: the first 20 bytes always, the command fields per type.
  check(std::equal(bytes.begin(), bytes.begin() + 20, in.begin()));
  auto again = ip::decode_urb_header(bytes, limits);
  check(again.has_value() && *again == *pdu);
  if (const auto* s = std::get_if<ip::CmdSubmit>(&*pdu)) {
    check(std::equal(bytes.begin(), bytes.end(), in.begin()));
    check(ip::submit_payload_length(*s) <= limits.max_transfer_length);
    check(ip::submit_iso_length(*s) <= limits.max_iso_packets * ip::kIsoDescriptorSize);
  } else if (const auto* r = std::get_if<ip::RetSubmit>(&*pdu)) {
    check(std::equal(bytes.begin(), bytes.begin() + 40, in.begin()));
    check(ip::ret_submit_payload_length(*r, ip::kDirIn) <= limits.max_transfer_length);
    check(ip::ret_submit_iso_length(*r) <= limits.max_iso_packets * ip::kIsoDescriptorSize);
  } else {
    check(std::equal(bytes.begin(), bytes.begin() + 24, in.begin()));
  }
}

void fuzz_op(std::span<const uint8_t> in) {
  if (auto h = ip::decode_op_header(in)) {
    const auto b = ip::encode_op_header(*h);
    check(std::equal(b.begin(), b.end(), in.begin()));
  }
  if (auto d = ip::decode_device_record(in)) {
    const auto b = ip::encode_device_record(*d);
    auto again = ip::decode_device_record(b);
    check(again.has_value() && *again == *d);
    check(std::equal(b.begin() + ip::devrec::kBusNum, b.end(), in.begin() + ip::devrec::kBusNum));
  }
  if (auto busid = ip::decode_import_request(in)) {
    auto b = ip::encode_import_request(*busid);
    check(b.has_value());
    auto again = ip::decode_import_request(*b);
    check(again.has_value() && *again == *busid);
    const auto reply = ip::encode_import_reply(ip::kStOk, nullptr);
    check(reply.size() == ip::kOpHeaderSize);
  }
  if (in.size() >= ip::kInterfaceRecordSize) {
    const auto r = ip::decode_interface_record(in.first<ip::kInterfaceRecordSize>());
    const auto b = ip::encode_interface_record(r);
    check(std::equal(b.begin(), b.begin() + 3, in.begin()) && b[3] == 0);
  }
  if (auto list = ip::decode_devlist_reply(in)) {
    const auto b = ip::encode_devlist_reply(*list);
    check(b.size() == in.size());
    auto again = ip::decode_devlist_reply(b);
    check(again.has_value() && *again == *list);
  }
}

void fuzz_iso(std::span<const uint8_t> in) {
  // First 4 bytes choose the buffer length; the rest are descriptors.
  const uint32_t buffer_length = be32(in, 0);
  const auto body = in.size() >= 4 ? in.subspan(4) : std::span<const uint8_t>{};
  auto descs = ip::decode_iso_descriptors(body, buffer_length);
  if (!descs) {
    check(descs.error().code == usb::Error::Code::kMalformed);
    return;
  }
  check(descs->size() * ip::kIsoDescriptorSize == body.size());
  for (const auto& d : *descs) {
    check(uint64_t{d.offset} + d.length <= buffer_length && d.actual_length <= d.length);
  }
  std::vector<uint8_t> out(body.size());
  ip::encode_iso_descriptors(*descs, out);
  check(std::equal(out.begin(), out.end(), body.begin()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);
  fuzz_urb(in, ip::Limits{});
  fuzz_urb(in, ip::Limits{4096, 8});
  fuzz_op(in);
  // The same bytes after an op header, as a peer would frame them.
  if (size > ip::kOpHeaderSize) fuzz_op(in.subspan(ip::kOpHeaderSize));
  fuzz_iso(in);
  return 0;
}
