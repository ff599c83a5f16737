// A site's small PKI for vusb's TLS links: a CA, and certificates it issues to each vusb-stub,
// vusbd, VM and operator — EC P-256 keys, X.509 v3 with subjectAltName for the host names and
// addresses a server answers on, serverAuth and clientAuth both (every vusb peer can be either).
// `vusbctl cert` is its command line; the tests make certificates with any validity (expired
// ones included) through it. Pure functions over PEM text; OpenSSL stays in pki.cc.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "usb/core/error.h"

namespace usb::net {

struct Pem {
  std::string cert;
  std::string key;
};

struct CertRequest {
  std::string common_name;         // the identity access lists name ("cn:vm1")
  std::vector<std::string> hosts;  // subjectAltName: IP addresses and DNS names
  int days = 825;
  // Validity starts this long from now (negative: in the past — with a short `days`, an
  // already expired certificate).
  std::chrono::seconds start_offset{-300};
};

// A self-signed CA certificate and its key.
Result<Pem> make_ca(const std::string& common_name, int days = 3650);
// A certificate for `request`, signed by `ca`.
Result<Pem> issue_certificate(const Pem& ca, const CertRequest& request);
// The SHA-256 fingerprint of a PEM certificate, lower-case hex (what PeerInfo::tls carries).
Result<std::string> fingerprint(const std::string& cert_pem);

}  // namespace usb::net
