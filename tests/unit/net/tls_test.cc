// TLS 1.3 links (tls.h, pki.h) between a Listener and the connector on one loop: mutual
// certificates from a site CA and PSKs admit a peer and name it; no certificate, another CA's,
// an expired one, a wrong PSK, a server certificate for another host, and a peer that never
// finishes its handshake are refused before the protocol sees a byte.
#include "usb/net/tls.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <filesystem>
#include <fstream>
#include <optional>

#include "tests/unit/run_until.h"
#include "usb/net/connector.h"
#include "usb/net/listener.h"
#include "usb/net/pki.h"

namespace usb::net {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using usb::testing::run_until;

// One site CA, another CA, and certificates both issue, written once per test binary.
class Pki {
 public:
  static const Pki& get() {
    static Pki pki;
    return pki;
  }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

 private:
  Pki() {
    dir_ = std::filesystem::temp_directory_path() / ("vusb-tls-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    auto ca = make_ca("site CA");
    auto other = make_ca("other CA");
    EXPECT_TRUE(ca && other);
    write("ca", *ca);
    write("other-ca", *other);
    write("server", *issue_certificate(*ca, {"stub1", {"127.0.0.1", "localhost"}}));
    write("wrong-host", *issue_certificate(*ca, {"stub2", {"stub2.example"}}));
    write("vm1", *issue_certificate(*ca, {"vm1", {}}));
    write("stranger", *issue_certificate(*other, {"vm1", {}}));
    CertRequest expired{"vm1", {}, 1, std::chrono::hours(-72)};
    write("expired", *issue_certificate(*ca, expired));
    std::ofstream(file("psk.txt")) << "# phone and laptop\nphone:0123456789abcdef0123\n"
                                      "laptop:fedcba9876543210fedcba\n";
    std::ofstream(file("psk-wrong.txt")) << "phone:0123456789abcdef0124\n";
    std::ofstream(file("psk-unknown.txt")) << "tablet:0123456789abcdef0123\n";
  }
  ~Pki() { std::filesystem::remove_all(dir_); }
  void write(const std::string& name, const Pem& pem) {
    std::ofstream(file(name + ".crt")) << pem.cert;
    std::ofstream(file(name + ".key")) << pem.key;
  }
  std::filesystem::path dir_;
};

TlsConfig certs(const std::string& name, const std::string& ca = "ca") {
  const auto& p = Pki::get();
  TlsConfig c;
  c.ca_file = p.file(ca + ".crt");
  if (!name.empty()) {
    c.cert_file = p.file(name + ".crt");
    c.key_file = p.file(name + ".key");
  }
  return c;
}

TlsConfig psk(const std::string& file, const std::string& identity = {}) {
  TlsConfig c;
  c.psk_file = Pki::get().file(file);
  c.psk_identity = identity;
  return c;
}

class TlsTest : public ::testing::Test {
 protected:
  // A TLS listener on a loopback port with `server` config; accepted streams go to accepted_.
  void serve(TlsConfig server) {
    server.handshake_timeout = std::chrono::milliseconds(300);
    auto ctx = TlsContext::make(server, TlsRole::kServer);
    ASSERT_TRUE(ctx) << ctx.error().message;
    Listener::Options o;
    o.tls = *ctx;
    listener_.emplace(io_, o);
    Endpoint at("127.0.0.1", 0);
    at.tls = true;
    ASSERT_TRUE(listener_->listen(at));
    listener_->start([this](std::unique_ptr<Stream> s) { accepted_.push_back(std::move(s)); });
  }

  Result<std::unique_ptr<Stream>> connect(const TlsConfig& client, std::string host = "127.0.0.1") {
    auto ctx = TlsContext::make(client, TlsRole::kClient);
    if (!ctx) return std::unexpected(ctx.error());
    std::optional<Result<std::unique_ptr<Stream>>> got;
    Endpoint to(std::move(host), listener_->local_port());
    to.tls = true;
    async_connect(io_, to, ConnectOptions{{}, *ctx}, std::chrono::seconds(3),
                  [&](Result<std::unique_ptr<Stream>> r) { got = std::move(r); });
    EXPECT_TRUE(run_until(io_, [&] { return got.has_value(); }));
    if (!got) return Error::make(Error::Code::kIo, "no answer");
    return std::move(*got);
  }

  // Whether the server side admitted the client: one stream accepted, bytes both ways.
  bool talks(Stream& client) {
    if (!run_until(io_, [&] { return accepted_.size() > talked_; }, 2000)) return false;
    Stream& server = *accepted_[talked_++];
    std::string hello = "USB/IP", payload(100000, 'x'), back(6 + payload.size(), 0);
    std::array<asio::const_buffer, 2> out{asio::buffer(hello), asio::buffer(payload)};
    bool wrote = false, read = false;
    client.async_write(std::span<const asio::const_buffer>(out), [&](error_code ec, size_t) {
      wrote = !ec;
    });
    server.async_read(asio::buffer(back), [&](error_code ec, size_t) { read = !ec; });
    if (!run_until(io_, [&] { return wrote && read; })) return false;
    return back == hello + payload;
  }

