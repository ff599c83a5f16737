// vusb-stub: exports USB devices over USB/IP — plain TCP or a UNIX socket for the stock Linux
// `usbip` tools and the kernel's vhci-hcd, TLS 1.3 for vusbd and tunnels — with address
// allow-lists and per-export access lists.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <cstdio>

#include "usb-stub/device_sources.h"
#include "usb-stub/stub_config.h"
#include "usb/net/asio_executor.h"
#include "usb/net/peer_rule.h"
#include "usb/net/tls.h"
#include "usb/usbip/export_access.h"
#include "usb/usbip/export_table.h"
#include "usb/usbip/server.h"

int main(int argc, char** argv) {
  stub::StubConfig config;
  std::string config_path;
  std::vector<std::string> listen_text, access_text;
  usb::net::TlsConfig cli_tls;
  std::vector<std::string> emulate_text;
  uint32_t max_urb = config.limits.wire.max_transfer_length;
  uint64_t max_inflight = config.limits.max_inflight_bytes;

  CLI::App app{
      "vusb-stub: export USB devices over USB/IP so `usbip attach` and the kernel's vhci-hcd can "
      "use them.\n\nExamples:\n"
      "  vusb-stub --emulate gadget-zero                 # a Gadget Zero as bus id 1-1\n"
      "  vusb-stub --emulate uvc-camera                  # a UVC webcam (MJPEG/YUYV test pattern)\n"
      "  vusb-stub --libusb 046d:c52b --libusb 3-1.2     # real devices by VID:PID or bus id\n"
      "  vusb-stub --libusb-all                          # every device, hotplug included\n"
      "  vusb-stub --listen 0.0.0.0:3240 --allow 10.0.0.0/8 --emulate gadget-zero\n"
      "                                                  # plain USB/IP for one network\n"
      "  vusb-stub --listen tls:0.0.0.0:3241 --tls-ca ca.crt --tls-cert stub.crt \\\n"
      "      --tls-key stub.key --access 1-1=cn:vm1 ... # TLS 1.3, client certificates\n"
      "  vusb-stub --listen tls:0.0.0.0:3241 --tls-psk psk.txt --sensors evdev\n"
      "                                                  # TLS with a PSK (a phone)\n"
      "  usbip --tcp-port 3240 list -r HOST              # on a client: see the exports\n"
      "  usbip attach -r HOST -b 1-1                     # on a client: use one\n",
      "vusb-stub"};
  app.add_option("--listen", listen_text,
                 "Address and port to listen on, ADDR:PORT, or a UNIX socket, unix:PATH; "
                 "tls:ADDR:PORT for TLS 1.3 (repeatable)")
      ->default_str("127.0.0.1:3240");
  app.add_option("--tls-ca", cli_tls.ca_file,
                 "PEM CA file: TLS clients must show a certificate it signed");
  app.add_option("--tls-cert", cli_tls.cert_file, "PEM certificate of this exporter");
  app.add_option("--tls-key", cli_tls.key_file, "PEM private key of --tls-cert");
  app.add_option("--tls-psk", cli_tls.psk_file,
                 "File of IDENTITY:KEY lines (stunnel's PSKsecrets format): TLS clients may "
                 "authenticate with one of these pre-shared keys");
  app.add_option("--allow", config.allow,
                 "Only peers matching one of these rules may connect: ADDR[/PREFIX], cn:NAME, "
                 "sha256:FINGERPRINT, psk:IDENTITY, uid:N, authenticated (repeatable)");
  app.add_option("--access", access_text,
                 "DEVICES=PEERS: the devices (bus ids, class:HH, hid, *) only these peers may "
                 "list and import, e.g. 1-1,hid=cn:vm1,psk:phone (repeatable). Input devices no "
                 "rule names go only to authenticated peers");
  app.add_option("--emulate", emulate_text,
                 "Export an emulated device: gadget-zero[=BUSID][,speed=high|super]"
                 "[,bulk_rate=BYTES_PER_S][,isoc_mult=0..2][,isoc_interval=1..16]"
                 "[,isoc_maxpacket=N][,pattern=0..2], or uvc-camera[=BUSID][,transport=iso|bulk]"
                 "[,serial=S] (repeatable)");
  app.add_option("--libusb", config.libusb,
                 "Export a local USB device through libusb, by VID:PID (hex) or bus id "
                 "(repeatable)");
  app.add_option(
      "--sensors", config.sensors,
      "Export a HID sensor hub (accelerometer, gyroscope, ...) fed by: evdev (every "
      "motion sensor input device), evdev:/dev/input/eventN, iio (every IIO motion or light "
      "sensor), iio:DIR, or replay:FILE[,loop] "
      "(a recorded trace) (repeatable; one hub)");
  app.add_option("--record-sensors", config.record_sensors,
                 "Also write every sample the sensor hub takes to FILE as a trace "
                 "(replay it with --sensors replay:FILE)");
  app.add_option("--input", config.inputs,
                 "Export an input device as a USB HID keyboard / mouse / touchscreen: "
                 "evdev (every keyboard, mouse and touchscreen) or evdev:/dev/input/eventN, "
                 "optionally ,nograb (repeatable; one USB device each)");
  app.add_flag("--libusb-all", config.libusb_all,
               "Export every local USB device except hubs, following hotplug");
  app.add_option("--config", config_path,
                 "TOML config file; command-line options add to / override it");
  app.add_option("--max-urb-bytes", max_urb, "Largest URB buffer a client may ask for")
      ->default_val(max_urb);
  app.add_option("--max-inflight-bytes", max_inflight,
                 "Buffer bytes one connection may hold in flight; beyond it URBs get -ENOMEM")
      ->default_val(max_inflight);
  app.add_option("--log-level", config.log_level, "trace, debug, info, warn, error")
      ->default_val(config.log_level);
  CLI11_PARSE(app, argc, argv);

  auto fail = [](const usb::Error& e) {
    spdlog::error("{}", e.message);
    return 2;
  };
  if (!config_path.empty()) {
    // Lists from the command line add to the file's; single values override it.
    std::vector<std::string> cli_libusb = std::move(config.libusb);
    std::vector<std::string> cli_sensors = std::move(config.sensors);
    std::vector<std::string> cli_inputs = std::move(config.inputs);
    std::vector<std::string> cli_allow = std::move(config.allow);
    const std::string cli_record = config.record_sensors;
    bool cli_all = config.libusb_all;
    std::string cli_level = config.log_level;
    config.libusb.clear();
    config.sensors.clear();
    config.inputs.clear();
    config.allow.clear();
    if (auto r = stub::load_toml(config_path, config); !r) return fail(r.error());
    config.allow.insert(config.allow.end(), cli_allow.begin(), cli_allow.end());
    config.libusb.insert(config.libusb.end(), cli_libusb.begin(), cli_libusb.end());
    config.sensors.insert(config.sensors.end(), cli_sensors.begin(), cli_sensors.end());
    config.inputs.insert(config.inputs.end(), cli_inputs.begin(), cli_inputs.end());
    if (!cli_record.empty()) config.record_sensors = cli_record;
    config.libusb_all = config.libusb_all || cli_all;
    if (app.count("--log-level")) config.log_level = cli_level;
  }
  if (app.count("--max-urb-bytes")) config.limits.wire.max_transfer_length = max_urb;
  if (app.count("--max-inflight-bytes")) config.limits.max_inflight_bytes = max_inflight;
  if (!listen_text.empty()) {
    config.listen.clear();
    for (const auto& text : listen_text) {
      auto at = usb::net::parse_endpoint(text);
      if (!at) return fail(at.error());
      config.listen.push_back(*at);
    }
  }
  for (auto [cli, file] : {std::pair{&cli_tls.ca_file, &config.tls.ca_file},
                           {&cli_tls.cert_file, &config.tls.cert_file},
                           {&cli_tls.key_file, &config.tls.key_file},
                           {&cli_tls.psk_file, &config.tls.psk_file}})
    if (!cli->empty()) *file = *cli;
  for (const auto& text : access_text) {
    auto rule = usb::usbip::parse_access_rule(text);
    if (!rule) return fail(rule.error());
    config.access.push_back(*rule);
  }
  for (const auto& text : emulate_text) {
    auto spec = stub::parse_emulate(text);
    if (!spec) return fail(spec.error());
    config.emulate.push_back(*spec);
  }
  if (auto r = stub::validate(config); !r) return fail(r.error());
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ vusb-stub: %v");

  boost::asio::io_context io;
  usb::net::AsioExecutor executor(io);
  usb::usbip::ExportTable exports;
  stub::DeviceSources sources(io, executor, exports);
  for (const auto& spec : config.emulate)
    if (auto r = sources.add_emulated(spec); !r) return fail(r.error());
  if (!config.libusb.empty() || config.libusb_all)
    if (auto r = sources.add_libusb(config.libusb, config.libusb_all); !r) return fail(r.error());
  if (!config.sensors.empty())
    if (auto r = sources.add_sensors(config.sensors, config.record_sensors); !r)
      return fail(r.error());
  if (!config.inputs.empty())
    if (auto r = sources.add_inputs(config.inputs); !r) return fail(r.error());

  auto access = usb::usbip::ExportAccess::make(config.access);
  if (!access) return fail(access.error());
  exports.set_access(std::make_shared<const usb::usbip::ExportAccess>(std::move(*access)));
  usb::net::Listener::Options listener;
  listener.max_connections = config.max_connections;
  listener.max_per_address = config.max_connections_per_address;
  if (config.tls.enabled()) {
    auto tls = usb::net::TlsContext::make(config.tls, usb::net::TlsRole::kServer);
    if (!tls) return fail(tls.error());
    listener.tls = *tls;
  }
  if (!config.allow.empty()) {
    auto allow = usb::net::PeerList::parse(config.allow);
    if (!allow) return fail(allow.error());
    listener.check = [allow = *allow](const usb::net::PeerInfo& peer) -> usb::Result<void> {
      if (allow.admits(peer)) return {};
      return usb::Error::make(usb::Error::Code::kDenied, "not in --allow (" + allow.to_string() + ")");
    };
    listener.authenticated = true;  // the allow-list guards it
  }
  std::vector<std::unique_ptr<usb::usbip::Server>> servers;
  std::string where;
  for (const auto& at : config.listen) {
    auto& server = *servers.emplace_back(
        std::make_unique<usb::usbip::Server>(io, exports, config.limits, listener));
    if (auto r = server.listen(at); !r) return fail(r.error());
    where += (where.empty() ? "" : ", ") + server.local_endpoint().to_string();
  }
  std::string ids;
  for (const auto& id : exports.busids()) ids += (ids.empty() ? "" : " ") + id;
  spdlog::info("listening on {}, exporting {} device(s): {}", where, exports.size(),
               ids.empty() ? "(none yet)" : ids);

  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code, int sig) {
    spdlog::info("signal {}: stopping", sig);
    for (auto& server : servers) server->stop();
    sources.stop();
    io.stop();
  });
  io.run();
  return 0;
}
