// libFuzzer target: vusbd's control API routes (control_routes.h) — the JSON decoding of request
// bodies and targets and every registry operation they reach — over arbitrary requests against a
// fresh registry with two VMs. Input: byte 0 picks the method, then the target up to '\n', then
// the body. Sources that open sockets or USB devices (usbip://, libusb:) are skipped: the
// emulated source reaches the same registry code without I/O. Invariants: every answer is a
// JSON object or array that serializes, errors carry a message, and the registry stays consistent
// (every attachment resolves in the AddressMap).
#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "tests/fuzz/fuzz_daemon.h"
#include "vmm-frontend/control_routes.h"
#include "vmm-frontend/vusbd.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static constexpr std::string_view kMethods[] = {"GET", "POST", "DELETE", "PUT"};
  const std::string_view method = kMethods[data[0] % 4];
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (rest.find("usbip:") != std::string_view::npos ||
      rest.find("libusb:") != std::string_view::npos)
    return 0;
  const size_t nl = rest.find('\n');
  const std::string_view target = rest.substr(0, nl);
  const std::string_view body = nl == std::string_view::npos ? "" : rest.substr(nl + 1);

  boost::asio::io_context io;
  fuzzing::Daemon fixture(io);
  vusbd::Vusbd& daemon = fixture.vusbd;

  for (int i = 0; i < 2; ++i) {  // twice: the second request sees the first one's effect
    vusbd::RouteResult r = vusbd::route(daemon, method, target, body);
    check(r.status >= 200 && r.status < 600);
    check(r.body.is_object() || r.body.is_array());
    if (r.status >= 400) check(r.body.contains("error") && r.body["error"].is_string());
    // What the API sends: echoed names may be any bytes; the text must still come out.
    check(!r.body.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).empty());
  }
  for (const auto& d : daemon.devices_json())
    for (const auto& v : d["vms"])
      check(daemon.addresses()
                .resolve_busid(v["vm"].get<std::string>(), v["busid"].get<std::string>())
                .has_value());
  daemon.stop();
  return 0;
}