  // Whether the client's stream is dead: a read fails (the server aborted the handshake).
  bool refused(Stream& client) {
    std::array<char, 1> b{};
    std::optional<error_code> got;
    client.async_read(asio::buffer(b), [&](error_code ec, size_t) { got = ec; });
    run_until(io_, [&] { return got.has_value(); }, 3000);
    return got && *got && accepted_.empty();
  }

  asio::io_context io_;
  std::optional<Listener> listener_;
  std::vector<std::unique_ptr<Stream>> accepted_;
  size_t talked_ = 0;  // accepted streams talks() has used
};

TEST_F(TlsTest, MutualCertificatesCarryTheBytesAndNameThePeer) {
  serve(certs("server"));
  auto client = connect(certs("vm1"));
  ASSERT_TRUE(client) << client.error().message;
  ASSERT_TRUE(talks(**client));
  const auto& peer = accepted_.back()->peer();
  ASSERT_TRUE(peer.tls);
  EXPECT_EQ(peer.tls->common_name, "vm1");
  EXPECT_EQ(peer.tls->subject, "CN=vm1,O=vusb");
  std::ifstream in(Pki::get().file("vm1.crt"));
  std::string pem((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(peer.tls->fingerprint, *fingerprint(pem));
  EXPECT_TRUE(peer.authenticated());
  EXPECT_NE(peer.name.find("(tls cn=vm1)"), std::string::npos) << peer.name;
  // And the client knows its server.
  ASSERT_TRUE((*client)->peer().tls);
  EXPECT_EQ((*client)->peer().tls->common_name, "stub1");
}

TEST_F(TlsTest, AClientWithoutACertificateIsRefused) {
  serve(certs("server"));
  auto client = connect(certs(""));
  if (client) {
    EXPECT_TRUE(refused(**client));
  }
  EXPECT_TRUE(run_until(io_, [&] { return listener_->handshake_failures() == 1; }));
  EXPECT_TRUE(accepted_.empty());
}

TEST_F(TlsTest, ACertificateFromAnotherCaIsRefused) {
  serve(certs("server"));
  auto client = connect(certs("stranger"));
  if (client) {
    EXPECT_TRUE(refused(**client));
  }
  EXPECT_TRUE(run_until(io_, [&] { return listener_->handshake_failures() == 1; }));
}

TEST_F(TlsTest, AnExpiredCertificateIsRefused) {
  serve(certs("server"));
  auto client = connect(certs("expired"));
  if (client) {
    EXPECT_TRUE(refused(**client));
  }
  EXPECT_TRUE(run_until(io_, [&] { return listener_->handshake_failures() == 1; }));
}

TEST_F(TlsTest, TheClientRefusesAServerCertificateForAnotherHost) {
  serve(certs("wrong-host"));
  auto client = connect(certs("vm1"));
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code, Error::Code::kDenied);
  EXPECT_NE(client.error().message.find("certificate verify failed"), std::string::npos)
      << client.error().message;
}

TEST_F(TlsTest, TheClientRefusesAServerFromAnotherCa) {
  serve(certs("server"));
  auto client = connect(certs("vm1", "other-ca"));
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code, Error::Code::kDenied);
}

TEST_F(TlsTest, APskAdmitsAndNamesThePeerWithoutCertificates) {
  serve(psk("psk.txt"));
  auto client = connect(psk("psk.txt", "laptop"));
  ASSERT_TRUE(client) << client.error().message;
  ASSERT_TRUE(talks(**client));
  ASSERT_TRUE(accepted_.back()->peer().tls);
  EXPECT_EQ(accepted_.back()->peer().tls->psk_identity, "laptop");
}

TEST_F(TlsTest, AServerWithCertificatesAndPsksAdmitsBoth) {
  TlsConfig both = certs("server");
  both.psk_file = Pki::get().file("psk.txt");
  serve(both);
  auto a = connect(psk("psk.txt"));
  ASSERT_TRUE(a) << a.error().message;
  ASSERT_TRUE(talks(**a));
  EXPECT_EQ(accepted_.back()->peer().tls->psk_identity, "phone");
  auto b = connect(certs("vm1"));
  ASSERT_TRUE(b) << b.error().message;
  ASSERT_TRUE(talks(**b));
  EXPECT_EQ(accepted_.back()->peer().tls->common_name, "vm1");
}

TEST_F(TlsTest, WithoutACaAServerAdmitsOnlyPskHolders) {
  // A certificate to show and PSKs to check, but no CA to check client certificates: a client
  // that offers no PSK proved nothing and is refused (it used to be admitted as "authenticated").
  TlsConfig server = certs("server");
  server.ca_file.clear();
  server.psk_file = Pki::get().file("psk.txt");
  serve(server);
  auto client = connect(certs(""));
  if (client) {
    EXPECT_TRUE(refused(**client));
  }
  EXPECT_TRUE(run_until(io_, [&] { return listener_->handshake_failures() == 1; }));
  auto good = connect(psk("psk.txt"));
  ASSERT_TRUE(good) << good.error().message;
  ASSERT_TRUE(talks(**good));
  EXPECT_EQ(accepted_.back()->peer().tls->psk_identity, "phone");
}

TEST_F(TlsTest, AWrongPskKeyOrAnUnknownIdentityIsRefused) {
  serve(psk("psk.txt"));
  for (const char* f : {"psk-wrong.txt", "psk-unknown.txt"}) {
    auto client = connect(psk(f));
    if (client) {
    EXPECT_TRUE(refused(**client)) << f;
  }
  }
  EXPECT_TRUE(run_until(io_, [&] { return listener_->handshake_failures() == 2; }));
  EXPECT_TRUE(accepted_.empty());
}

TEST_F(TlsTest, APeerThatNeverFinishesItsHandshakeIsDropped) {
  serve(certs("server"));
  asio::ip::tcp::socket raw(io_);
  raw.connect({asio::ip::make_address("127.0.0.1"), listener_->local_port()});
  std::array<char, 16> b{};
  std::optional<error_code> got;
  raw.async_read_some(asio::buffer(b), [&](error_code ec, size_t) { got = ec; });
  ASSERT_TRUE(run_until(io_, [&] { return got.has_value(); }, 3000));
  EXPECT_EQ(*got, asio::error::eof);
  EXPECT_EQ(listener_->handshake_failures(), 1u);
  EXPECT_TRUE(accepted_.empty());
}

TEST_F(TlsTest, ContextsRefuseConfigurationsThatAuthenticateNoOne) {
  TlsConfig no_ca = certs("server");
  no_ca.ca_file.clear();
  auto s = TlsContext::make(no_ca, TlsRole::kServer);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("anyone could connect"), std::string::npos);
  TlsConfig nothing;
  nothing.cert_file = Pki::get().file("vm1.crt");
  nothing.key_file = Pki::get().file("vm1.key");
  EXPECT_FALSE(TlsContext::make(nothing, TlsRole::kClient));
  TlsConfig mismatched = certs("vm1");
  mismatched.key_file = Pki::get().file("server.key");
  auto m = TlsContext::make(mismatched, TlsRole::kClient);
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("mismatch"), std::string::npos) << m.error().message;
  EXPECT_FALSE(TlsContext::make(psk("psk.txt", "tablet"), TlsRole::kClient));
}

