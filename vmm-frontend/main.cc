// vusbd: the VM-side USB service. Imports devices (from vusb-stub or the kernel's usbipd over
// USB/IP, or emulated ones) and serves each VM its own USB/IP server, so several VMs can use one
// device at once.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <fstream>

#include "vmm-frontend/vusbd.h"

int main(int argc, char** argv) {
  std::string config_path, stats_path, log_level = "info";
  CLI::App app{
      "vusbd: give virtual machines USB devices from anywhere, several VMs on one device.\n\n"
      "Each VM in the config gets its own USB/IP server; inside the VM:\n"
      "  usbip --tcp-port PORT list -r HOST\n"
      "  usbip --tcp-port PORT attach -r HOST -b 1-1\n",
      "vusbd"};
  app.add_option("--config", config_path, "TOML config: [[vm]] and [[device]] tables")->required();
  app.add_option("--stats-json", stats_path, "Write per-VM per-device stats here on exit");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->default_val(log_level);
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");

  auto config = vusbd::load_config(config_path);
  if (!config) {
    spdlog::error("{}", config.error().message);
    return 2;
  }
  boost::asio::io_context io;
  vusbd::Vusbd daemon(io, std::move(*config));
  if (auto r = daemon.start(); !r) {
    spdlog::error("{}", r.error().message);
    return 2;
  }
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code, int sig) {
    spdlog::info("vusbd: signal {}: stopping", sig);
    if (!stats_path.empty()) {
      std::ofstream(stats_path) << daemon.stats().dump(2) << "\n";
      spdlog::info("vusbd: stats written to {}", stats_path);
    }
    daemon.stop();
    io.stop();
  });
  io.run();
  return 0;
}
