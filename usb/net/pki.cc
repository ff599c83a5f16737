#include "usb/net/pki.h"

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <boost/asio/ip/address.hpp>
#include <memory>

#include "usb/net/openssl_util.h"

namespace usb::net {

namespace {

template <auto Free>
struct Deleter {
  template <class T>
  void operator()(T* p) const { Free(p); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using CertPtr = std::unique_ptr<X509, Deleter<X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free>>;

std::unexpected<Error> ssl_error(const std::string& what) {
  return Error::make(Error::Code::kInvalidArgument, what + ": " + openssl::last_error());
}

std::string to_pem(auto write) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || write(bio.get()) != 1) return {};
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

Result<CertPtr> read_cert(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  CertPtr c(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!c) return (ssl_error("certificate"));
  return c;
}

Result<KeyPtr> read_key(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  KeyPtr k(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!k) return (ssl_error("private key"));
  return k;
}

bool add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// Fills a new certificate for `key` named `cn`; `issuer`/`issuer_key` sign it (null: itself).
Result<Pem> build(const std::string& cn, int days, std::chrono::seconds start, bool is_ca,
                  const std::vector<std::string>& hosts, X509* issuer, EVP_PKEY* issuer_key) {
  if (cn.empty() || cn.size() > 64)
    return Error::make(Error::Code::kInvalidArgument, "a common name is 1..64 bytes");
  if (days <= 0) return Error::make(Error::Code::kInvalidArgument, "days must be positive");
  KeyPtr key(EVP_EC_gen("P-256"));
  CertPtr cert(X509_new());
  if (!key || !cert) return (ssl_error("key generation"));
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), static_cast<long>(start.count()));
  X509_gmtime_adj(X509_getm_notAfter(cert.get()),
                  static_cast<long>(start.count()) + static_cast<long>(days) * 86400L);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("vusb"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* signer = issuer ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  bool ok = add_ext(cert.get(), signer, NID_subject_key_identifier, "hash");
  ok = ok && add_ext(cert.get(), signer, NID_authority_key_identifier, "keyid:always");
  if (is_ca) {
    ok = ok && add_ext(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    ok = ok && add_ext(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    ok = ok && add_ext(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    ok = ok && add_ext(cert.get(), signer, NID_key_usage, "critical,digitalSignature");
    ok = ok && add_ext(cert.get(), signer, NID_ext_key_usage, "serverAuth,clientAuth");
    std::string san;
    for (const auto& h : hosts) {
      // One name each: a comma (or anything outside a host name or address) would smuggle
      // further names into the certificate.
      if (h.empty() || h.size() > 253 ||
          h.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:*") !=
              std::string::npos)
        return Error::make(Error::Code::kInvalidArgument, "bad host name '" + h + "'");
      boost::system::error_code ec;
      boost::asio::ip::make_address(h, ec);
      san += (san.empty() ? "" : ",") + std::string(ec ? "DNS:" : "IP:") + h;
    }
    if (!san.empty()) ok = ok && add_ext(cert.get(), signer, NID_subject_alt_name, san);
  }
  if (!ok) return (ssl_error("certificate extensions"));
  if (X509_sign(cert.get(), issuer_key ? issuer_key : key.get(), EVP_sha256()) == 0)
    return (ssl_error("signing"));
  Pem out;
  out.cert = to_pem([&](BIO* b) { return PEM_write_bio_X509(b, cert.get()); });
  out.key = to_pem([&](BIO* b) {
    return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  });
  if (out.cert.empty() || out.key.empty()) return (ssl_error("PEM output"));
  return out;
}

}  // namespace

Result<Pem> make_ca(const std::string& common_name, int days) {
  return build(common_name, days, std::chrono::seconds(-300), true, {}, nullptr, nullptr);
}

Result<Pem> issue_certificate(const Pem& ca, const CertRequest& request) {
  auto ca_cert = read_cert(ca.cert);
  if (!ca_cert) return std::unexpected(ca_cert.error());
  auto ca_key = read_key(ca.key);
  if (!ca_key) return std::unexpected(ca_key.error());
  return build(request.common_name, request.days, request.start_offset, false, request.hosts,
               ca_cert->get(), ca_key->get());
}

Result<std::string> fingerprint(const std::string& cert_pem) {
  auto cert = read_cert(cert_pem);
  if (!cert) return std::unexpected(cert.error());
  std::string out = openssl::sha256_fingerprint(cert->get());
  if (out.empty()) return ssl_error("digest");
  return out;
}

}  // namespace usb::net
