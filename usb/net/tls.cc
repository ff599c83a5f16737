#include "usb/net/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <fstream>
#include <vector>

#include "usb/net/openssl_util.h"

namespace usb::net {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using boost::system::error_code;

struct TlsContext::Impl {
  Impl(TlsConfig c, TlsRole r) : config(std::move(c)), role(r), ctx(ssl::context::tls) {}
  TlsConfig config;
  TlsRole role;
  ssl::context ctx;
  std::vector<Psk> psks;  // server: all admitted; client: the one offered (front)
  mutable std::atomic<uint64_t> failures{0};
};

namespace {

constexpr size_t kCoalesceLimit = 64 * 1024;  // gathered writes up to this are one TLS record run

// Where an SSL object points back at its TlsStream (for the PSK callbacks). Not SSL's "app data":
// Asio keeps its verify callback there.
int stream_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

TlsPeer certificate_identity(X509* cert) {
  TlsPeer p;
  if (BIO* bio = BIO_new(BIO_s_mem())) {
    X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio, &data);
    if (len > 0) p.subject.assign(data, static_cast<size_t>(len));
    BIO_free(bio);
  }
  char cn[256] = {};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) > 0)
    p.common_name = cn;
  p.fingerprint = openssl::sha256_fingerprint(cert);
  return p;
}

// A Stream over Asio's SSL stream on a socket. Made by TlsContext::upgrade; owned by the
// connection that uses it after the handshake; lives on its socket's loop.
class TlsStream final : public Stream {
 public:
  TlsStream(SocketStream::Socket socket, PeerInfo peer,
            std::shared_ptr<const TlsContext> context, TlsContext::Impl& impl)
      : context_(std::move(context)), impl_(impl), ssl_(std::move(socket), impl.ctx),
        peer_(std::move(peer)) {
    SSL_set_ex_data(ssl_.native_handle(), stream_index(), this);
  }

  asio::any_io_executor get_executor() override { return ssl_.get_executor(); }
  void async_read_some(asio::mutable_buffer buffer, Handler done) override {
    ssl_.async_read_some(buffer, [done = std::move(done)](error_code ec, size_t n) mutable {
      done(ec, n);
    });
  }
  void async_read(asio::mutable_buffer buffer, Handler done) override {
    asio::async_read(ssl_, buffer, [done = std::move(done)](error_code ec, size_t n) mutable {
      done(ec, n);
    });
  }
  void async_write_some(asio::const_buffer buffer, Handler done) override {
    ssl_.async_write_some(buffer, [done = std::move(done)](error_code ec, size_t n) mutable {
      done(ec, n);
    });
  }
  void async_write(std::span<const asio::const_buffer> buffers, Handler done) override {
    // A USB/IP PDU is a 48-byte header and its payload in two buffers; written apart they would
    // be two TLS records (and two sends). Small gathers are copied into one.
    size_t total = 0;
    for (const auto& b : buffers) total += b.size();
    if (buffers.size() > 1 && total <= kCoalesceLimit) {
      staging_.resize(total);
      size_t at = 0;
      for (const auto& b : buffers) {
        std::memcpy(staging_.data() + at, b.data(), b.size());
        at += b.size();
      }
      asio::async_write(ssl_, asio::buffer(staging_),
                        [done = std::move(done)](error_code ec, size_t n) mutable { done(ec, n); });
      return;
    }
    asio::async_write(ssl_, buffers,
                      [done = std::move(done)](error_code ec, size_t n) mutable { done(ec, n); });
  }
  using Stream::async_write;
  void close() override {
    auto& s = ssl_.lowest_layer();
    if (!s.is_open()) return;
    error_code ec;
    s.shutdown(asio::socket_base::shutdown_both, ec);
    s.close(ec);
  }
  bool is_open() const override { return ssl_.lowest_layer().is_open(); }
  const PeerInfo& peer() const override { return peer_; }

  ssl::stream<SocketStream::Socket>& ssl() { return ssl_; }
  TlsContext::Impl& impl() { return impl_; }
  void set_psk_identity(std::string id) { psk_identity_ = std::move(id); }
  // After the handshake: what it proved. A PSK identity counts only if the handshake really used
  // that PSK (its binder checked: the session is "reused" in OpenSSL's terms) — OpenSSL asks for
  // a key and may then drop the PSK and fall back to certificates. False: the peer proved
  // nothing (a server without a CA whose client offered no PSK).
  bool record_identity() {
    TlsPeer p;
    if (!psk_identity_.empty() && SSL_session_reused(ssl_.native_handle()) == 1) {
      p.psk_identity = psk_identity_;
    } else if (X509* cert = SSL_get1_peer_certificate(ssl_.native_handle())) {
      p = certificate_identity(cert);
      X509_free(cert);
    }
    if (p.psk_identity.empty() && p.fingerprint.empty()) return false;
    peer_.tls = std::move(p);
    peer_.name += peer_.tls->psk_identity.empty() ? " (tls cn=" + peer_.tls->common_name + ")"
                                                  : " (tls psk=" + peer_.tls->psk_identity + ")";
    return true;
  }

