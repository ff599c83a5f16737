#include "vmm-frontend/control_routes.h"

#include <spdlog/spdlog.h>

#include <vector>

#include "usb/core/printable.h"
#include "vmm-frontend/vusbd.h"

namespace vusbd {

namespace {

using json = nlohmann::json;

RouteResult error(unsigned status, std::string message) {
  return {status, json{{"error", std::move(message)}}};
}

RouteResult from_error(const usb::Error& e) {
  switch (e.code) {
    case usb::Error::Code::kNotFound:
      return error(404, e.message);
    case usb::Error::Code::kBusy:
      return error(409, e.message);
    case usb::Error::Code::kIo:
      return error(500, e.message);
    case usb::Error::Code::kDenied:
      return error(403, e.message);
    default:
      return error(400, e.message);
  }
}

// The value of `key` in the target's query ("…?controller=ehci"), or "".
std::string query_value(std::string_view target, std::string_view key) {
  const size_t q = target.find('?');
  if (q == std::string_view::npos) return {};
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    const size_t amp = rest.find('&');
    std::string_view kv = rest.substr(0, amp);
    if (const size_t eq = kv.find('='); eq != std::string_view::npos && kv.substr(0, eq) == key)
      return std::string(kv.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    rest = rest.substr(amp + 1);
  }
  return {};
}

// A JSON object body, or the error to answer.
std::optional<RouteResult> parse_object(std::string_view body, json& out) {
  out = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (out.is_discarded()) return error(400, "body is not JSON");
  if (!out.is_object()) return error(400, "body must be a JSON object");
  return std::nullopt;
}

// A required string member, or the error to answer.
std::optional<RouteResult> get_string(const json& obj, const char* key, std::string& out,
                                      bool required = true) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) return error(400, std::string("missing \"") + key + "\"");
    return std::nullopt;
  }
  if (!it->is_string()) return error(400, std::string("\"") + key + "\" must be a string");
  out = it->get<std::string>();
  return std::nullopt;
}

std::optional<RouteResult> get_port(const json& obj, uint32_t& out) {
  auto it = obj.find("port");
  if (it == obj.end()) return std::nullopt;
  if (!it->is_number_unsigned() || it->get<uint64_t>() > AddressMap::kMaxPort)
    return error(400, "\"port\" must be 1.." + std::to_string(AddressMap::kMaxPort));
  out = static_cast<uint32_t>(it->get<uint64_t>());
  return std::nullopt;
}

json attachments(const Vusbd& daemon) {
  json out = json::array();
  for (const auto& d : daemon.devices_json())
    for (const auto& v : d["vms"])
      out.push_back({{"device", d["name"]},
                     {"vm", v["vm"]},
                     {"busid", v["busid"]},
                     {"devid", v["devid"]},
                     {"imported", v["imported"]}});
  return out;
}

RouteResult add_device(Vusbd& daemon, std::string_view body) {
  json req;
  if (auto e = parse_object(body, req)) return *e;
  DeviceConfig d;
  if (auto e = get_string(req, "name", d.name)) return *e;
  if (auto e = get_string(req, "source", d.source)) return *e;
  if (auto e = get_string(req, "mode", d.mode, false)) return *e;
  if (auto it = req.find("slice_ms"); it != req.end()) {
    if (!it->is_number_unsigned() || it->get<uint64_t>() == 0 || it->get<uint64_t>() > 60000)
      return error(400, "\"slice_ms\" must be 1..60000");
    d.slice_ms = static_cast<uint32_t>(it->get<uint64_t>());
  }
  if (auto it = req.find("vms"); it != req.end()) {
    if (!it->is_array()) return error(400, "\"vms\" must be an array of names");
    for (const auto& v : *it) {
      if (!v.is_string()) return error(400, "\"vms\" must be an array of names");
      d.vms.push_back(v.get<std::string>());
    }
  }
  if (auto it = req.find("ports"); it != req.end()) {
    if (!it->is_object()) return error(400, "\"ports\" must be an object {vm: port}");
    for (const auto& [vm, p] : it->items()) {
      if (!p.is_number_unsigned() || p.get<uint64_t>() == 0 ||
          p.get<uint64_t>() > AddressMap::kMaxPort)
        return error(400,
                     "port for vm '" + vm + "' must be 1.." + std::to_string(AddressMap::kMaxPort));
      d.ports[vm] = static_cast<uint32_t>(p.get<uint64_t>());
    }
  }
  if (auto r = daemon.add_device(d); !r) return from_error(r.error());
  for (const auto& dev : daemon.devices_json())
    if (dev["name"] == d.name) return {201, dev};
  return {201, json::object()};
}

RouteResult attach(Vusbd& daemon, std::string_view body) {
  json req;
  if (auto e = parse_object(body, req)) return *e;
  std::string device, vm;
  uint32_t port = 0;
  if (auto e = get_string(req, "device", device)) return *e;
  if (auto e = get_string(req, "vm", vm)) return *e;
  if (auto e = get_port(req, port)) return *e;
  auto addr = daemon.attach(device, vm, port);
  if (!addr) return from_error(addr.error());
  return {201, json{{"device", device},
                    {"vm", vm},
                    {"busid", addr->busid},
                    {"devid", addr->devid()},
                    {"port", daemon.vm_port(vm)}}};
}

