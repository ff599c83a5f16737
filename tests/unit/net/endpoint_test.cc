// Endpoint parsing: every address a user writes (TCP HOST:PORT or unix:PATH) and its errors.
#include "usb/net/endpoint.h"

#include <gtest/gtest.h>

#include <string>

namespace usb::net {
namespace {

TEST(Endpoint, UnixPathsAndTcpAddressesParseAndPrintBack) {
  auto u = parse_endpoint("unix:/run/vusbd.sock");
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_TRUE(u->is_unix());
  EXPECT_EQ(u->path, "/run/vusbd.sock");
  EXPECT_EQ(u->to_string(), "unix:/run/vusbd.sock");

  auto t = parse_endpoint("10.0.0.5:3240");
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_FALSE(t->is_unix());
  EXPECT_EQ(t->tcp.host, "10.0.0.5");
  EXPECT_EQ(t->tcp.port, 3240);
  EXPECT_EQ(t->to_string(), "10.0.0.5:3240");

  auto v6 = parse_endpoint("[::1]:41001");
  ASSERT_TRUE(v6);
  EXPECT_EQ(*parse_endpoint(v6->to_string()), *v6);

  auto bare = parse_endpoint("3250", "127.0.0.1");
  ASSERT_TRUE(bare);
  EXPECT_EQ(*bare, Endpoint("127.0.0.1", 3250));

  auto relative = parse_endpoint("unix:vusbd.sock");
  ASSERT_TRUE(relative);
  EXPECT_EQ(relative->path, "vusbd.sock");
}

TEST(Endpoint, BadAddressesAreRefusedWithAReason) {
  auto empty = parse_endpoint("unix:");
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, Error::Code::kInvalidArgument);
  EXPECT_NE(empty.error().message.find("needs a path"), std::string::npos);

  auto too_long = parse_endpoint("unix:/" + std::string(200, 'a'));
  ASSERT_FALSE(too_long);
  EXPECT_NE(too_long.error().message.find("longer than 107 bytes"), std::string::npos);

  auto nul = parse_endpoint(std::string("unix:/tmp/a\0b", 13));
  ASSERT_FALSE(nul);

  EXPECT_FALSE(parse_endpoint("host:99999"));
  EXPECT_FALSE(parse_endpoint("host:"));

  // Hosts that would not print back as themselves (found by fuzz_sources): a ']' or a NUL in an
  // unbracketed host, punctuation no resolver takes.
  auto odd = parse_endpoint(std::string(">1]2") + '\0' + "nix:0.0431.2:0");
  ASSERT_FALSE(odd);
  EXPECT_NE(odd.error().message.find("bad host"), std::string::npos) << odd.error().message;
  EXPECT_FALSE(parse_endpoint("a b:3240"));
  EXPECT_FALSE(parse_endpoint("[::1]x]:3240"));
  // What users write still parses, and prints back to itself.
  for (const char* ok : {"lab-box.example.org:3240", "fe80::1%eth0:3240", "[fe80::1%eth0]:3240",
                         "my_host:1", "::1:3240"}) {
    auto e = parse_endpoint(ok);
    ASSERT_TRUE(e) << ok << ": " << e.error().message;
    EXPECT_EQ(*parse_endpoint(e->to_string()), *e) << ok;
  }
}

}  // namespace
}  // namespace usb::net