 private:
  std::shared_ptr<const TlsContext> context_;  // keeps the callbacks' Impl alive
  TlsContext::Impl& impl_;
  ssl::stream<SocketStream::Socket> ssl_;
  PeerInfo peer_;
  std::string psk_identity_;
  std::vector<uint8_t> staging_;
};

unsigned psk_server_callback(SSL* s, const char* identity, unsigned char* psk,
                             unsigned int max_len) {
  auto* stream = static_cast<TlsStream*>(SSL_get_ex_data(s, stream_index()));
  if (!stream || !identity) return 0;
  for (const auto& p : stream->impl().psks) {
    if (p.identity != identity) continue;
    if (p.key.size() > max_len) return 0;
    std::memcpy(psk, p.key.data(), p.key.size());
    stream->set_psk_identity(p.identity);
    return static_cast<unsigned>(p.key.size());
  }
  return 0;  // unknown identity: falls back to certificates, which it then needs
}

unsigned psk_client_callback(SSL* s, const char*, char* identity, unsigned int max_identity_len,
                             unsigned char* psk, unsigned int max_psk_len) {
  auto* stream = static_cast<TlsStream*>(SSL_get_ex_data(s, stream_index()));
  if (!stream || stream->impl().psks.empty()) return 0;
  const Psk& p = stream->impl().psks.front();
  if (p.identity.size() + 1 > max_identity_len || p.key.size() > max_psk_len) return 0;
  std::memcpy(identity, p.identity.c_str(), p.identity.size() + 1);
  std::memcpy(psk, p.key.data(), p.key.size());
  stream->set_psk_identity(p.identity);  // the server's identity, if it takes the PSK
  return static_cast<unsigned>(p.key.size());
}

}  // namespace

Result<std::vector<Psk>> read_psk_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error::make(Error::Code::kNotFound, "cannot read PSK file " + path);
  std::vector<Psk> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty() || line.front() == '#') continue;
    const auto colon = line.find(':');
    const auto where = path + ":" + std::to_string(n) + ": ";
    if (colon == std::string::npos)
      return Error::make(Error::Code::kInvalidArgument, where + "expected IDENTITY:KEY");
    Psk p{line.substr(0, colon), line.substr(colon + 1)};
    if (p.identity.empty() || p.identity.size() > 128)
      return Error::make(Error::Code::kInvalidArgument, where + "identity must be 1..128 bytes");
    if (p.key.size() < 16 || p.key.size() > 64)
      return Error::make(Error::Code::kInvalidArgument,
                         where + "key must be 16..64 bytes (it has " +
                             std::to_string(p.key.size()) + ")");
    out.push_back(std::move(p));
  }
  if (out.empty()) return Error::make(Error::Code::kInvalidArgument, path + ": no PSK in it");
  return out;
}

TlsContext::TlsContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsContext::~TlsContext() = default;
TlsRole TlsContext::role() const { return impl_->role; }
const TlsConfig& TlsContext::config() const { return impl_->config; }
uint64_t TlsContext::failures() const { return impl_->failures.load(); }

