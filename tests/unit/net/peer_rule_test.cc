// Access-list rules (peer_rule.h): what each form admits and what is refused as written.
#include "usb/net/peer_rule.h"

#include <gtest/gtest.h>

namespace usb::net {
namespace {

PeerInfo tcp(const char* a) {
  PeerInfo p;
  p.address = boost::asio::ip::make_address(a);
  return p;
}
PeerInfo cert(const char* cn, const char* fp = "0123") {
  PeerInfo p = tcp("10.0.0.9");
  p.tls = TlsPeer{std::string("CN=") + cn, cn, fp, ""};
  return p;
}
PeerInfo psk(const char* id) {
  PeerInfo p = tcp("10.0.0.9");
  p.tls = TlsPeer{"", "", "", id};
  return p;
}
PeerInfo local(uid_t uid) {
  PeerInfo p;
  p.uid = uid;
  return p;
}

bool admits(std::vector<std::string> rules, const PeerInfo& p) {
  auto l = PeerList::parse(rules);
  EXPECT_TRUE(l) << l.error().message;
  return l && l->admits(p);
}

TEST(PeerRule, EachFormAdmitsWhatItNames) {
  EXPECT_TRUE(admits({"any"}, tcp("1.2.3.4")));
  EXPECT_FALSE(admits({"authenticated"}, tcp("127.0.0.1")));
  EXPECT_TRUE(admits({"authenticated"}, cert("vm1")));
  EXPECT_TRUE(admits({"authenticated"}, psk("phone")));
  EXPECT_TRUE(admits({"authenticated"}, local(1000)));
  EXPECT_TRUE(admits({"cn:vm1"}, cert("vm1")));
  EXPECT_FALSE(admits({"cn:vm1"}, cert("vm2")));
  EXPECT_FALSE(admits({"cn:phone"}, psk("phone")));  // a PSK identity is not a certificate
  EXPECT_TRUE(admits({"psk:phone"}, psk("phone")));
  EXPECT_FALSE(admits({"psk:phone"}, cert("phone")));
  const std::string fp(64, 'a');
  EXPECT_TRUE(admits({"sha256:" + std::string(64, 'A')}, cert("x", fp.c_str())));
  EXPECT_TRUE(admits({"uid:1000"}, local(1000)));
  EXPECT_TRUE(admits({"uid:01000"}, local(1000)));  // the number, not the text
  PeerInfo empty_tls = tcp("10.0.0.9");
  empty_tls.tls = TlsPeer{};
  EXPECT_FALSE(admits({"authenticated"}, empty_tls));  // a TLS session that proved no identity
  EXPECT_FALSE(admits({"uid:1000"}, local(1001)));
  EXPECT_TRUE(admits({"10.0.0.0/8"}, tcp("10.200.1.1")));
  EXPECT_FALSE(admits({"10.0.0.0/8"}, tcp("11.0.0.1")));
  EXPECT_TRUE(admits({"127.0.0.1"}, tcp("::ffff:127.0.0.1")));
  EXPECT_FALSE(admits({"127.0.0.1"}, tcp("127.0.0.2")));
  EXPECT_TRUE(admits({"fd00::/8"}, tcp("fd12::1")));
  EXPECT_FALSE(admits({"10.0.0.0/8"}, local(0)));
  EXPECT_TRUE(admits({"cn:vm1", "10.0.0.0/8"}, tcp("10.1.1.1")));
  EXPECT_FALSE(PeerList{}.admits(tcp("127.0.0.1")));
}

TEST(PeerRule, MistakesAreRefusedSayingWhatWasExpected) {
  for (const char* bad : {"", "cn:", "psk:", "uid:x", "sha256:abc", "10.0.0.0/33", "::/129",
                          "host.example", "10.0.0.1/"}) {
    auto r = parse_peer_rule(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_NE(r.error().message.find("bad peer rule"), std::string::npos);
    }
  }
  auto l = PeerList::parse({"cn:vm1", "10.0.0.0/8"});
  ASSERT_TRUE(l);
  EXPECT_EQ(l->to_string(), "cn:vm1, 10.0.0.0/8");
}

}  // namespace
}  // namespace usb::net
