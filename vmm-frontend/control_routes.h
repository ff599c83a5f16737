// The control API's routes: one HTTP request (method, target, JSON body) in, a status code and a
// JSON body out, against the Vusbd registry. No sockets here — ControlApi (Boost.Beast) carries
// requests to it, and the unit tests call it directly.
//
//   GET    /api/v1/devices                 every device: source, mode, connected, its VMs
//   POST   /api/v1/devices                 {name, source, mode?, vms?, ports?} → 201
//   GET    /api/v1/devices/NAME
//   DELETE /api/v1/devices/NAME            unplugs it from every VM and forgets it
//   POST   /api/v1/devices/NAME/mode       {mode: "shared" | "exclusive"}
//   GET    /api/v1/vms                     every VM: its listen address and its devices
//   GET    /api/v1/attachments             [{device, vm, busid, devid, imported}]
//   POST   /api/v1/attachments             {device, vm, port?} → 201 {busid, devid}
//   DELETE /api/v1/attachments/DEVICE/VM
//   GET    /api/v1/stats                   per-VM per-device URBs, bytes, latency, cache hits
// Errors are {"error": message} with 400 (bad JSON or argument), 404 (no such device, VM or
// route), 405 (method), 409 (name or port taken). Lives on vusbd's loop.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace vusbd {

class Vusbd;

struct RouteResult {
  unsigned status = 200;
  nlohmann::json body;
};

RouteResult route(Vusbd& daemon, std::string_view method, std::string_view target,
                  std::string_view body);

// The path segments a target names, as route() reads them — "/api/v1/devices/gz/mode?x" →
// {"api", "v1", "devices", "gz", "mode"} (the query and empty segments dropped). ApiAccess
// decides on the same segments, so the check and the route never disagree about a target.
std::vector<std::string> route_path(std::string_view target);

}  // namespace vusbd
