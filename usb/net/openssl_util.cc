#include "usb/net/openssl_util.h"

#include <openssl/err.h>
#include <openssl/evp.h>

namespace usb::net::openssl {

std::string last_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

std::string sha256_fingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(cert, EVP_sha256(), md, &n) != 1) return {};
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size_t{n} * 2);
  for (unsigned i = 0; i < n; ++i) {
    out += kDigits[md[i] >> 4];
    out += kDigits[md[i] & 15];
  }
  return out;
}

}  // namespace usb::net::openssl
