// devices::TestPattern: the pictures the emulated camera sends — moving colour bars and a moving
// box — with a frame counter in every frame, so a receiver can count drops and duplicates:
//  - YUYV (YUY2, 4:2:2): the first 8 rows start with 48 macropixels (two pixels each) that spell
//    the magic 0x5655 ("VU") and then the 32-bit counter, most significant bit first, as white
//    (Y 235) and black (Y 16) macropixels;
//  - MJPEG: a JPEG (libjpeg-turbo, quality 75, 4:2:0) whose first segment after SOI is a COM
//    segment holding the text "vusb-frame NNNNNNNNNN" (the counter, ten decimal digits).
// The picture moves with the counter and repeats every kPeriod frames, so JPEG encodings are
// cached per phase and a frame costs a copy after the first period. Brightness is added to Y and
// contrast scales Y around 128 (32 = 1.0), as the processing unit's controls ask.
//
// Ownership and threading: a value owned by the camera; not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "usb/core/error.h"

namespace devices {

class TestPattern {
 public:
  enum class Encoding : uint8_t { kYuyv, kMjpeg };
  static constexpr uint32_t kPeriod = 32;
  static constexpr uint16_t kMagic = 0x5655;

  TestPattern(Encoding encoding, uint16_t width, uint16_t height);

  // Frame `counter` with the current picture controls.
  usb::Result<std::vector<uint8_t>> frame(uint32_t counter);
  // Picture controls; a change drops the cached encodings.
  void set_controls(int brightness, int contrast);

  Encoding encoding() const { return encoding_; }
  uint16_t width() const { return width_; }
  uint16_t height() const { return height_; }
  // JPEG encodings done so far (tests see the cache work).
  uint64_t encodes() const { return encodes_; }

 private:
  // The uncompressed picture of a phase, counter bits excluded.
  void draw(uint32_t phase, std::vector<uint8_t>& yuyv) const;
  static void stamp_counter(std::span<uint8_t> yuyv, uint16_t width, uint16_t height,
                            uint32_t counter);

  Encoding encoding_;
  uint16_t width_;
  uint16_t height_;
  int brightness_ = 0;
  int contrast_ = 32;
  std::map<uint32_t, std::vector<uint8_t>> jpeg_cache_;  // phase -> JPEG without the COM segment
  uint64_t encodes_ = 0;
};

// YUYV 4:2:2 → JPEG (libjpeg-turbo). width must be even; yuyv holds width*height*2 bytes.
usb::Result<std::vector<uint8_t>> encode_jpeg(std::span<const uint8_t> yuyv, uint16_t width,
                                              uint16_t height, int quality);

// The counter a frame carries, or nothing when the frame does not carry one (cut short, another
// picture, corrupted marker).
std::optional<uint32_t> read_frame_counter(std::span<const uint8_t> frame,
                                           TestPattern::Encoding encoding, uint16_t width);

}  // namespace devices
