#include "tools/vusbctl/cert_command.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "usb/net/pki.h"

namespace vusbctl {

namespace {

int fail(const std::string& why) {
  std::fprintf(stderr, "vusbctl cert: %s\n", why.c_str());
  return 1;
}

// Writes `text` to `path` with `mode`, refusing to overwrite: a CA key is not replaced by a
// typo.
bool write_new(const std::string& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    std::fprintf(stderr, "vusbctl cert: cannot create %s: %s\n", path.c_str(),
                 std::strerror(errno));
    return false;
  }
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

bool read(const std::string& path, std::string& out) {
  std::ifstream in(path);
  if (!in) return false;
  std::ostringstream s;
  s << in.rdbuf();
  out = s.str();
  return true;
}

}  // namespace

CertCommand::CertCommand(CLI::App& app) {
  cmd_ = app.add_subcommand("cert", "Make a site CA and certificates for vusb's TLS links");
  cmd_->require_subcommand(1);
  ca_ = cmd_->add_subcommand("ca", "Make a CA: DIR/ca.crt and DIR/ca.key (mode 0600)");
  ca_->add_option("--out", out_, "Directory to write to")->default_val(".");
  ca_->add_option("--name", name_, "The CA's common name")->default_val("vusb site CA");
  ca_->add_option("--days", days_, "Validity")->default_val(3650);
  issue_ = cmd_->add_subcommand(
      "issue", "Issue NAME.crt and NAME.key, signed by the CA in --ca (for a vusb-stub, a vusbd, "
               "a VM or a stunnel in one)");
  issue_->add_option("--name", name_, "Common name: what access lists call cn:NAME")->required();
  issue_->add_option("--host", hosts_,
                     "A host name or address the holder serves on (repeatable; clients check it)");
  issue_->add_option("--ca", ca_dir_, "Directory holding ca.crt and ca.key")->default_val(".");
  issue_->add_option("--out", out_, "Directory to write to")->default_val(".");
  issue_->add_option("--days", days_, "Validity")->default_val(825);
  issue_->add_option("--backdate", backdate_days_,
                     "Start the validity this many days ago (with a short --days: an expired "
                     "certificate, to check that peers refuse it)");
  fingerprint_ = cmd_->add_subcommand(
      "fingerprint", "Print a certificate's SHA-256 fingerprint (an access list's sha256:HEX)");
  fingerprint_->add_option("file", file_, "PEM certificate")->required();
}

int CertCommand::run() const {
  if (ca_->parsed()) {
    auto ca = usb::net::make_ca(name_, days_);
    if (!ca) return fail(ca.error().message);
    if (!write_new(out_ + "/ca.key", ca->key, 0600) ||
        !write_new(out_ + "/ca.crt", ca->cert, 0644))
      return 1;
    std::printf("%s/ca.crt: CA '%s'; keep %s/ca.key secret\n", out_.c_str(), name_.c_str(),
                out_.c_str());
    return 0;
  }
  if (issue_->parsed()) {
    usb::net::Pem ca;
    if (!read(ca_dir_ + "/ca.crt", ca.cert) || !read(ca_dir_ + "/ca.key", ca.key))
      return fail("cannot read " + ca_dir_ + "/ca.crt and ca.key (make them with `vusbctl cert ca`)");
    usb::net::CertRequest req;
    req.common_name = name_;
    req.hosts = hosts_;
    req.days = days_;
    if (backdate_days_ > 0) req.start_offset = std::chrono::hours(-24 * backdate_days_);
    auto pem = usb::net::issue_certificate(ca, req);
    if (!pem) return fail(pem.error().message);
    const std::string base = out_ + "/" + name_;
    if (!write_new(base + ".key", pem->key, 0600) || !write_new(base + ".crt", pem->cert, 0644))
      return 1;
    auto fp = usb::net::fingerprint(pem->cert);
    std::printf("%s.crt: cn:%s sha256:%s\n", base.c_str(), name_.c_str(),
                fp ? fp->c_str() : "?");
    return 0;
  }
  std::string pem;
  if (!read(file_, pem)) return fail("cannot read " + file_);
  auto fp = usb::net::fingerprint(pem);
  if (!fp) return fail(fp.error().message);
  std::printf("sha256:%s\n", fp->c_str());
  return 0;
}

}  // namespace vusbctl
