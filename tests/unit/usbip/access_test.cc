// Per-export access lists (export_access.h) as a USB/IP client meets them: over plain TCP and
// over TLS with client certificates, a device list shows only what the peer may have, a refused
// import gets "not available" (and the allowed peer still imports), and an input device goes
// only to an authenticated peer unless a rule names it.
#include "usb/usbip/export_access.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>

#include "tests/unit/run_until.h"
#include "usb/core/fake_device.h"
#include "usb/net/pki.h"
#include "usb/usbip/client_channel.h"
#include "usb/usbip/server.h"

namespace usb::usbip {
namespace {

namespace asio = boost::asio;
using usb::testing::run_until;

usb::DescriptorSet hid_descriptors() {
  auto d = usb::testing::gadget_zero_like_descriptors();
  d.device.device_class = 0x03;
  return d;
}

class AccessTest : public ::testing::Test {
 protected:
  AccessTest()
      : gz_(usb::testing::gadget_zero_like_descriptors(), usb::Speed::kHigh,
            usb::DeviceLocation{.busid = "1-1", .path = {}}),
        gz2_(usb::testing::gadget_zero_like_descriptors(), usb::Speed::kHigh,
             usb::DeviceLocation{.busid = "1-2", .path = {}}),
        keyboard_(hid_descriptors(), usb::Speed::kFull,
                  usb::DeviceLocation{.busid = "1-3", .path = {}}) {
    dir_ = std::filesystem::temp_directory_path() / ("vusb-access-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    auto ca = usb::net::make_ca("site");
    write("ca", *ca);
    write("stub", *usb::net::issue_certificate(*ca, {"stub", {"127.0.0.1"}}));
    write("vm1", *usb::net::issue_certificate(*ca, {"vm1", {}}));
    write("vm2", *usb::net::issue_certificate(*ca, {"vm2", {}}));
    for (auto* d : {&gz_, &gz2_, &keyboard_}) EXPECT_TRUE(exports_.add(*d));
  }
  ~AccessTest() override { std::filesystem::remove_all(dir_); }

  void write(const std::string& name, const usb::net::Pem& pem) {
    std::ofstream(file(name + ".crt")) << pem.cert;
    std::ofstream(file(name + ".key")) << pem.key;
  }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  usb::net::TlsConfig config(const std::string& name) const {
    usb::net::TlsConfig c;
    c.ca_file = file("ca.crt");
    c.cert_file = file(name + ".crt");
    c.key_file = file(name + ".key");
    return c;
  }

  void serve(std::vector<ExportAccess::Rule> rules, bool tls) {
    auto access = ExportAccess::make(rules);
    ASSERT_TRUE(access) << access.error().message;
    access_ = std::make_shared<ExportAccess>(std::move(*access));
    exports_.set_access(access_);
    usb::net::Listener::Options o;
    if (tls) {
      o.tls = *usb::net::TlsContext::make(config("stub"), usb::net::TlsRole::kServer);
    }
    server_.emplace(io_, exports_, ConnectionLimits{}, o);
    usb::net::Endpoint at("127.0.0.1", 0);
    at.tls = tls;
    ASSERT_TRUE(server_->listen(at));
    where_ = server_->local_endpoint();
  }
  std::shared_ptr<const usb::net::TlsContext> client(const std::string& name) {
    if (name.empty()) return nullptr;
    return *usb::net::TlsContext::make(config(name), usb::net::TlsRole::kClient);
  }

  std::vector<std::string> listed(const std::string& who) {
    std::optional<usb::Result<std::vector<usb::wire::usbip::DevlistEntry>>> got;
    list_devices(
        io_, where_, std::chrono::seconds(3), [&](auto r) { got = std::move(r); }, client(who));
    EXPECT_TRUE(run_until(io_, [&] { return got.has_value(); }));
    std::vector<std::string> out;
    if (got && *got)
      for (const auto& e : **got) out.push_back(e.device.busid);
    else
      ADD_FAILURE() << (got ? (*got).error().message : "no answer");
    return out;
  }

  // Imports `busid` as `who`; returns the error, or kOk (and releases the device).
  usb::Result<void> import(const std::string& who, const std::string& busid) {
    std::optional<usb::Result<std::shared_ptr<ClientChannel>>> got;
    ClientChannel::Options o;
    o.tls = client(who);
    ClientChannel::import(io_, where_, busid, o, [&](auto r) { got = std::move(r); });
    EXPECT_TRUE(run_until(io_, [&] { return got.has_value(); }));
    if (!got) return usb::Error::make(usb::Error::Code::kIo, "no answer");
    if (!*got) return std::unexpected((*got).error());
    (**got)->close("done");
    run_until(io_, [&] { return exports_.find(busid)->importer == nullptr; });
    return {};
  }

  asio::io_context io_;
  usb::testing::FakeDevice gz_, gz2_, keyboard_;
  ExportTable exports_;
  std::shared_ptr<ExportAccess> access_;
  std::optional<Server> server_;
  usb::net::Endpoint where_;
  std::filesystem::path dir_;
};

TEST_F(AccessTest, WithoutRulesAPlainPeerGetsEverythingButTheInputDevice) {
  serve({}, false);
  EXPECT_EQ(listed(""), (std::vector<std::string>{"1-1", "1-2"}));
  EXPECT_TRUE(import("", "1-1"));
  auto r = import("", "1-3");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, usb::Error::Code::kDenied);
  EXPECT_NE(r.error().message.find("status 1"), std::string::npos) << r.error().message;
  EXPECT_EQ(access_->refused(), 1u);
}

TEST_F(AccessTest, OverTlsAnAuthenticatedPeerGetsTheInputDevice) {
  serve({}, true);
  EXPECT_EQ(listed("vm1"), (std::vector<std::string>{"1-1", "1-2", "1-3"}));
  EXPECT_TRUE(import("vm1", "1-3"));
}

TEST_F(AccessTest, RulesGiveEachDeviceToThePeersTheyName) {
  serve({{{"1-1"}, {"cn:vm1"}}, {{"1-2", "hid"}, {"cn:vm2"}}}, true);
  EXPECT_EQ(listed("vm1"), (std::vector<std::string>{"1-1"}));
  EXPECT_EQ(listed("vm2"), (std::vector<std::string>{"1-2", "1-3"}));
  auto refused = import("vm2", "1-1");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, usb::Error::Code::kDenied);
  EXPECT_TRUE(import("vm1", "1-1"));  // the allowed peer still attaches
  EXPECT_FALSE(import("vm1", "1-3"));
  EXPECT_TRUE(import("vm2", "1-3"));
  EXPECT_EQ(access_->refused(), 2u);
}

TEST_F(AccessTest, AnInputDeviceARuleNamesGoesToAPlainPeerTheRuleAdmits) {
  serve({{{"hid"}, {"127.0.0.1"}}}, false);
  EXPECT_EQ(listed(""), (std::vector<std::string>{"1-1", "1-2", "1-3"}));
  EXPECT_TRUE(import("", "1-3"));
}

TEST(ExportAccessRule, TheCommandLineFormAndItsMistakes) {
  auto r = parse_access_rule("1-1,hid=cn:vm1,10.0.0.0/8");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->devices, (std::vector<std::string>{"1-1", "hid"}));
  EXPECT_EQ(r->peers, (std::vector<std::string>{"cn:vm1", "10.0.0.0/8"}));
  EXPECT_FALSE(parse_access_rule("1-1"));
  EXPECT_FALSE(parse_access_rule("=cn:vm1"));
  EXPECT_FALSE(parse_access_rule("1-1=nobody"));
  EXPECT_FALSE(parse_access_rule("class:zz=any"));
  EXPECT_TRUE(parse_access_rule("class:0e,*=authenticated"));
}

}  // namespace
}  // namespace usb::usbip
