#include "vmm-frontend/api_access.h"

#include <algorithm>
#include <fstream>

#include "vmm-frontend/control_routes.h"

namespace vusbd {

namespace {

using json = nlohmann::json;

// Equal-time comparison: how long it takes does not tell a guesser how much of a token matched.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ (i < b.size() ? b[i] : 0);
  return diff == 0;
}

std::string role_name(ApiRole r) {
  switch (r) {
    case ApiRole::kAdmin: return "admin";
    case ApiRole::kRead: return "read";
    case ApiRole::kVm: return "vm";
    case ApiRole::kNone: return "none";
  }
  return "none";
}

}  // namespace

usb::Result<ApiAccess> ApiAccess::make(const std::vector<ApiTokenConfig>& tokens,
                                       const std::string& anonymous) {
  ApiAccess out;
  if (anonymous == "read")
    out.anonymous_ = ApiRole::kRead;
  else if (anonymous == "none")
    out.anonymous_ = ApiRole::kNone;
  else
    return usb::Error::make(usb::Error::Code::kInvalidArgument,
                            "control anonymous must be \"read\" or \"none\", not \"" + anonymous +
                                "\"");
  for (const auto& t : tokens) {
    Token tok;
    tok.name = t.name.empty() ? t.file.substr(t.file.rfind('/') + 1) : t.name;
    auto bad = [&](const std::string& why) {
      return usb::Error::make(usb::Error::Code::kInvalidArgument,
                              "control token '" + tok.name + "': " + why);
    };
    if (t.role == "admin")
      tok.role = ApiRole::kAdmin;
    else if (t.role == "read")
      tok.role = ApiRole::kRead;
    else if (t.role == "vm")
      tok.role = ApiRole::kVm;
    else
      return bad("role must be admin, read or vm, not \"" + t.role + "\"");
    if ((tok.role == ApiRole::kVm) != !t.vm.empty())
      return bad("a vm token names its VM (vm = \"NAME\"), and only a vm token does");
    tok.vm = t.vm;
    std::ifstream in(t.file);
    if (!in || !std::getline(in, tok.secret)) return bad("cannot read " + t.file);
    while (!tok.secret.empty() && (tok.secret.back() == '\r' || tok.secret.back() == ' '))
      tok.secret.pop_back();
    if (tok.secret.size() < 16) return bad(t.file + " holds fewer than 16 characters");
    for (const auto& other : out.tokens_)
      if (other.secret == tok.secret) return bad("the same token as '" + other.name + "'");
    out.tokens_.push_back(std::move(tok));
  }
  return out;
}

ApiCaller ApiAccess::identify(const usb::net::PeerInfo& peer,
                              std::string_view authorization) const {
  if (peer.uid) return {ApiRole::kAdmin, {}, "unix uid " + std::to_string(*peer.uid)};
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.empty())
    return {anonymous_, {}, "anonymous " + peer.name};
  if (!authorization.starts_with(kBearer))
    return {ApiRole::kNone, {}, peer.name, true};
  const std::string_view secret = authorization.substr(kBearer.size());
  const Token* found = nullptr;
  for (const auto& t : tokens_)  // every token compared: the time says nothing about which
    if (same_secret(secret, t.secret)) found = &t;
  if (!found) return {ApiRole::kNone, {}, peer.name, true};
  return {found->role, found->vm, "token '" + found->name + "' (" + role_name(found->role) + ")"};
}

ApiAccess::Verdict ApiAccess::check(const ApiCaller& caller, std::string_view method,
                                    std::string_view target) {
  if (caller.role == ApiRole::kNone)
    return {401, caller.bad_token ? "unknown token" : "this API needs a token (Authorization: Bearer)"};
  if (caller.role == ApiRole::kAdmin) return {};
  if (method != "GET")
    return {403, caller.name + " may only read; changes need an admin token or the UNIX socket"};
  if (caller.role == ApiRole::kRead) return {};
  // A VM's token: the dashboard page, and what concerns its VM.
  const auto p = route_path(target);
  if (p.empty()) return {};
  if (p.size() >= 3 && p[0] == "api" && p[1] == "v1") {
    const std::string& what = p[2];
    if (p.size() == 3 && (what == "vms" || what == "devices" || what == "attachments" ||
                          what == "stats"))
      return {};  // answered filtered
    if (what == "vms" && p.size() >= 4 && p[3] == caller.vm) return {};
    if (what == "devices" && p.size() == 4) return {};  // filtered: 404 unless given to it
  }
  return {403, caller.name + " sees only vm " + caller.vm};
}

bool ApiAccess::filter(const ApiCaller& caller, std::string_view target, json& body) {
  if (caller.role != ApiRole::kVm) return true;
  const auto p = route_path(target);
  if (p.size() < 3) return true;
  const std::string& what = p[2];
  // An entry of a device's "vms" list ("vm1", or {"vm": "vm1", ...}) that is the caller's VM.
  auto mine = [&](const json& v) {
    return (v.is_string() && v == caller.vm) || (v.is_object() && v.value("vm", "") == caller.vm);
  };
  // A device as its VM sees it: the other VMs' names and bus ids left out.
  auto own_entries = [&](json d) {
    for (const char* key : {"vms", "discovers_for"}) {
      if (!d.contains(key) || !d[key].is_array()) continue;
      json kept = json::array();
      for (const auto& v : d[key])
        if (mine(v)) kept.push_back(v);
      d[key] = std::move(kept);
    }
    return d;
  };
  auto gives_vm = [&](const json& d) {
    return d.is_object() && d.contains("vms") && d["vms"].is_array() &&
           std::ranges::any_of(d["vms"], mine);
  };
  if (what == "vms" && p.size() == 3 && body.is_array()) {
    json out = json::array();
    for (const auto& v : body)
      if (v.value("name", "") == caller.vm) out.push_back(v);
    body = std::move(out);
  } else if (what == "devices" && p.size() == 3 && body.is_array()) {
    json out = json::array();
    for (auto& d : body)
      if (gives_vm(d)) out.push_back(own_entries(d));
    body = std::move(out);
  } else if (what == "devices" && p.size() == 4) {
    if (!gives_vm(body)) {
      body = json{{"error", "no device '" + p[3] + "'"}};
      return false;
    }
    body = own_entries(body);
  } else if (what == "attachments" && body.is_array()) {
    json out = json::array();
    for (const auto& a : body)
      if (a.value("vm", "") == caller.vm) out.push_back(a);
    body = std::move(out);
  } else if (what == "stats" && body.is_object()) {
    json out = json::object();
    if (body.contains("vms") && body["vms"].contains(caller.vm))
      out["vms"][caller.vm] = body["vms"][caller.vm];
    body = std::move(out);
  }
  return true;
}

}  // namespace vusbd
