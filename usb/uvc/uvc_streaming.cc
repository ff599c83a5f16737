#include "usb/uvc/uvc_streaming.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

#include "usb/core/byte_order.h"

namespace usb::uvc {

namespace {

Error malformed(std::string what) {
  return Error{Error::Code::kMalformed, "uvc: " + std::move(what)};
}

// Sizes of the class-specific VS descriptors (3.9.2.1, UVC payload MJPEG 3.1.1 / 3.1.2,
// Uncompressed 3.1.1 / 3.1.2, 3.9.2.6).
constexpr size_t kInputHeaderBase = 13;
constexpr size_t kFormatMjpegSize = 11;
constexpr size_t kFormatUncompressedSize = 27;
constexpr size_t kFrameBase = 26;
constexpr size_t kColorMatchingSize = 6;

void put16(std::vector<uint8_t>& v, uint16_t x) {
  v.push_back(static_cast<uint8_t>(x));
  v.push_back(static_cast<uint8_t>(x >> 8));
}
void put32(std::vector<uint8_t>& v, uint32_t x) {
  for (int i = 0; i < 4; ++i) v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}

void build_frame(std::vector<uint8_t>& out, const FormatInfo& format, const FrameInfo& f) {
  const size_t n = f.continuous ? 3 : f.intervals.size();
  out.push_back(static_cast<uint8_t>(kFrameBase + 4 * n));
  out.push_back(kCsInterface);
  out.push_back(format.kind == FormatKind::kMjpeg ? vs::kFrameMjpeg : vs::kFrameUncompressed);
  out.push_back(f.index);
  out.push_back(0);  // bmCapabilities: no still image, fixed frame rate not claimed
  put16(out, f.width);
  put16(out, f.height);
  put32(out, f.min_bit_rate);
  put32(out, f.max_bit_rate);
  put32(out, f.max_frame_size);
  put32(out, f.default_interval);
  out.push_back(f.continuous ? 0 : static_cast<uint8_t>(n));
  for (uint32_t i : f.intervals) put32(out, i);
}

}  // namespace

// --- StreamingControl ---

Result<StreamingControl> StreamingControl::parse(std::span<const uint8_t> b) {
  if (b.size() < probe::kSize10) {
    return std::unexpected(
        malformed(fmt::format("probe/commit block of {} bytes (at least 26)", b.size())));
  }
  StreamingControl c;
  c.hint = load_le16(&b[probe::kHint]);
  c.format_index = b[probe::kFormatIndex];
  c.frame_index = b[probe::kFrameIndex];
  c.frame_interval = load_le32(&b[probe::kFrameInterval]);
  c.key_frame_rate = load_le16(&b[probe::kKeyFrameRate]);
  c.p_frame_rate = load_le16(&b[probe::kPFrameRate]);
  c.comp_quality = load_le16(&b[probe::kCompQuality]);
  c.comp_window_size = load_le16(&b[probe::kCompWindowSize]);
  c.delay = load_le16(&b[probe::kDelay]);
  c.max_video_frame_size = load_le32(&b[probe::kMaxVideoFrameSize]);
  c.max_payload_transfer_size = load_le32(&b[probe::kMaxPayloadTransfer]);
  if (b.size() >= probe::kSize11) {
    c.clock_frequency = load_le32(&b[probe::kClockFrequency]);
    c.framing_info = b[probe::kFramingInfo];
    c.preferred_version = b[probe::kPreferredVersion];
    c.min_version = b[probe::kMinVersion];
    c.max_version = b[probe::kMaxVersion];
  }
  return c;
}

void StreamingControl::encode(std::span<uint8_t> out) const {
  std::array<uint8_t, probe::kSize11> b{};
  store_le16(&b[probe::kHint], hint);
  b[probe::kFormatIndex] = format_index;
  b[probe::kFrameIndex] = frame_index;
  store_le32(&b[probe::kFrameInterval], frame_interval);
  store_le16(&b[probe::kKeyFrameRate], key_frame_rate);
  store_le16(&b[probe::kPFrameRate], p_frame_rate);
  store_le16(&b[probe::kCompQuality], comp_quality);
  store_le16(&b[probe::kCompWindowSize], comp_window_size);
  store_le16(&b[probe::kDelay], delay);
  store_le32(&b[probe::kMaxVideoFrameSize], max_video_frame_size);
  store_le32(&b[probe::kMaxPayloadTransfer], max_payload_transfer_size);
  store_le32(&b[probe::kClockFrequency], clock_frequency);
  b[probe::kFramingInfo] = framing_info;
  b[probe::kPreferredVersion] = preferred_version;
  b[probe::kMinVersion] = min_version;
  b[probe::kMaxVersion] = max_version;
  const size_t n = std::min(out.size(), b.size());
  std::copy_n(b.begin(), n, out.begin());
  std::fill(out.begin() + static_cast<std::ptrdiff_t>(n), out.end(), 0);
}

std::vector<uint8_t> StreamingControl::encode(size_t size) const {
  std::vector<uint8_t> out(size);
  encode(std::span<uint8_t>(out));
  return out;
}

// --- FrameInfo / FormatInfo ---

bool FrameInfo::offers(uint32_t interval) const {
  if (continuous) {
    if (intervals.size() < 3 || interval < intervals[0] || interval > intervals[1]) return false;
    const uint32_t step = intervals[2];
    return step == 0 || (interval - intervals[0]) % step == 0;
  }
  return std::find(intervals.begin(), intervals.end(), interval) != intervals.end();
}

uint32_t FrameInfo::nearest(uint32_t interval) const {
  if (continuous) {
    if (intervals.size() < 3) return default_interval;
    const uint32_t lo = intervals[0], hi = std::max(intervals[0], intervals[1]);
    const uint32_t step = intervals[2];
    uint32_t v = std::clamp(interval, lo, hi);
    if (step) v = lo + (v - lo) / step * step;
    return v;
  }
  if (intervals.empty()) return default_interval;
  uint32_t best = intervals.front();
  for (uint32_t i : intervals) {
    const auto d = [&](uint32_t x) { return x > interval ? x - interval : interval - x; };
    if (d(i) < d(best)) best = i;
  }
  return best;
}

const FrameInfo* FormatInfo::find_frame(uint8_t idx) const {
  for (const auto& f : frames)
    if (f.index == idx) return &f;
  return nullptr;
}

// --- StreamingInterface ---

const FormatInfo* StreamingInterface::find_format(uint8_t idx) const {
  for (const auto& f : formats)
    if (f.index == idx) return &f;
  return nullptr;
}

const FrameInfo* StreamingInterface::find_frame(uint8_t format, uint8_t frame) const {
  const FormatInfo* f = find_format(format);
  return f ? f->find_frame(frame) : nullptr;
}

std::vector<uint8_t> StreamingInterface::build() const {
  std::vector<uint8_t> body;
  for (const auto& fmt : formats) {
    if (fmt.kind == FormatKind::kMjpeg) {
      body.push_back(kFormatMjpegSize);
      body.push_back(kCsInterface);
      body.push_back(vs::kFormatMjpeg);
      body.push_back(fmt.index);
      body.push_back(static_cast<uint8_t>(fmt.frames.size()));
      body.push_back(0x01);  // bmFlags: FixedSizeSamples
      body.push_back(fmt.default_frame);
      body.insert(body.end(), {0, 0, 0, 0});  // aspect ratio x/y, interlace flags, copy protect
    } else {
      body.push_back(kFormatUncompressedSize);
      body.push_back(kCsInterface);
      body.push_back(vs::kFormatUncompressed);
      body.push_back(fmt.index);
      body.push_back(static_cast<uint8_t>(fmt.frames.size()));
      body.insert(body.end(), fmt.guid.begin(), fmt.guid.end());
      body.push_back(fmt.bits_per_pixel);
      body.push_back(fmt.default_frame);
      body.insert(body.end(), {0, 0, 0, 0});
    }
    for (const auto& frame : fmt.frames) build_frame(body, fmt, frame);
    // Color matching (3.9.2.6): BT.709 primaries and transfer, SMPTE 170M matrix (the defaults).
    body.insert(body.end(), {kColorMatchingSize, kCsInterface, vs::kColorFormat, 1, 1, 4});
  }
  std::vector<uint8_t> out;
  const size_t header = kInputHeaderBase + formats.size();
  out.push_back(static_cast<uint8_t>(header));
  out.push_back(kCsInterface);
  out.push_back(vs::kInputHeader);
  out.push_back(static_cast<uint8_t>(formats.size()));
  put16(out, static_cast<uint16_t>(header + body.size()));
  out.push_back(endpoint);
  out.push_back(0);  // bmInfo: no dynamic format change
  out.push_back(terminal_link);
  out.push_back(0);                                              // bStillCaptureMethod: none
  out.push_back(0);                                              // bTriggerSupport
  out.push_back(0);                                              // bTriggerUsage
  out.push_back(1);                                              // bControlSize
  for (size_t i = 0; i < formats.size(); ++i) out.push_back(0);  // bmaControls
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

Result<StreamingInterface> StreamingInterface::parse(uint8_t interface,
                                                     std::span<const uint8_t> extra) {
  StreamingInterface vs_if;
  vs_if.interface = interface;
  bool header_seen = false;
  size_t pos = 0;
  while (pos + 2 <= extra.size()) {
    const size_t len = extra[pos];
    if (len < 2 || pos + len > extra.size()) {
      return std::unexpected(
          malformed(fmt::format("descriptor at offset {} of length {}", pos, len)));
    }
    const auto d = extra.subspan(pos, len);
    pos += len;
    if (d[1] != kCsInterface || len < 3) continue;
    switch (d[2]) {
      case vs::kInputHeader:
        if (len < kInputHeaderBase) return std::unexpected(malformed("short input header"));
        vs_if.endpoint = d[6];
        vs_if.terminal_link = d[8];
        header_seen = true;
        break;
      case vs::kFormatMjpeg:
        if (len < kFormatMjpegSize) return std::unexpected(malformed("short MJPEG format"));
        vs_if.formats.push_back(
            {.index = d[3], .kind = FormatKind::kMjpeg, .default_frame = d[6], .frames = {}});
        break;
      case vs::kFormatUncompressed: {
        if (len < kFormatUncompressedSize) {
          return std::unexpected(malformed("short uncompressed format"));
        }
        FormatInfo f{.index = d[3], .kind = FormatKind::kUncompressed, .frames = {}};
        std::copy_n(d.begin() + 5, 16, f.guid.begin());
        f.bits_per_pixel = d[21];
        f.default_frame = d[22];
        vs_if.formats.push_back(std::move(f));
        break;
      }
      case vs::kFrameMjpeg:
      case vs::kFrameUncompressed: {
        if (len < kFrameBase) return std::unexpected(malformed("short frame descriptor"));
        if (vs_if.formats.empty()) return std::unexpected(malformed("frame before any format"));
        FormatInfo& fmt = vs_if.formats.back();
        const bool matches = (d[2] == vs::kFrameMjpeg) == (fmt.kind == FormatKind::kMjpeg);
        if (!matches) return std::unexpected(malformed("frame of another format's type"));
        FrameInfo fr;
        fr.index = d[3];
        fr.width = load_le16(&d[5]);
        fr.height = load_le16(&d[7]);
        fr.min_bit_rate = load_le32(&d[9]);
        fr.max_bit_rate = load_le32(&d[13]);
        fr.max_frame_size = load_le32(&d[17]);
        fr.default_interval = load_le32(&d[21]);
        const size_t type = d[25];
        const size_t n = type == 0 ? 3 : type;
        if (len < kFrameBase + 4 * n) {
          return std::unexpected(
              malformed(fmt::format("frame {} lists {} intervals in {} bytes", fr.index, n, len)));
        }
        fr.continuous = type == 0;
        for (size_t i = 0; i < n; ++i) fr.intervals.push_back(load_le32(&d[kFrameBase + 4 * i]));
        fmt.frames.push_back(std::move(fr));
        break;
      }
      default:
        break;  // still image frames, color matching, vendor formats: not needed here
    }
  }
  if (!header_seen) return std::unexpected(malformed("no VS input header"));
  return vs_if;
}

std::vector<StreamingInterface> find_streaming_interfaces(const ConfigurationDescriptor& config) {
  std::vector<StreamingInterface> out;
  for (const auto& intf : config.interfaces) {
    if (intf.alternate != 0 || intf.interface_class != kClassVideo ||
        intf.interface_subclass != kSubclassVideoStreaming) {
      continue;
    }
    if (auto parsed = StreamingInterface::parse(intf.number, intf.extra)) {
      out.push_back(std::move(*parsed));
    }
  }
  return out;
}

std::string describe(const StreamingInterface& vs_if, const StreamingControl& c) {
  const FormatInfo* fmt = vs_if.find_format(c.format_index);
  const FrameInfo* frame = fmt ? fmt->find_frame(c.frame_index) : nullptr;
  const char* kind = !fmt                                     ? "format ?"
                     : fmt->kind == FormatKind::kMjpeg        ? "MJPEG"
                     : fmt->kind == FormatKind::kUncompressed ? "uncompressed"
                                                              : "other";
  const double fps = c.frame_interval ? 1e7 / c.frame_interval : 0.0;
  if (!frame) {
    return fmt::format("{} #{} frame #{} @{:.1f}", kind, c.format_index, c.frame_index, fps);
  }
  return fmt::format("{} {}x{} @{:.1f}", kind, frame->width, frame->height, fps);
}

}  // namespace usb::uvc
