// libFuzzer: both TOML loaders — vusb-stub's (load_toml + validate) and vusbd's (load_config +
// validate, then the written-back form read again) — over any file a user or an attacker with
// write access to a config could leave. toml11 reports errors by exception, which the loaders
// turn into errors; nothing may escape, crash, or accept a number the validation should refuse
// (every limit read back is in its documented range), and vusbd's write-back must read back to
// the same config.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "usb-stub/stub_config.h"
#include "vmm-frontend/vusbd_config.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

const std::string& scratch() {
  static const std::string dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("vusb-fuzz-config-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d.string();
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = scratch() + "/in.toml";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  stub::StubConfig s;
  if (stub::load_toml(path, s) && stub::validate(s)) {
    check(s.limits.wire.max_transfer_length >= 1 && s.limits.wire.max_transfer_length <= (1u << 30));
    check(s.limits.max_inflight_bytes >= s.limits.wire.max_transfer_length);
    check(s.max_connections >= 1 && s.max_connections_per_address >= 1);
    check(!s.listen.empty());
  }
  auto v = vusbd::load_config(path);
  if (v && vusbd::validate(*v)) {
    for (const auto& vm : v->vms) check(vm.weight >= 1 && vm.weight <= 1000);
    const std::string back = scratch() + "/back.toml";
    std::ofstream(back, std::ios::trunc) << vusbd::to_toml(*v);
    auto again = vusbd::load_config(back);
    check(again.has_value());
    check(vusbd::to_toml(*again) == vusbd::to_toml(*v));
  }
  return 0;
}
