// libFuzzer target: the UVC decoders — VideoStreaming class descriptors (a remote camera's), the
// probe/commit block (a guest's SET_CUR data) — with round-trip invariants, and the two places
// that act on guest bytes: the emulated camera's class requests and vusbd's camera-sharing rules.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "devices/emulated/uvc_camera.h"
#include "usb/core/transfer.h"
#include "usb/uvc/uvc_streaming.h"
#include "vmm-frontend/sharing/uvc_sharing.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

namespace uvc = usb::uvc;

void fuzz_descriptors(std::span<const uint8_t> in) {
  auto vs = uvc::StreamingInterface::parse(1, in);
  if (!vs) return;
  // What parses builds back into descriptors that parse to the same thing (the builder emits the
  // fields the parser keeps, in its own layout).
  for (auto& f : vs->formats) {
    for (auto& fr : f.frames) {
      if (fr.continuous && fr.intervals.size() != 3) return;
      if (!fr.continuous && (fr.intervals.empty() || fr.intervals.size() > 60)) return;
      (void)fr.nearest(333'333);
      (void)fr.offers(0);
    }
    if (f.frames.size() > 255) return;
  }
  if (vs->formats.size() > 200) return;
  auto again = uvc::StreamingInterface::parse(1, vs->build());
  check(again.has_value());
  // The builder writes uncompressed formats for every non-MJPEG kind.
  for (auto& f : vs->formats)
    if (f.kind == uvc::FormatKind::kOther) f.kind = uvc::FormatKind::kUncompressed;
  for (size_t i = 0; i < vs->formats.size(); ++i) {
    check(again->formats[i].index == vs->formats[i].index);
    check(again->formats[i].frames == vs->formats[i].frames);
  }
}

void fuzz_probe(std::span<const uint8_t> in) {
  auto c = uvc::StreamingControl::parse(in);
  if (!c) {
    check(in.size() < uvc::probe::kSize10);
    return;
  }
  auto back = uvc::StreamingControl::parse(c->encode());
  check(back.has_value() && *back == *c);
}

// Class requests to the camera: setup from the first 8 bytes, the rest is the OUT data stage.
void fuzz_camera(std::span<const uint8_t> in) {
  if (in.size() < 8) return;
  static devices::UvcCamera* camera = [] {
    auto* cam = new devices::UvcCamera();
    cam->set_configuration(1, [](usb::Status) {});
    return cam;
  }();
  usb::SetupPacket s{static_cast<uint8_t>((in[0] & 0x80) | 0x21), in[1],
                     static_cast<uint16_t>(in[2] | in[3] << 8),
                     static_cast<uint16_t>(in[4] | in[5] << 8),
                     static_cast<uint16_t>((in[6] | in[7] << 8) & 0x3ff)};
  auto t = usb::Transfer::control(s.request_type & 0x80, s);
  const auto data = in.subspan(8);
  auto buf = t->buffer();
  for (size_t i = 0; i < buf.size() && i < data.size(); ++i) buf[i] = data[i];
  bool done = false;
  t->set_completion([&](usb::Transfer& x) {
    done = true;
    check(x.actual_length() <= s.length);
  });
  camera->submit(*t);
  check(done);
}

void fuzz_sharing(std::span<const uint8_t> in) {
  if (in.size() < 10) return;
  static vusbd::UvcSharing* rules = [] {
    auto* r = new vusbd::UvcSharing({devices::UvcCamera::streaming_interface({})});
    return r;
  }();
  usb::SetupPacket s{static_cast<uint8_t>((in[0] & 0x80) | 0x21), in[1],
                     static_cast<uint16_t>(in[2] | in[3] << 8),
                     static_cast<uint16_t>(in[4] | in[5] << 8),
                     static_cast<uint16_t>(in[6] | in[7] << 8)};
  const auto data = in.subspan(10);
  const char* vm = (in[8] & 1) ? "vm1" : "vm2";
  const char* streamer = (in[9] & 3) == 0 ? "" : (in[9] & 1) ? "vm1" : "vm2";
  auto d = rules->decide(vm, s, data, streamer);
  if (d.kind == vusbd::UvcSharing::Decision::Kind::kAnswer) check(d.reply.size() <= s.length);
  rules->on_forwarded(vm, s, data, (in[9] & 4) ? usb::Status::kOk : usb::Status::kStall);
  if (in[9] & 8) rules->stop_bulk_endpoint(vm, in[4]);
  if (in[9] & 16) rules->forget(vm);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::span<const uint8_t> in(data + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      fuzz_descriptors(in);
      break;
    case 1:
      fuzz_probe(in);
      break;
    case 2:
      fuzz_camera(in);
      break;
    default:
      fuzz_sharing(in);
      break;
  }
  return 0;
}
