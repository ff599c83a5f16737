#include "devices/emulated/test_pattern.h"

// jpeglib.h needs FILE and size_t declared first.
#include <fmt/format.h>
#include <jpeglib.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace devices {

namespace {

// 75% colour bars (ITU-R BT.601 Y'CbCr): white, yellow, cyan, green, magenta, red, blue, black.
struct Yuv {
  uint8_t y, u, v;
};
constexpr Yuv kBars[8] = {{180, 128, 128}, {162, 44, 142}, {131, 156, 44}, {112, 72, 58},
                          {84, 184, 198},  {65, 100, 212}, {35, 212, 114}, {16, 128, 128}};
constexpr size_t kCounterBits = 48;  // 16-bit magic + 32-bit counter
constexpr uint16_t kCounterRows = 8;
constexpr char kComPrefix[] = "vusb-frame ";
constexpr size_t kComDigits = 10;

uint8_t clamp_y(int v) {
  return static_cast<uint8_t>(std::clamp(v, 16, 235));
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void on_jpeg_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

}  // namespace

TestPattern::TestPattern(Encoding encoding, uint16_t width, uint16_t height)
    : encoding_(encoding), width_(width), height_(height) {}

void TestPattern::set_controls(int brightness, int contrast) {
  if (brightness == brightness_ && contrast == contrast_) return;
  brightness_ = brightness;
  contrast_ = contrast;
  jpeg_cache_.clear();
}

void TestPattern::draw(uint32_t phase, std::vector<uint8_t>& out) const {
  const size_t w = width_, h = height_;
  out.resize(w * h * 2);
  // Bars scroll left by width/kPeriod per frame; a box moves along the diagonal.
  const size_t shift = w * phase / kPeriod;
  const size_t box = std::max<size_t>(h / 8, 8);
  const size_t bx = (w - box) * phase / kPeriod;
  const size_t by = (h - box) * phase / kPeriod;
  for (size_t row = 0; row < h; ++row) {
    uint8_t* line = &out[row * w * 2];
    for (size_t x = 0; x < w; x += 2) {
      const Yuv& c = kBars[((x + shift) % w) * 8 / w];
      int y = c.y;
      uint8_t u = c.u, v = c.v;
      if (row >= by && row < by + box && x >= bx && x < bx + box) {
        y = 235;
        u = v = 128;
      }
      y = (y - 128) * contrast_ / 32 + 128 + brightness_;
      const uint8_t yy = clamp_y(y);
      line[x * 2 + 0] = yy;
      line[x * 2 + 1] = u;
      line[x * 2 + 2] = yy;
      line[x * 2 + 3] = v;
    }
  }
}

void TestPattern::stamp_counter(std::span<uint8_t> yuyv, uint16_t width, uint16_t height,
                                uint32_t counter) {
  const uint64_t bits = (uint64_t{kMagic} << 32) | counter;
  const size_t macropixels = std::min<size_t>(kCounterBits, width / 2);
  for (size_t row = 0; row < std::min<uint16_t>(kCounterRows, height); ++row) {
    uint8_t* line = &yuyv[row * width * 2];
    for (size_t i = 0; i < macropixels; ++i) {
      const bool one = (bits >> (kCounterBits - 1 - i)) & 1;
      uint8_t* p = line + i * 4;
      p[0] = p[2] = one ? 235 : 16;
      p[1] = p[3] = 128;
    }
  }
}

usb::Result<std::vector<uint8_t>> TestPattern::frame(uint32_t counter) {
  const uint32_t phase = counter % kPeriod;
  if (encoding_ == Encoding::kYuyv) {
    std::vector<uint8_t> out;
    draw(phase, out);
    stamp_counter(out, width_, height_, counter);
    return out;
  }
  auto cached = jpeg_cache_.find(phase);
  if (cached == jpeg_cache_.end()) {
    std::vector<uint8_t> picture;
    draw(phase, picture);
    auto jpeg = encode_jpeg(picture, width_, height_, 75);
    if (!jpeg) return std::unexpected(jpeg.error());
    ++encodes_;
    cached = jpeg_cache_.emplace(phase, std::move(*jpeg)).first;
  }
  const std::vector<uint8_t>& jpeg = cached->second;
  // SOI, then COM (JPEG B.2.4.5: FF FE, a two-byte length counting itself, the text), then the
  // rest of the encoding.
  const std::string text = fmt::format("{}{:0{}}", kComPrefix, counter, kComDigits);
  std::vector<uint8_t> out;
  out.reserve(jpeg.size() + text.size() + 4);
  out.insert(out.end(), {0xff, 0xd8, 0xff, 0xfe});
  const size_t seg = text.size() + 2;
  out.push_back(static_cast<uint8_t>(seg >> 8));
  out.push_back(static_cast<uint8_t>(seg));
  out.insert(out.end(), text.begin(), text.end());
  out.insert(out.end(), jpeg.begin() + 2, jpeg.end());
  return out;
}

usb::Result<std::vector<uint8_t>> encode_jpeg(std::span<const uint8_t> yuyv, uint16_t width,
                                              uint16_t height, int quality) {
  if (width == 0 || height == 0 || width % 2 || yuyv.size() < size_t{width} * height * 2) {
    return usb::Error::make(usb::Error::Code::kInvalidArgument,
                            fmt::format("jpeg: {}x{} from {} bytes", width, height, yuyv.size()));
  }
  // Everything the error path touches exists before setjmp (longjmp skips no destructor).
  std::vector<uint8_t> row(size_t{width} * 3);
  std::vector<uint8_t> result;
  jpeg_compress_struct cinfo{};
  JpegError err{};
  unsigned char* mem = nullptr;
  unsigned long mem_size = 0;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = on_jpeg_error;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(mem);
    return usb::Error::make(usb::Error::Code::kIo, std::string("jpeg: ") + err.message);
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &mem, &mem_size);
  cinfo.image_width = width;
  cinfo.image_height = height;
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_YCbCr;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    const uint8_t* src = &yuyv[size_t{cinfo.next_scanline} * width * 2];
    for (size_t x = 0; x < width; x += 2) {
      const uint8_t y0 = src[x * 2], u = src[x * 2 + 1], y1 = src[x * 2 + 2], v = src[x * 2 + 3];
      uint8_t* d = &row[x * 3];
      d[0] = y0;
      d[1] = u;
      d[2] = v;
      d[3] = y1;
      d[4] = u;
      d[5] = v;
    }
    JSAMPROW rows[1] = {row.data()};
    jpeg_write_scanlines(&cinfo, rows, 1);
  }
  jpeg_finish_compress(&cinfo);
  result.assign(mem, mem + mem_size);
  jpeg_destroy_compress(&cinfo);
  std::free(mem);
  return result;
}

