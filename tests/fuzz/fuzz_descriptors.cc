// libFuzzer target: every descriptor decoder in usb/core/descriptors.h over the same input, with
// round-trip invariants checked on every successful decode (a violation traps).
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "usb/core/descriptors.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool has_unpaired_surrogate(std::span<const uint8_t> units) {
  for (size_t i = 0; i + 1 < units.size(); i += 2) {
    const unsigned u = units[i] | (units[i + 1] << 8);
    if (u >= 0xd800 && u <= 0xdbff) {
      if (i + 3 < units.size()) {
        const unsigned low = units[i + 2] | (units[i + 3] << 8);
        if (low >= 0xdc00 && low <= 0xdfff) {
          i += 2;
          continue;
        }
      }
      return true;
    }
    if (u >= 0xdc00 && u <= 0xdfff) return true;
  }
  return false;
}

void fuzz_device(std::span<const uint8_t> in) {
  auto d = usb::DeviceDescriptor::parse(in);
  if (!d) {
    check(d.error().code == usb::Error::Code::kMalformed && !d.error().message.empty());
    return;
  }
  const auto b = d->build();
  check(in.size() >= b.size() && std::equal(b.begin(), b.end(), in.begin()));
  auto again = usb::DeviceDescriptor::parse(b);
  check(again.has_value() && *again == *d);
}

void fuzz_configuration(std::span<const uint8_t> in) {
  auto c = usb::ConfigurationDescriptor::parse(in);
  if (!c) {
    check(c.error().code == usb::Error::Code::kMalformed && !c.error().message.empty());
    return;
  }
  const size_t total = in[2] | (in[3] << 8);
  const auto b = c->build();
  // Every descriptor keeps its length, so the rebuilt set is exactly wTotalLength long; only
  // bNumEndpoints may be corrected.
  check(b.size() == total);
  check(std::equal(b.begin(), b.begin() + 2, in.begin()));
  auto again = usb::ConfigurationDescriptor::parse(b);
  check(again.has_value() && *again == *c);
  check(again->build() == b);
  // The lookup helpers stay consistent with the parsed list.
  for (const auto& intf : c->interfaces) {
    check(c->find(intf.number, intf.alternate) != nullptr);
    check(c->alternate_count(intf.number) >= 1);
  }
}

void fuzz_bos(std::span<const uint8_t> in) {
  auto bos = usb::BosDescriptor::parse(in);
  if (!bos) {
    check(bos.error().code == usb::Error::Code::kMalformed && !bos.error().message.empty());
    return;
  }
  const size_t total = in[2] | (in[3] << 8);
  const auto b = bos->build();
  check(b.size() == total);
  auto again = usb::BosDescriptor::parse(b);
  check(again.has_value() && *again == *bos);
}

void fuzz_strings(std::span<const uint8_t> in) {
  auto s = usb::parse_string_descriptor(in);
  if (s) {
    const auto b = usb::build_string_descriptor(*s);
    const auto again = usb::parse_string_descriptor(b);
    check(again.has_value() && *again == *s);
    const size_t len = in[0];
    const bool same = b.size() == len && std::equal(b.begin(), b.end(), in.begin());
    check(same || has_unpaired_surrogate(in.subspan(2, len - 2)));
  } else {
    check(s.error().code == usb::Error::Code::kMalformed);
  }
  auto ids = usb::parse_language_descriptor(in);
  if (ids) {
    const auto b = usb::build_language_descriptor(*ids);
    check(b.size() == in[0] && std::equal(b.begin(), b.end(), in.begin()));
  }
  // Arbitrary bytes as UTF-8: always a well-formed descriptor that parses back.
  const std::string_view text(reinterpret_cast<const char*>(in.data()), in.size());
  const auto built = usb::build_string_descriptor(text);
  check(built.size() >= 2 && built.size() <= 254 && built[0] == built.size());
  auto parsed = usb::parse_string_descriptor(built);
  check(parsed.has_value());
  check(usb::build_string_descriptor(*parsed) == built);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);
  fuzz_device(in);
  fuzz_configuration(in);
  fuzz_bos(in);
  fuzz_strings(in);
  return 0;
}
