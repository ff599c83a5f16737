// UvcReceiver: reassembles UVC payloads into frames the way uvcvideo does (a header with EOH, FID
// toggling per frame, EOF ending one) and reads the test pattern's frame counters — for tests of
// the emulated camera and of sharing it between VMs.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "devices/emulated/test_pattern.h"
#include "usb/uvc/uvc_abi.h"

namespace vusb::testing {

struct UvcReceiver {
  static constexpr uint32_t kNoCounter = 0xffffffff;  // a frame without a readable counter

  devices::TestPattern::Encoding encoding = devices::TestPattern::Encoding::kMjpeg;
  uint16_t width = 640;
  std::vector<uint8_t> current;
  std::optional<bool> fid;
  std::vector<std::vector<uint8_t>> frames;
  int bad_headers = 0;

  void payload(std::span<const uint8_t> p) {
    if (p.empty()) return;
    if (p.size() < 2 || p[0] < 2 || p[0] > p.size() || !(p[1] & usb::uvc::header::kEoh)) {
      ++bad_headers;
      return;
    }
    const bool f = p[1] & usb::uvc::header::kFid;
    if (fid && *fid != f && !current.empty()) {
      frames.push_back(std::move(current));  // a frame that ended without EOF
      current.clear();
    }
    fid = f;
    current.insert(current.end(), p.begin() + p[0], p.end());
    if (p[1] & usb::uvc::header::kEof) {
      frames.push_back(std::move(current));
      current.clear();
    }
  }
  std::vector<uint32_t> counters() const {
    std::vector<uint32_t> out;
    for (const auto& f : frames)
      out.push_back(devices::read_frame_counter(f, encoding, width).value_or(kNoCounter));
    return out;
  }
};

}  // namespace vusb::testing
