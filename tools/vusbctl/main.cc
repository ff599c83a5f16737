// vusbctl: manage a running vusbd through its control API, with usbip's verbs.
//
//   vusbctl list                                  devices, their state and who has them
//   vusbctl attach --vm VM -d DEVICE              give a known device to a VM
//   vusbctl attach --vm VM -r HOST -b BUSID       import from a USB/IP server and give it
//   vusbctl attach --vm VM -r HOST -b '*'         follow everything that server exports
//   vusbctl detach --vm VM -d DEVICE              take it away (the VM sees an unplug)
//   vusbctl share -d DEVICE --mode shared|exclusive|timeslice
//   vusbctl weight --vm VM N                      the VM's share of busy shared devices
//   vusbctl stats / monitor / remove
// --json prints the API's answer as it is. Exit status: 0 done, 1 vusbd refused (its reason is
// printed), 2 usage, 3 vusbd unreachable.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "tools/vusbctl/api_client.h"
#include "tools/vusbctl/cert_command.h"
#include "usb/net/endpoint.h"
#include "usb/usbip/url.h"

namespace {

using json = nlohmann::json;

struct Globals {
  std::string api = "127.0.0.1:3250";
  std::string socket;  // --socket PATH: shorthand for --api unix:PATH
  std::string token_file;
  usb::net::TlsConfig tls;
  bool json_out = false;
  vusbctl::Api at;  // the address and the token
};

int fail(const std::string& message, int code) {
  std::cerr << "vusbctl: error: " << message << "\n";
  return code;
}

// One API call; prints the error and returns the exit code when it fails.
int call(const Globals& g, std::string_view method, const std::string& target, const json* body,
         json& out) {
  auto reply = vusbctl::request(g.at, method, target, body ? body->dump() : std::string{});
  if (!reply) return fail(reply.error().message + " (is vusbd running? --api HOST:PORT or --socket PATH)", 3);
  out = json::parse(reply->body, nullptr, false);
  if (out.is_discarded())
    return fail(
        "vusbd answered " + std::to_string(reply->status) + " with something that is not JSON", 1);
  if (reply->status >= 400)
    return fail(out.is_object()
                    ? out.value("error", std::string("HTTP ") + std::to_string(reply->status))
                    : "HTTP " + std::to_string(reply->status),
                1);
  return 0;
}

std::string hex4(const json& v) {
  if (!v.is_number()) return "????";
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04x", v.get<unsigned>() & 0xffff);
  return buf;
}

void print_devices(const json& devices) {
  if (devices.empty()) {
    std::cout << "vusbd has no devices. Add one with: vusbctl attach --vm VM -r HOST -b BUSID\n";
    return;
  }
  std::cout << "Devices served by vusbd\n=======================\n";
  for (const auto& d : devices) {
    std::cout << " - " << d["name"].get<std::string>() << ": " << hex4(d.value("vendor_id", json()))
              << ":" << hex4(d.value("product_id", json())) << "  "
              << (d["connected"].get<bool>() ? "connected" : "waiting for the device") << ", "
              << d["mode"].get<std::string>() << "\n"
              << "       source: " << d["source"].get<std::string>() << "\n";
    if (d["vms"].empty()) std::cout << "       (given to no VM)\n";
    for (const auto& v : d["vms"])
      std::cout << "       vm " << v["vm"].get<std::string>() << ": bus id "
                << v["busid"].get<std::string>() << (v["imported"].get<bool>() ? " (in use)" : "")
                << "\n";
  }
}

void print_vms(const json& vms) {
  std::cout << "VMs served by vusbd\n===================\n";
  for (const auto& vm : vms) {
    std::cout << " - " << vm["name"].get<std::string>() << ": usbip --tcp-port "
              << vm["port"].get<unsigned>() << " list -r <vusbd host>\n";
    for (const auto& d : vm["devices"])
      std::cout << "       " << d["busid"].get<std::string>() << ": "
                << d["device"].get<std::string>()
                << (d["connected"].get<bool>() ? "" : " (waiting for the device)")
                << (d["imported"].get<bool>() ? " (in use)" : "") << "\n";
    for (const auto& r : vm.value("usbredir", json::array()))
      std::cout << "       usb-redir: " << r["device"].get<std::string>()
                << (r.contains("listen") ? " (vusbd listens on " + r["listen"].get<std::string>()
                                         : " (vusbd connects to " + r["connect"].get<std::string>())
                << (r.value("announced", false) ? ", QEMU has it)"
                    : r.value("connected", false) ? ", QEMU connected)"
                                                  : ", QEMU not connected)")
                << "\n";
  }
}

void print_stats(const json& stats, const std::string& vm_filter, const std::string& dev_filter) {
  using u64 = unsigned long long;
  std::printf("%-12s %-12s %-6s %10s %12s %12s %9s %8s %7s %9s %7s %7s %9s\n", "VM", "DEVICE",
              "BUSID", "URBS", "BYTES IN", "BYTES OUT", "CACHE HIT", "LAT us", "QUEUED", "WAIT ms",
              "ERRORS", "REFUSED", "RESERVED");
  for (const auto& [vm, devs] : stats["vms"].items())
    for (const auto& [dev, s] : devs.items()) {
      if ((!vm_filter.empty() && vm != vm_filter) || (!dev_filter.empty() && dev != dev_filter))
        continue;
      std::printf(
          "%-12s %-12s %-6s %10llu %12llu %12llu %9llu %8.0f %7llu %9.0f %7llu %7llu %9llu\n",
          vm.c_str(), dev.c_str(), s["busid"].get<std::string>().c_str(), s["urbs"].get<u64>(),
          s["bytes_in"].get<u64>(), s["bytes_out"].get<u64>(), s["cache_hits"].get<u64>(),
          s["avg_latency_us"].get<double>(), s.value("queued", u64{0}),
          s.value("queue_wait_ms", 0.0), s["errors"].get<u64>(), s["refused"].get<u64>(),
          s.value("reserved", u64{0}));
    }
  if (stats.contains("buses"))
    for (const auto& [bus, b] : stats["buses"].items())
      std::printf("bus %s: %llu of %llu %s per (micro)frame free\n", bus.c_str(),
                  b["free"].get<u64>(), b["budget"].get<u64>(),
                  b["unit"].get<std::string>().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  Globals g;
  CLI::App app{
      "vusbctl: manage vusbd, the service that gives VMs USB devices (several VMs per device).\n"
      "Verbs follow usbip's: where usbip attaches a remote device to this machine, vusbctl\n"
      "attaches it to a VM; the VM then runs `usbip attach` against its own vusbd port.",
      "vusbctl"};
  // $VUSB_SOCKET (a UNIX socket's path) or $VUSBD_API (any address); the flags win.
  if (const char* env = std::getenv("VUSB_SOCKET"); env && *env)
    g.api = std::string(usb::net::kUnixPrefix) + env;
  if (const char* env = std::getenv("VUSBD_API"); env && *env) g.api = env;
  app.add_option("--api", g.api,
                 "vusbd's control address: HOST:PORT or unix:PATH (default: $VUSBD_API, else "
                 "unix:$VUSB_SOCKET, else 127.0.0.1:3250)")
      ->default_val(g.api);
  app.add_option("--socket", g.socket,
                 "vusbd's control UNIX socket (same as --api unix:PATH; default $VUSB_SOCKET; "
                 "vusbd admits its own user and root there)");
  if (const char* env = std::getenv("VUSBD_TOKEN"); env && *env) g.at.token = env;
  if (const char* env = std::getenv("VUSBD_TOKEN_FILE"); env && *env) g.token_file = env;
  app.add_option("--token-file", g.token_file,
                 "A file holding a control API token (vusbd's [[control.token]]); default "
                 "$VUSBD_TOKEN_FILE, or the token itself in $VUSBD_TOKEN. Changes over TCP need "
                 "an admin token; the UNIX socket needs none");
  app.add_option("--tls-ca", g.tls.ca_file,
                 "For a tls:HOST:PORT control address: the CA vusbd's certificate chains to");
  app.add_option("--tls-cert", g.tls.cert_file, "...and this client's certificate");
  app.add_option("--tls-key", g.tls.key_file, "...and its key");
  app.add_flag("--json", g.json_out, "Print vusbd's JSON answer");
  app.require_subcommand(1);

  bool list_vms = false;
  auto* list = app.add_subcommand("list", "List devices vusbd serves and the VMs that have them");
  list->add_flag("--vms", list_vms, "List VMs and their devices instead");

  std::string device, vm, remote, busid, libusb, mode;
  uint16_t tcp_port = 3240;
  uint32_t port = 0;
  auto* attach = app.add_subcommand(
      "attach", "Give a device to a VM (importing it first with -r/-b or --libusb)");
  attach->add_option("--vm", vm, "The VM that gets the device")->required();
  attach->add_option("-d,--device", device,
                     "vusbd's name for the device (default with -r/-b: HOST-BUSID)");
  attach->add_option("-r,--remote", remote,
                     "Import from this USB/IP server (vusb-stub, usbipd): HOST, or unix:PATH for "
                     "a server on a UNIX socket; tls:HOST for vusb-stub's TLS port (vusbd's "
                     "[tls] has the certificates)");
  attach->add_option("-b,--busid", busid,
                     "Bus id on the server (see usbip list -r HOST); '*': every device it "
                     "exports, devices behind hubs included, as they come and go");
  attach->add_option("--tcp-port", tcp_port, "The server's USB/IP port")->default_val(tcp_port);
  attach->add_option("--libusb", libusb, "A device of vusbd's own host: VID:PID or bus id");
  attach->add_option("-p,--port", port, "Port on the VM's virtual bus (bus id 1-PORT)")
      ->check(CLI::Range(1, 126));
  attach->add_option("--mode", mode, "Sharing mode for a new device: shared or exclusive");

  auto* detach = app.add_subcommand("detach", "Take a device away from a VM (it sees an unplug)");
  detach->add_option("--vm", vm, "The VM")->required();
  detach->add_option("-d,--device", device, "The device")->required();

  std::vector<std::string> share_vms;
  auto* share = app.add_subcommand("share", "Set a device's sharing mode (and give it to VMs)");
  share->add_option("-d,--device", device, "The device")->required();
  share
      ->add_option("--mode", mode,
                   "shared (all its VMs at once), exclusive (one VM holds it) or timeslice "
                   "(its VMs take turns)")
      ->required();
  share->add_option("--vm", share_vms, "Also give it to these VMs");

  uint32_t weight = 1;
  auto* weight_cmd = app.add_subcommand("weight", "Set a VM's share of busy shared devices");
  weight_cmd->add_option("--vm", vm, "The VM")->required();
  weight_cmd->add_option("weight", weight, "1..1000 (a VM with 3 gets 3x the bytes of one with 1)")
      ->required()
      ->check(CLI::Range(1, 1000));

  std::string redir_listen, redir_connect;
  bool redir_remove = false;
  auto* usbredir = app.add_subcommand(
      "usbredir", "Give a VM's device to its QEMU's usb-redir (or take it back to USB/IP)");
  usbredir->add_option("--vm", vm, "The VM")->required();
  usbredir->add_option("-d,--device", device, "A device the VM has")->required();
  auto* redir_l = usbredir->add_option(
      "--listen", redir_listen,
      "vusbd listens here for QEMU's chardev (HOST:PORT or unix:PATH; QEMU reconnect=2)");
  auto* redir_c = usbredir->add_option(
      "--connect", redir_connect,
      "vusbd connects to a QEMU listening here (chardev server=on,wait=off)");
  auto* redir_r = usbredir->add_flag("--remove", redir_remove,
                                     "Close the device's usbredir channel: back on USB/IP");
  redir_l->excludes(redir_c);
  redir_r->excludes(redir_l)->excludes(redir_c);

  bool libvirt = false;
  auto* qemu_args = app.add_subcommand(
      "qemu-args", "Print the QEMU arguments (or libvirt XML) that give a VM its usbredir devices");
  qemu_args->add_option("--vm", vm, "The VM")->required();
  qemu_args->add_flag("--libvirt", libvirt, "Print libvirt's <controller>/<redirdev> XML instead");
  std::string controller = "xhci";
  qemu_args->add_option("--controller", controller,
                        "The guest's USB controller: xhci (every speed) or ehci (high speed)")
      ->check(CLI::IsMember({"xhci", "ehci"}));

  auto* stats = app.add_subcommand("stats", "Per-VM per-device URBs, bytes, latency, cache hits");
  stats->add_option("--vm", vm, "Only this VM");
  stats->add_option("-d,--device", device, "Only this device");

  int count = 0, seconds = 0;
  auto* monitor = app.add_subcommand("monitor", "Follow hotplug, attach and stats events");
  monitor->add_option("--count", count, "Stop after this many events (stats excluded)");
  monitor->add_option("--timeout", seconds, "Stop after this many seconds");
  bool with_stats = false;
  monitor->add_flag("--stats", with_stats, "Also print the stats sent every second");

  auto* remove = app.add_subcommand("remove", "Forget a device (every VM sees an unplug)");
  remove->add_option("-d,--device", device, "The device")->required();

  vusbctl::CertCommand cert(app);
  CLI11_PARSE(app, argc, argv);
  if (cert.parsed()) return cert.run();
  auto at = g.socket.empty() ? usb::net::parse_endpoint(g.api, "127.0.0.1")
                             : usb::net::parse_endpoint(std::string(usb::net::kUnixPrefix) + g.socket);
  if (!at) return fail((g.socket.empty() ? "--api: " : "--socket: ") + at.error().message, 2);
  g.at.at = *at;
  if (g.at.at.tls) {
    auto ctx = usb::net::TlsContext::make(g.tls, usb::net::TlsRole::kClient);
    if (!ctx) return fail("--api " + g.at.at.to_string() + ": " + ctx.error().message, 2);
    g.at.tls = *ctx;
  }
  if (!g.token_file.empty()) {
    std::ifstream in(g.token_file);
    if (!in || !std::getline(in, g.at.token)) return fail("--token-file: cannot read " + g.token_file, 2);
    while (!g.at.token.empty() && (g.at.token.back() == '\r' || g.at.token.back() == ' '))
      g.at.token.pop_back();
  }

  json out;
  auto emit = [&](auto&& pretty) {
    if (g.json_out)
      std::cout << out.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    else
      pretty();
    return 0;
  };

  if (list->parsed()) {
    if (int rc = call(g, "GET", list_vms ? "/api/v1/vms" : "/api/v1/devices", nullptr, out))
      return rc;
    return emit([&] { list_vms ? print_vms(out) : print_devices(out); });
  }

  if (attach->parsed()) {
    const bool import = !remote.empty() || !busid.empty();
    if (import && (remote.empty() || busid.empty()))
      return fail("importing needs both -r HOST and -b BUSID", 2);
    if (import && !libusb.empty()) return fail("use either -r/-b or --libusb", 2);
    if (!import && libusb.empty() && device.empty())
      return fail("name a device (-d) or where to import it from (-r/-b or --libusb)", 2);
    bool created = false;
    if (import || !libusb.empty()) {
      std::string source;
      if (import) {
        const bool tls = remote.starts_with(usb::net::kTlsPrefix);
        if (tls) remote = remote.substr(usb::net::kTlsPrefix.size());
        std::string server_name = remote;
        if (remote.starts_with(usb::net::kUnixPrefix)) {
          auto e = usb::net::parse_endpoint(remote);
          if (!e) return fail("-r " + remote + ": " + e.error().message, 2);
          e->tls = tls;
          source = usb::usbip::url(*e, busid);
          // The socket's file name, without its extension, names the device.
          server_name = e->path.substr(e->path.rfind('/') + 1);
          server_name = server_name.substr(0, server_name.find('.'));
        } else {
          const bool v6 = remote.find(':') != std::string::npos;
          source = (tls ? "usbips://" : "usbip://") + (v6 ? "[" + remote + "]" : remote) + ":" +
                   std::to_string(tcp_port) + "/" + busid;
        }
        if (device.empty()) device = busid == "*" ? server_name : server_name + "-" + busid;
      } else {
        source = "libusb:" + libusb;
        if (device.empty()) return fail("--libusb needs a name for the device (-d NAME)", 2);
      }
      for (char& c : device)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
          c = '_';
      // A device vusbd already has under this name is reused (same source) or refused.
      json existing;
      auto reply = vusbctl::request(g.at, "GET", "/api/v1/devices/" + device);
      if (!reply) return fail(reply.error().message, 3);
      if (reply->status == 200) {
        existing = json::parse(reply->body, nullptr, false);
        if (busid == "*")
          return fail("vusbd already follows " + source + " as '" + device +
                          "'; its devices are NAME-BUSID: attach those, or add the vm to its "
                          "vms in the config",
                      1);
        if (existing.is_object() && existing.value("source", "") != source)
          return fail("vusbd already has a device '" + device + "' from " +
                          existing.value("source", "?") + "; pick another name with -d",
                      1);
      } else if (busid == "*") {
        // A whole server: vusbd follows its list and gives every device on it to the VM.
        if (port) return fail("-p does not apply to -b '*' (each device gets a free port)", 2);
        json body = {{"name", device}, {"source", source}, {"vms", json::array({vm})}};
        if (!mode.empty()) body["mode"] = mode;
        if (int rc = call(g, "POST", "/api/v1/devices", &body, out)) return rc;
        return emit([&] {
          std::cout << "vm " << vm << " gets every device " << remote
                    << " exports, as it appears; see vusbctl list\n";
        });
      } else {
        json body = {{"name", device}, {"source", source}};
        if (!mode.empty()) body["mode"] = mode;
        if (int rc = call(g, "POST", "/api/v1/devices", &body, out)) return rc;
        created = true;
      }
    }
    json body = {{"device", device}, {"vm", vm}};
    if (port) body["port"] = port;
    if (int rc = call(g, "POST", "/api/v1/attachments", &body, out)) {
      // Leave vusbd as it was: a device this command added goes again.
      json ignored;
      if (created) (void)call(g, "DELETE", "/api/v1/devices/" + device, nullptr, ignored);
      return rc;
    }
    return emit([&] {
      std::cout << device << " is attached to vm " << vm << " as bus id "
                << out["busid"].get<std::string>() << "; in the VM:\n  usbip --tcp-port "
                << out["port"].get<unsigned>() << " attach -r <vusbd host> -b "
                << out["busid"].get<std::string>() << "\n";
    });
  }

  if (detach->parsed()) {
    if (int rc = call(g, "DELETE", "/api/v1/attachments/" + device + "/" + vm, nullptr, out))
      return rc;
    return emit([&] { std::cout << device << " is detached from vm " << vm << "\n"; });
  }

  if (share->parsed()) {
    json body = {{"mode", mode}};
    if (int rc = call(g, "POST", "/api/v1/devices/" + device + "/mode", &body, out)) return rc;
    for (const auto& v : share_vms) {
      json a = {{"device", device}, {"vm", v}};
      json ignored;
      if (int rc = call(g, "POST", "/api/v1/attachments", &a, ignored)) return rc;
    }
    if (!share_vms.empty() && int(call(g, "GET", "/api/v1/devices/" + device, nullptr, out)))
      return 1;
    return emit([&] { std::cout << device << " is " << mode << "\n"; });
  }

  if (weight_cmd->parsed()) {
    json body = {{"weight", weight}};
    if (int rc = call(g, "POST", "/api/v1/vms/" + vm + "/weight", &body, out)) return rc;
    return emit([&] { std::cout << "vm " << vm << " has weight " << weight << "\n"; });
  }

  if (usbredir->parsed()) {
    if (redir_remove) {
      if (int rc = call(g, "DELETE", "/api/v1/vms/" + vm + "/usbredir/" + device, nullptr, out))
        return rc;
      return emit([&] { std::cout << device << " is back on vm " << vm << "'s USB/IP port\n"; });
    }
    if (redir_listen.empty() && redir_connect.empty())
      return fail("usbredir: give --listen, --connect or --remove", 2);
    json body = {{"device", device},
                 {redir_connect.empty() ? "listen" : "connect",
                  redir_connect.empty() ? redir_listen : redir_connect}};
    if (int rc = call(g, "POST", "/api/v1/vms/" + vm + "/usbredir", &body, out)) return rc;
    return emit([&] {
      std::cout << device << " reaches vm " << vm << " through usb-redir ("
                << (redir_connect.empty() ? "vusbd listens on " + out.value("listen", "")
                                          : "vusbd connects to " + out.value("connect", ""))
                << "); QEMU arguments: vusbctl qemu-args --vm " << vm << "\n";
    });
  }

  if (qemu_args->parsed()) {
    if (int rc = call(g, "GET", "/api/v1/vms/" + vm + "/qemu-args?controller=" + controller,
                      nullptr, out))
      return rc;
    return emit([&] {
      if (libvirt) {
        std::cout << out.value("libvirt", "");
        return;
      }
      std::string line;
      for (const auto& arg : out.value("qemu", json::array())) {
        const std::string a = arg.get<std::string>();
        line += (line.empty() ? "" : " ") +
                (a.find_first_of(" '\"") == std::string::npos ? a : "'" + a + "'");
      }
      std::cout << line << "\n";
    });
  }

  if (stats->parsed()) {
    if (int rc = call(g, "GET", "/api/v1/stats", nullptr, out)) return rc;
    return emit([&] { print_stats(out, vm, device); });
  }

  if (remove->parsed()) {
    if (int rc = call(g, "DELETE", "/api/v1/devices/" + device, nullptr, out)) return rc;
    return emit([&] { std::cout << device << " is removed\n"; });
  }

  if (monitor->parsed()) {
    int seen = 0;
    auto r = vusbctl::follow_events(
        g.at,
        [&](const std::string& text) {
          json e = json::parse(text, nullptr, false);
          if (e.is_discarded()) return true;
          const std::string kind = e.value("event", "");
          if (kind == "hello") return true;
          if (kind == "stats" && !with_stats) return true;
          if (g.json_out) {
            std::cout << e.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
          } else {
            std::cout << kind;
            for (const auto& [k, v] : e.items())
              if (k != "event")
                std::cout << " " << k << "="
                          << (v.is_string()
                                  ? v.get<std::string>()
                                  : v.dump(-1, ' ', false, json::error_handler_t::replace));
            std::cout << std::endl;
          }
          return kind == "stats" || count == 0 || ++seen < count;
        },
        std::chrono::seconds(seconds));
    if (!r) return fail(r.error().message, 3);
    return 0;
  }
  return 0;
}