TEST_F(TlsTest, ATlsEndpointNeedsItsConfiguration) {
  Listener plain(io_, {});
  auto at = parse_endpoint("tls:127.0.0.1:0");
  ASSERT_TRUE(at);
  EXPECT_EQ(at->to_string(), "tls:127.0.0.1:0");
  auto r = plain.listen(*at);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("TLS needs a certificate"), std::string::npos);
  serve(certs("server"));
  std::optional<Result<std::unique_ptr<Stream>>> got;
  Endpoint to("127.0.0.1", listener_->local_port());
  to.tls = true;
  async_connect(io_, to, {}, std::chrono::seconds(1),
                [&](Result<std::unique_ptr<Stream>> s) { got = std::move(s); });
  ASSERT_TRUE(run_until(io_, [&] { return got.has_value(); }));
  ASSERT_FALSE(*got);
  EXPECT_NE(got->error().message.find("TLS needs a CA or a PSK"), std::string::npos);
}

TEST(PskFile, LinesAreCheckedAndNamed) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("vusb-psk-" + std::to_string(::getpid()) + ".txt");
  std::ofstream(path) << "# c\n\nphone:0123456789abcdef\n";
  auto ok = read_psk_file(path.string());
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->size(), 1u);
  EXPECT_EQ((*ok)[0].identity, "phone");
  std::ofstream(path) << "phone:short\n";
  auto bad = read_psk_file(path.string());
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find(":1: key must be 16..64 bytes"), std::string::npos)
      << bad.error().message;
  std::ofstream(path) << "no colon here\n";
  EXPECT_FALSE(read_psk_file(path.string()));
  std::filesystem::remove(path);
  EXPECT_FALSE(read_psk_file(path.string()));
}

TEST(Pki, AHostNameCannotSmuggleFurtherNamesIntoACertificate) {
  auto ca = make_ca("site");
  ASSERT_TRUE(ca);
  EXPECT_FALSE(issue_certificate(*ca, {"stub", {"a.example,IP:10.0.0.5"}}));
  EXPECT_FALSE(issue_certificate(*ca, {"stub", {""}}));
  EXPECT_TRUE(issue_certificate(*ca, {"stub", {"a.example", "10.0.0.5", "fd00::1"}}));
}

}  // namespace
}  // namespace usb::net
