// The VideoStreaming side of UVC as data: the formats and frames a streaming interface offers
// (built into, and parsed from, its class-specific descriptors) and the probe/commit block that
// negotiates one of them. The emulated camera builds its descriptors from these; vusbd parses a
// shared camera's descriptors and probe blocks with them. Parsers take hostile bytes (a remote
// device's descriptors, a guest's SET_CUR data) and bound every length.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "usb/core/descriptors.h"
#include "usb/core/error.h"
#include "usb/uvc/uvc_abi.h"

namespace usb::uvc {

// The probe / commit control (4.3.1.1). Fields in host order; intervals in 100 ns units.
struct StreamingControl {
  uint16_t hint = 0;
  uint8_t format_index = 0;
  uint8_t frame_index = 0;
  uint32_t frame_interval = 0;
  uint16_t key_frame_rate = 0;
  uint16_t p_frame_rate = 0;
  uint16_t comp_quality = 0;
  uint16_t comp_window_size = 0;
  uint16_t delay = 0;
  uint32_t max_video_frame_size = 0;
  uint32_t max_payload_transfer_size = 0;
  uint32_t clock_frequency = 0;
  uint8_t framing_info = 0;
  uint8_t preferred_version = 0;
  uint8_t min_version = 0;
  uint8_t max_version = 0;

  // At least the 26 bytes of UVC 1.0; fields past the end stay 0. Longer blocks (1.5: 48) are
  // accepted and their extra fields ignored.
  static Result<StreamingControl> parse(std::span<const uint8_t> bytes);
  // Writes the first out.size() bytes of the 34-byte 1.1 layout (zeros past 34).
  void encode(std::span<uint8_t> out) const;
  std::vector<uint8_t> encode(size_t size = probe::kSize11) const;
  // Same format, frame and interval: what two VMs must agree on to share one stream.
  bool same_stream(const StreamingControl& o) const {
    return format_index == o.format_index && frame_index == o.frame_index &&
           frame_interval == o.frame_interval;
  }
  friend bool operator==(const StreamingControl&, const StreamingControl&) = default;
};

enum class FormatKind : uint8_t { kMjpeg, kUncompressed, kOther };

struct FrameInfo {
  uint8_t index = 0;  // bFrameIndex, from 1
  uint16_t width = 0;
  uint16_t height = 0;
  uint32_t min_bit_rate = 0;
  uint32_t max_bit_rate = 0;
  uint32_t max_frame_size = 0;  // dwMaxVideoFrameBufferSize
  uint32_t default_interval = 0;
  // Discrete intervals (bFrameIntervalType > 0), shortest first as the spec asks; or a continuous
  // range as {min, max, step} with `continuous` set.
  std::vector<uint32_t> intervals;
  bool continuous = false;

  // Whether `interval` is one this frame offers; nearest() picks the closest that is.
  bool offers(uint32_t interval) const;
  uint32_t nearest(uint32_t interval) const;
  friend bool operator==(const FrameInfo&, const FrameInfo&) = default;
};

struct FormatInfo {
  uint8_t index = 0;  // bFormatIndex, from 1
  FormatKind kind = FormatKind::kOther;
  std::array<uint8_t, 16> guid{};  // uncompressed formats
  uint8_t bits_per_pixel = 0;      // uncompressed formats
  uint8_t default_frame = 1;
  std::vector<FrameInfo> frames;

  const FrameInfo* find_frame(uint8_t index) const;
  friend bool operator==(const FormatInfo&, const FormatInfo&) = default;
};

// One VideoStreaming interface: its number, its formats and (from the input header) the
// endpoint it streams on.
struct StreamingInterface {
  uint8_t interface = 0;
  uint8_t endpoint = 0;       // bEndpointAddress of the input header
  uint8_t terminal_link = 0;  // the output terminal it belongs to
  std::vector<FormatInfo> formats;

  const FormatInfo* find_format(uint8_t index) const;
  const FrameInfo* find_frame(uint8_t format, uint8_t frame) const;
  // The class-specific VS descriptors (input header, formats, frames, one color matching
  // descriptor per format), to go after the interface's alternate setting 0.
  std::vector<uint8_t> build() const;
  // Parses that block (the `extra` bytes of alternate setting 0). Unknown descriptors are skipped;
  // a format or frame descriptor that is cut short is an error.
  static Result<StreamingInterface> parse(uint8_t interface, std::span<const uint8_t> extra);
  friend bool operator==(const StreamingInterface&, const StreamingInterface&) = default;
};

// Every VideoStreaming interface of a configuration (class 0x0e, subclass 0x02, alternate 0),
// parsed; interfaces whose descriptors do not parse are left out.
std::vector<StreamingInterface> find_streaming_interfaces(const ConfigurationDescriptor& config);

// "MJPEG 640x480 @30" for logs (the interval as frames per second).
std::string describe(const StreamingInterface& vs, const StreamingControl& control);

}  // namespace usb::uvc