std::optional<uint32_t> read_frame_counter(std::span<const uint8_t> frame,
                                           TestPattern::Encoding encoding, uint16_t width) {
  if (encoding == TestPattern::Encoding::kYuyv) {
    if (width / 2 < kCounterBits || frame.size() < kCounterBits * 4) return std::nullopt;
    uint64_t bits = 0;
    for (size_t i = 0; i < kCounterBits; ++i) bits = (bits << 1) | (frame[i * 4] > 128 ? 1 : 0);
    if ((bits >> 32) != TestPattern::kMagic) return std::nullopt;
    return static_cast<uint32_t>(bits);
  }
  const size_t prefix = sizeof(kComPrefix) - 1;
  const size_t need = 6 + prefix + kComDigits;
  if (frame.size() < need || frame[0] != 0xff || frame[1] != 0xd8 || frame[2] != 0xff ||
      frame[3] != 0xfe) {
    return std::nullopt;
  }
  if (((size_t{frame[4]} << 8) | frame[5]) != prefix + kComDigits + 2) return std::nullopt;
  if (std::memcmp(&frame[6], kComPrefix, prefix) != 0) return std::nullopt;
  uint64_t value = 0;
  for (size_t i = 0; i < kComDigits; ++i) {
    const uint8_t c = frame[6 + prefix + i];
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(value);
}

}  // namespace devices
