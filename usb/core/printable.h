// printable: a string that came from a peer (a bus id, a device name in an API request, a usbredir
// peer's version, an error built from them), made safe to put in a log line: control bytes
// (newlines, terminal escapes) become \xNN, and more than `max` bytes are cut with "...".
// A peer cannot forge log lines or drive the operator's terminal.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace usb {

inline std::string printable(std::string_view s, size_t max = 256) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() < max ? s.size() : max);
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == max) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f || c == '\\') {
      out += '\\';
      if (c == '\\') {
        out += '\\';
        continue;
      }
      out += 'x';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace usb