RouteResult handle(Vusbd& daemon, std::string_view method, std::string_view target,
                   std::string_view body) {
  const auto p = route_path(target);
  if (p.size() < 3 || p[0] != "api" || p[1] != "v1") return error(404, "no such route");
  const std::string& what = p[2];
  auto only = [&](std::string_view allowed) -> std::optional<RouteResult> {
    if (method == allowed) return std::nullopt;
    return error(405, std::string(method) + " is not allowed here; use " + std::string(allowed));
  };
  if (what == "stats" && p.size() == 3) {
    if (auto e = only("GET")) return *e;
    return {200, daemon.stats()};
  }
  if (what == "vms" && p.size() == 3) {
    if (auto e = only("GET")) return *e;
    return {200, daemon.vms_json()};
  }
  if (what == "vms" && p.size() == 5 && p[4] == "qemu-args") {
    if (auto e = only("GET")) return *e;
    const std::string controller = query_value(target, "controller");
    auto r = daemon.qemu_snippets(p[3], controller.empty() ? "xhci" : controller);
    if (!r) return from_error(r.error());
    return {200, *r};
  }
  if (what == "vms" && p.size() == 5 && p[4] == "weight") {
    if (auto e = only("POST")) return *e;
    json req;
    if (auto e = parse_object(body, req)) return *e;
    auto it = req.find("weight");
    if (it == req.end() || !it->is_number_unsigned() || it->get<uint64_t>() == 0 ||
        it->get<uint64_t>() > 1000)
      return error(400, "\"weight\" must be 1..1000");
    if (auto r = daemon.set_weight(p[3], static_cast<uint32_t>(it->get<uint64_t>())); !r)
      return from_error(r.error());
    return {200, json{{"vm", p[3]}, {"weight", it->get<uint64_t>()}}};
  }
  if (what == "vms" && p.size() == 5 && p[4] == "usbredir") {
    // {"device": "gz", "listen": "127.0.0.1:4000" | "unix:/run/q.sock"} or {"device", "connect"}
    if (auto e = only("POST")) return *e;
    json req;
    if (auto e = parse_object(body, req)) return *e;
    const auto dev = req.find("device");
    const bool listen = req.contains("listen"), connect = req.contains("connect");
    if (dev == req.end() || !dev->is_string() || listen == connect)
      return error(400, "give \"device\" and one of \"listen\" or \"connect\"");
    const json& where = req[connect ? "connect" : "listen"];
    if (!where.is_string()) return error(400, "the endpoint must be a string");
    auto at = usb::net::parse_endpoint(where.get<std::string>(), "127.0.0.1");
    if (!at) return error(400, at.error().message);
    UsbredirAttachment a{dev->get<std::string>(), *at, connect};
    if (auto r = daemon.add_usbredir(p[3], a); !r) return from_error(r.error());
    return {200, json{{"vm", p[3]}, {"device", a.device},
                      {connect ? "connect" : "listen", at->to_string()}}};
  }
  if (what == "vms" && p.size() == 6 && p[4] == "usbredir") {
    if (auto e = only("DELETE")) return *e;
    if (auto r = daemon.remove_usbredir(p[3], p[5]); !r) return from_error(r.error());
    return {200, json{{"vm", p[3]}, {"device", p[5]}, {"usbredir", false}}};
  }
  if (what == "devices") {
    if (p.size() == 3) {
      if (method == "GET") return {200, daemon.devices_json()};
      if (method == "POST") return add_device(daemon, body);
      return error(405, "use GET or POST");
    }
    const std::string& name = p[3];
    if (p.size() == 4) {
      if (method == "GET") {
        for (const auto& d : daemon.devices_json())
          if (d["name"] == name) return {200, d};
        return error(404, "no device '" + name + "'");
      }
      if (method == "DELETE") {
        if (auto r = daemon.remove_device(name); !r) return from_error(r.error());
        return {200, json{{"removed", name}}};
      }
      return error(405, "use GET or DELETE");
    }
    if (p.size() == 5 && p[4] == "mode") {
      if (auto e = only("POST")) return *e;
      json req;
      if (auto e = parse_object(body, req)) return *e;
      std::string mode;
      if (auto e = get_string(req, "mode", mode)) return *e;
      if (auto r = daemon.set_mode(name, mode); !r) return from_error(r.error());
      return {200, json{{"device", name}, {"mode", mode}}};
    }
  }
  if (what == "attachments") {
    if (p.size() == 3) {
      if (method == "GET") return {200, attachments(daemon)};
      if (method == "POST") return attach(daemon, body);
      return error(405, "use GET or POST");
    }
    if (p.size() == 5) {
      if (auto e = only("DELETE")) return *e;
      if (auto r = daemon.detach(p[3], p[4]); !r) return from_error(r.error());
      return {200, json{{"device", p[3]}, {"vm", p[4]}, {"detached", true}}};
    }
  }
  return error(404, "no such route");
}

}  // namespace

std::vector<std::string> route_path(std::string_view target) {
  target = target.substr(0, target.find('?'));
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < target.size()) {
    size_t j = target.find('/', i);
    if (j == std::string_view::npos) j = target.size();
    if (j > i) parts.emplace_back(target.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}

RouteResult route(Vusbd& daemon, std::string_view method, std::string_view target,
                  std::string_view body) {
  RouteResult r = handle(daemon, method, target, body);
  if (r.status >= 400)
    // Method, target and the error (built from names in the request) are the client's words.
    spdlog::warn("control: {} {} → {}: {}", usb::printable(method), usb::printable(target),
                 r.status, usb::printable(r.body.value("error", std::string{})));
  else if (method != "GET")
    spdlog::info("control: {} {} → {}", usb::printable(method), usb::printable(target), r.status);
  return r;
}

}  // namespace vusbd