Result<std::shared_ptr<TlsContext>> TlsContext::make(const TlsConfig& config, TlsRole role) {
  auto impl = std::make_unique<Impl>(config, role);
  SSL_CTX* ctx = impl->ctx.native_handle();
  auto bad = [](const std::string& what) {
    return Error::make(Error::Code::kInvalidArgument, what + ": " + openssl::last_error());
  };
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1) return bad("TLS 1.3");
  // No resumption: every connection authenticates in full (a resumed session would skip the
  // certificate's expiry and lose a PSK identity). TLS 1.3 still sends stateful tickets with
  // SSL_OP_NO_TICKET alone: none at all, and no session cache.
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  // A PSK handshake is a "resumption" to OpenSSL, which wants a session context when it also
  // verifies client certificates.
  static constexpr unsigned char kSessionContext[] = "vusb";
  if (role == TlsRole::kServer)
    SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);

  const bool server = role == TlsRole::kServer;
  if (!config.cert_file.empty() || !config.key_file.empty()) {
    if (config.cert_file.empty() || config.key_file.empty())
      return Error::make(Error::Code::kInvalidArgument,
                         "a TLS certificate needs both cert and key files");
    if (SSL_CTX_use_certificate_chain_file(ctx, config.cert_file.c_str()) != 1)
      return bad("certificate " + config.cert_file);
    if (SSL_CTX_use_PrivateKey_file(ctx, config.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
      return bad("key " + config.key_file + " for " + config.cert_file);
    if (SSL_CTX_check_private_key(ctx) != 1)
      return bad("key " + config.key_file + " does not match " + config.cert_file);
  }
  if (!config.ca_file.empty() && SSL_CTX_load_verify_locations(ctx, config.ca_file.c_str(),
                                                               nullptr) != 1)
    return bad("CA " + config.ca_file);
  if (!config.psk_file.empty()) {
    auto psks = read_psk_file(config.psk_file);
    if (!psks) return std::unexpected(psks.error());
    impl->psks = std::move(*psks);
    if (!server && !config.psk_identity.empty()) {
      auto it = std::ranges::find(impl->psks, config.psk_identity, &Psk::identity);
      if (it == impl->psks.end())
        return Error::make(Error::Code::kInvalidArgument, config.psk_file + " has no identity " +
                                                              config.psk_identity);
      std::rotate(impl->psks.begin(), it, it + 1);
    }
    // A PSK carries SHA-256 (RFC 8446 4.2.11 for keys without a hash of their own): a handshake
    // that picked a SHA-384 suite would ignore it and fall back to certificates.
    // SHA-256 suites only: a SHA-384 one would make OpenSSL set the PSK aside.
    if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256") != 1)
      return bad("TLS 1.3 suites");
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (server)
      SSL_CTX_set_psk_server_callback(ctx, psk_server_callback);
    else
      SSL_CTX_set_psk_client_callback(ctx, psk_client_callback);
  }

  if (server) {
    if (config.cert_file.empty() && impl->psks.empty())
      return Error::make(Error::Code::kInvalidArgument,
                         "a TLS server needs a certificate (cert, key) or a PSK file");
    if (!config.ca_file.empty()) {
      // Mutual: a peer with no PSK must show a certificate from the CA.
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    } else if (impl->psks.empty()) {
      return Error::make(Error::Code::kInvalidArgument,
                         "a TLS server needs a CA to check clients' certificates, or PSKs: "
                         "anyone could connect otherwise");
    }
  } else {
    if (config.ca_file.empty() && impl->psks.empty())
      return Error::make(Error::Code::kInvalidArgument,
                         "a TLS client needs the CA that signed the server's certificate, or a "
                         "PSK: it could not tell its server from anyone else otherwise");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  return std::shared_ptr<TlsContext>(new TlsContext(std::move(impl)));
}

void TlsContext::upgrade(std::unique_ptr<SocketStream> plain, UpgradeHandler done,
                         const std::string& server_name) const {
  struct Op {
    std::unique_ptr<TlsStream> stream;
    asio::steady_timer timer;
    UpgradeHandler done;
    bool timed_out = false;
  };
  PeerInfo peer = plain->peer();
  // The stream keeps the context alive: OpenSSL's callbacks reach its Impl.
  auto stream = std::make_unique<TlsStream>(std::move(plain->socket()), std::move(peer),
                                            shared_from_this(), *impl_);
  auto executor = stream->get_executor();
  auto op = std::make_shared<Op>(Op{std::move(stream), asio::steady_timer(executor),
                                    std::move(done)});
  auto& ssl_stream = op->stream->ssl();
  const bool server = impl_->role == TlsRole::kServer;
  if (!server) {
    const std::string& name =
        impl_->config.server_name.empty() ? server_name : impl_->config.server_name;
    // Checked whenever a certificate is (a server may decline the PSK and show one instead).
    if (!name.empty() && name != "*") {
      // OpenSSL checks the name as part of the chain ("hostname mismatch", "IP address
      // mismatch" in the refusal).
      SSL* s = ssl_stream.native_handle();
      error_code ec;
      asio::ip::make_address(name, ec);
      const bool set = ec ? SSL_set_tlsext_host_name(s, name.c_str()) == 1 &&
                                SSL_set1_host(s, name.c_str()) == 1
                          : X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s), name.c_str()) == 1;
      if (!set) {
        ERR_clear_error();
        asio::post(executor, [op, name] {
          auto cb = std::move(op->done);
          cb(Error::make(Error::Code::kInvalidArgument, "bad TLS server name " + name));
        });
        return;
      }
    }
  }
  op->timer.expires_after(impl_->config.handshake_timeout);
  op->timer.async_wait([op](error_code ec) {
    if (ec || !op->done) return;
    op->timed_out = true;
    op->stream->close();  // the handshake completes with an error, reported as a timeout
  });
  const Impl* impl = impl_.get();
  ssl_stream.async_handshake(
      server ? ssl::stream_base::server : ssl::stream_base::client,
      [op, impl](error_code ec) {
        op->timer.cancel();
        auto done = std::move(op->done);
        auto& s = *op->stream;
        if (ec || op->timed_out) {
          ++impl->failures;
          std::string why = op->timed_out ? "no TLS handshake within " +
                                                std::to_string(impl->config.handshake_timeout.count()) +
                                                " ms"
                                          : "TLS handshake: " + ec.message();
          const long verify = SSL_get_verify_result(s.ssl().native_handle());
          if (!op->timed_out && verify != X509_V_OK)
            why += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
          ERR_clear_error();
          s.close();
          return done(Error::make(op->timed_out ? Error::Code::kIo : Error::Code::kDenied, why));
        }
        if (!s.record_identity()) {
          ++impl->failures;
          s.close();
          return done(Error::make(Error::Code::kDenied,
                                  "TLS handshake: the peer showed neither a PSK nor a certificate"));
        }
        done(std::unique_ptr<Stream>(std::move(op->stream)));
      });
}

}  // namespace usb::net
