// vusbd: the VM-side USB service. Imports devices (from vusb-stub or the kernel's usbipd over
// USB/IP, or emulated ones) and serves each VM its own USB/IP server, so several VMs can use one
// device at once.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <fstream>

#include "vmm-frontend/control_api.h"
#include "vmm-frontend/vusbd.h"

int main(int argc, char** argv) {
  std::string config_path, stats_path, control, log_level = "info";
  CLI::App app{
      "vusbd: give virtual machines USB devices from anywhere, several VMs on one device.\n\n"
      "Each VM in the config gets its own USB/IP server; inside the VM:\n"
      "  usbip --tcp-port PORT list -r HOST\n"
      "  usbip --tcp-port PORT attach -r HOST -b 1-1\n"
      "Manage it with vusbctl or the dashboard at the control address.\n",
      "vusbd"};
  app.add_option("--config", config_path, "TOML config: [[vm]] and [[device]] tables")->required();
  app.add_option("--stats-json", stats_path, "Write per-VM per-device stats here on exit");
  app.add_option("--control", control,
                 "Control API and dashboard address (overrides [control] listen; default "
                 "127.0.0.1:3250)");
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
  if (!control.empty()) {
    auto hp = usb::net::parse_endpoint(control, "127.0.0.1");
    if (!hp) {
      spdlog::error("--control: {}", hp.error().message);
      return 2;
    }
    config->control = *hp;
  }
  boost::asio::io_context io;
  const auto control_at = config->control;
  // Changes made through the API are written back to the config file.
  vusbd::Vusbd daemon(io, std::move(*config), config_path);
  auto access = vusbd::ApiAccess::make(daemon.config().control_tokens,
                                       daemon.config().control_anonymous);
  if (!access) {
    spdlog::error("{}", access.error().message);
    return 2;
  }
  vusbd::ControlApi api(io, daemon, std::move(*access), daemon.tls_server());
  daemon.on_event([&api](const nlohmann::json& e) { api.publish(e); });
  if (auto r = daemon.start(); !r) {
    spdlog::error("{}", r.error().message);
    return 2;
  }
  if (auto r = api.listen(control_at); !r) {
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
    api.stop();
    daemon.stop();
    io.stop();
  });
  io.run();
  return 0;
}
