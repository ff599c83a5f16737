// ApiAccess: who a control API request comes from and what that caller may do — vusbd's
// answer to "a guest can reach the API on the host's loopback" (QEMU's user networking maps
// 10.0.2.2 to it), where an address says nothing about who is asking.
//
//   caller                                   role
//   a local user on the UNIX socket          admin (the listener admits only vusbd's uid and root)
//   Authorization: Bearer TOKEN              the role of the [[control.token]] whose file holds it
//   no Authorization header (TCP)            [control] anonymous: "read" (default) or "none"
//   a token nobody configured                none (401), whatever `anonymous` says
//
//   role   may
//   admin  everything: add and remove devices (libusb: and process: sources included), attach,
//          detach, modes, weights, usbredir channels
//   read   every GET: lists, stats, the events WebSocket, the dashboard
//   vm     GETs about its own VM only: its entry in /vms, its attachments, the devices given to
//          it, its stats and qemu-args (answers are filtered); no events stream
//   none   nothing (401)
// Tokens live in files of their own (one line, at least 16 characters; mode 0600 expected), never
// in the config vusbd rewrites. Pure apart from reading the token files in make(); used on
// vusbd's loop by ControlApi.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "usb/core/error.h"
#include "usb/net/stream.h"

namespace vusbd {

enum class ApiRole { kNone, kVm, kRead, kAdmin };

struct ApiCaller {
  ApiRole role = ApiRole::kNone;
  std::string vm;    // kVm: the one VM it may see
  std::string name;  // for log lines: "token 'ci'", "unix uid 0", "anonymous"
  bool bad_token = false;  // it presented a token nobody configured
};

struct ApiTokenConfig {
  std::string name;  // for logs and the config (defaults to the file's name)
  std::string file;  // holds the token
  std::string role;  // "admin", "read" or "vm"
  std::string vm;    // role "vm": which VM
  friend bool operator==(const ApiTokenConfig&, const ApiTokenConfig&) = default;
};

class ApiAccess {
 public:
  // Reads every token file; errors name the file or the bad role. `anonymous`: "read" or "none".
  static usb::Result<ApiAccess> make(const std::vector<ApiTokenConfig>& tokens,
                                     const std::string& anonymous = "read");

  ApiCaller identify(const usb::net::PeerInfo& peer, std::string_view authorization) const;

  struct Verdict {
    unsigned status = 0;  // 0: allowed; 401 or 403
    std::string why;
  };
  // Whether `caller` may make this request (method, target with its query).
  static Verdict check(const ApiCaller& caller, std::string_view method, std::string_view target);
  // Cuts a GET answer down to what a VM caller may see (no-op for other roles). False: the
  // whole answer is about something it may not see (answer 404).
  static bool filter(const ApiCaller& caller, std::string_view target, nlohmann::json& body);

  size_t tokens() const { return tokens_.size(); }
  bool anonymous_reads() const { return anonymous_ == ApiRole::kRead; }

 private:
  struct Token {
    std::string name, secret, vm;
    ApiRole role = ApiRole::kNone;
  };
  std::vector<Token> tokens_;
  ApiRole anonymous_ = ApiRole::kRead;
};

}  // namespace vusbd
