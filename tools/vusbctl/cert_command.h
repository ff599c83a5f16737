// `vusbctl cert`: a site CA and the certificates it issues for vusb's TLS links, without
// openssl's command line — `cert ca` makes the CA, `cert issue` a certificate for a vusb-stub,
// a vusbd or a VM (its common name is what access lists name as cn:NAME), `cert fingerprint`
// prints the SHA-256 an access list names as sha256:HEX. Local files only; vusbd is not asked.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace vusbctl {

class CertCommand {
 public:
  explicit CertCommand(CLI::App& app);
  bool parsed() const { return cmd_->parsed(); }
  int run() const;

 private:
  CLI::App* cmd_;
  CLI::App* ca_;
  CLI::App* issue_;
  CLI::App* fingerprint_;
  std::string out_ = ".", ca_dir_ = ".", name_, file_;
  std::vector<std::string> hosts_;
  int days_ = 0;
  int backdate_days_ = 0;
};

}  // namespace vusbctl
