// HID class facts shared by the emulated HID devices (HID 1.11): class requests (7.2), class
// descriptor types (7.1), report types, and a small report descriptor writer (6.2.2, short items
// only). Header-only; no state.
#pragma once

#include <cstdint>
#include <vector>

namespace devices::hid {

constexpr uint8_t kGetReport = 0x01, kGetIdle = 0x02, kGetProtocol = 0x03;
constexpr uint8_t kSetReport = 0x09, kSetIdle = 0x0a, kSetProtocol = 0x0b;
constexpr uint8_t kDescHid = 0x21, kDescReport = 0x22;
constexpr uint8_t kReportInput = 1, kReportOutput = 2, kReportFeature = 3;

// Whether a class request's data direction is the one HID 1.11 (7.2) gives it: the GET requests
// read (an IN data stage), the SET requests write (OUT).
inline bool direction_matches(uint8_t request, bool in) {
  const bool reads = request == kGetReport || request == kGetIdle || request == kGetProtocol;
  return reads == in;
}

// Main item flags (6.2.2.5).
constexpr uint8_t kConstant = 0x01;
constexpr uint8_t kVariable = 0x02;  // Data, Variable, Absolute
constexpr uint8_t kRelative = 0x04;

// The 9-byte HID descriptor (6.2.1): bcdHID 1.11, no country, one report descriptor.
inline std::vector<uint8_t> hid_descriptor(size_t report_length) {
  return {9,
          kDescHid,
          0x11,
          0x01,
          0,
          1,
          kDescReport,
          static_cast<uint8_t>(report_length),
          static_cast<uint8_t>(report_length >> 8)};
}

class ReportWriter {
 public:
  std::vector<uint8_t> bytes;
  void item(uint8_t prefix, uint32_t value, int size) {
    const uint8_t code = size == 0 ? 0 : size == 1 ? 1 : size == 2 ? 2 : 3;
    bytes.push_back(static_cast<uint8_t>(prefix | code));
    for (int i = 0; i < size; ++i) bytes.push_back(static_cast<uint8_t>(value >> (8 * i)));
  }
  void usage_page(uint8_t page) { item(0x04, page, 1); }
  void usage(uint16_t u) { item(0x08, u, u > 0xff ? 2 : 1); }
  void usage_range(uint16_t lo, uint16_t hi) {
    item(0x18, lo, lo > 0xff ? 2 : 1);
    item(0x28, hi, hi > 0xff ? 2 : 1);
  }
  void collection(uint8_t kind) { item(0xa0, kind, 1); }
  void end() { item(0xc0, 0, 0); }
  void report_id(uint8_t id) { item(0x84, id, 1); }
  static int width(int32_t v) {
    if (v >= -128 && v <= 127) return 1;
    if (v >= -32768 && v <= 32767) return 2;
    return 4;
  }
  void logical(int32_t lo, int32_t hi) {
    item(0x14, static_cast<uint32_t>(lo), width(lo));
    item(0x24, static_cast<uint32_t>(hi), width(hi));
  }
  void physical(int32_t lo, int32_t hi) {
    item(0x34, static_cast<uint32_t>(lo), width(lo));
    item(0x44, static_cast<uint32_t>(hi), width(hi));
  }
  void size_count(uint8_t size, uint8_t count) {
    item(0x74, size, 1);
    item(0x94, count, 1);
  }
  void exponent(int8_t e) { item(0x54, static_cast<uint32_t>(e) & 0x0f, 1); }
  void unit(uint32_t u) { item(0x64, u, u > 0xff ? 2 : 1); }
  void unit_none() { item(0x64, 0, 1); }
  void input(uint8_t flags) { item(0x80, flags, 1); }
  void output(uint8_t flags) { item(0x90, flags, 1); }
  void feature(uint8_t flags) { item(0xb0, flags, 1); }
  // A named array: a Logical collection of selector usages, Logical Minimum 1 (6.2.2.7).
  void named_array(uint16_t property, uint16_t first, uint8_t n, bool input_report) {
    usage(property);
    logical(1, n);
    size_count(8, 1);
    collection(0x02);
    for (uint8_t i = 0; i < n; ++i) usage(static_cast<uint16_t>(first + i));
    input_report ? input(0x00) : feature(0x00);
    end();
  }
};

}  // namespace devices::hid
