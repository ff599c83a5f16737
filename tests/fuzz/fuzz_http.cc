// libFuzzer: vusbd's control API as a network peer meets it — the bytes of one TCP connection to
// a ControlApi (Boost.Beast's HTTP parser, the size and time limits, the Host/Origin checks, the
// bearer-token roles of api_access.h, the WebSocket upgrade, then the routes) on a fresh daemon
// with two VMs, an emulated Gadget Zero, an admin token and a VM token (the seed corpus knows
// both, so the fuzzer reaches the routes behind them). Sources that would open sockets, USB
// devices or processes are skipped, as in fuzz_control_routes. Nothing may crash, leak or keep
// the API from stopping.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "tests/fuzz/fuzz_daemon.h"
#include "vmm-frontend/api_access.h"
#include "vmm-frontend/control_api.h"
#include "vmm-frontend/vusbd.h"

namespace {

namespace asio = boost::asio;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void settle(asio::io_context& io) {
  for (int idle = 0, i = 0; idle < 3 && i < 20000; ++i) idle = io.poll() ? 0 : idle + 1;
  io.restart();
}

const std::vector<vusbd::ApiTokenConfig>& tokens() {
  static const std::vector<vusbd::ApiTokenConfig> t = [] {
    auto dir = std::filesystem::temp_directory_path() / ("vusb-fuzz-http-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "admin") << "fuzz-admin-token-0123456789\n";
    std::ofstream(dir / "vm1") << "fuzz-vm1-token-0123456789\n";
    return std::vector<vusbd::ApiTokenConfig>{{"admin", (dir / "admin").string(), "admin", ""},
                                              {"vm1", (dir / "vm1").string(), "vm", "vm1"}};
  }();
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  for (std::string_view skip : {"usbip", "libusb", "usbredir", "process:"})
    if (in.find(skip) != std::string_view::npos) return 0;
  asio::io_context io;
  fuzzing::Daemon fixture(io);
  vusbd::Vusbd& daemon = fixture.vusbd;
  auto access = vusbd::ApiAccess::make(tokens());
  check(access.has_value());
  vusbd::ControlApi api(io, daemon, std::move(*access));
  check(api.listen({"127.0.0.1", 0}).has_value());

  asio::ip::tcp::socket peer(io);
  boost::system::error_code ec;
  peer.connect({asio::ip::make_address("127.0.0.1"), api.local_port()}, ec);
  check(!ec);
  peer.set_option(asio::socket_base::linger(true, 0), ec);  // RST on close: no TIME_WAIT pile-up
  std::vector<char> sink(65536);
  std::function<void()> drain = [&] {
    peer.async_read_some(asio::buffer(sink), [&](boost::system::error_code e, size_t) {
      if (!e) drain();
    });
  };
  asio::async_write(peer, asio::buffer(data, size), [](boost::system::error_code, size_t) {});
  drain();
  settle(io);
  peer.shutdown(asio::socket_base::shutdown_send, ec);  // end of the request stream
  settle(io);
  peer.close(ec);
  settle(io);
  api.stop();
  daemon.stop();
  settle(io);
  return 0;
}
