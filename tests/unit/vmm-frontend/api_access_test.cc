// Control API authorization (api_access.h): who a request is from and what each role may do —
// the rules that keep a guest, which reaches the API on the host's loopback, from changing
// anything.
#include "vmm-frontend/api_access.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace vusbd {
namespace {

using json = nlohmann::json;

class ApiAccessTest : public ::testing::Test {
 protected:
  ApiAccessTest() {
    dir_ = std::filesystem::temp_directory_path() / ("vusb-api-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    for (auto [name, secret] : {std::pair{"admin", "admin-secret-0123456789"},
                                {"read", "read-secret-0123456789"},
                                {"vm1", "vm1-secret-0123456789"}})
      std::ofstream(dir_ / name) << secret << "\n";
  }
  ~ApiAccessTest() override { std::filesystem::remove_all(dir_); }

  ApiAccess make(const std::string& anonymous = "read") {
    auto a = ApiAccess::make({{"ops", file("admin"), "admin", ""},
                              {"", file("read"), "read", ""},
                              {"vm1", file("vm1"), "vm", "vm1"}},
                             anonymous);
    EXPECT_TRUE(a) << a.error().message;
    return *a;
  }
  std::string file(const std::string& n) const { return (dir_ / n).string(); }

  static usb::net::PeerInfo tcp() {
    usb::net::PeerInfo p;
    p.name = "127.0.0.1:5555";
    p.address = boost::asio::ip::make_address("127.0.0.1");
    return p;
  }

  std::filesystem::path dir_;
};

TEST_F(ApiAccessTest, CallersAreWhoTheirTokenOrSocketSays) {
  const ApiAccess a = make();
  EXPECT_EQ(a.identify(tcp(), "Bearer admin-secret-0123456789").role, ApiRole::kAdmin);
  EXPECT_EQ(a.identify(tcp(), "Bearer admin-secret-0123456789").name, "token 'ops' (admin)");
  EXPECT_EQ(a.identify(tcp(), "Bearer read-secret-0123456789").role, ApiRole::kRead);
  const ApiCaller vm = a.identify(tcp(), "Bearer vm1-secret-0123456789");
  EXPECT_EQ(vm.role, ApiRole::kVm);
  EXPECT_EQ(vm.vm, "vm1");
  EXPECT_EQ(a.identify(tcp(), "").role, ApiRole::kRead);  // anonymous = read
  EXPECT_EQ(make("none").identify(tcp(), "").role, ApiRole::kNone);
  // A wrong token is not anonymous: it is refused.
  const ApiCaller wrong = a.identify(tcp(), "Bearer admin-secret-012345678");
  EXPECT_EQ(wrong.role, ApiRole::kNone);
  EXPECT_TRUE(wrong.bad_token);
  EXPECT_EQ(a.identify(tcp(), "Basic YWRtaW46YWRtaW4=").role, ApiRole::kNone);
  usb::net::PeerInfo local;
  local.uid = 0;
  EXPECT_EQ(a.identify(local, "").role, ApiRole::kAdmin);
}

TEST_F(ApiAccessTest, OnlyAdminsChangeAnything) {
  const ApiAccess a = make();
  const ApiCaller admin = a.identify(tcp(), "Bearer admin-secret-0123456789");
  const ApiCaller reader = a.identify(tcp(), "");
  const ApiCaller vm = a.identify(tcp(), "Bearer vm1-secret-0123456789");
  const ApiCaller nobody = make("none").identify(tcp(), "");
  const std::vector<std::pair<std::string, std::string>> changes = {
      {"POST", "/api/v1/devices"},           {"DELETE", "/api/v1/devices/gz"},
      {"POST", "/api/v1/devices/gz/mode"},   {"POST", "/api/v1/attachments"},
      {"DELETE", "/api/v1/attachments/gz/vm1"}, {"POST", "/api/v1/vms/vm1/weight"},
      {"POST", "/api/v1/vms/vm1/usbredir"},  {"DELETE", "/api/v1/vms/vm1/usbredir/gz"},
      {"PUT", "/api/v1/devices/gz"}};
  for (const auto& [m, t] : changes) {
    EXPECT_EQ(ApiAccess::check(admin, m, t).status, 0u) << m << " " << t;
    EXPECT_EQ(ApiAccess::check(reader, m, t).status, 403u) << m << " " << t;
    EXPECT_EQ(ApiAccess::check(vm, m, t).status, 403u) << m << " " << t;
    EXPECT_EQ(ApiAccess::check(nobody, m, t).status, 401u) << m << " " << t;
  }
  EXPECT_NE(ApiAccess::check(reader, "POST", "/api/v1/devices").why.find("admin token"),
            std::string::npos);
  for (const char* t : {"/api/v1/devices", "/api/v1/stats", "/api/v1/events", "/"})
    EXPECT_EQ(ApiAccess::check(reader, "GET", t).status, 0u) << t;
  EXPECT_EQ(ApiAccess::check(nobody, "GET", "/api/v1/devices").status, 401u);
}

TEST_F(ApiAccessTest, AVmTokenSeesOnlyItsVm) {
  const ApiCaller vm = make().identify(tcp(), "Bearer vm1-secret-0123456789");
  EXPECT_EQ(ApiAccess::check(vm, "GET", "/api/v1/vms").status, 0u);
  EXPECT_EQ(ApiAccess::check(vm, "GET", "/api/v1/vms/vm1/qemu-args?controller=ehci").status, 0u);
  EXPECT_EQ(ApiAccess::check(vm, "GET", "/api/v1/vms/vm2/qemu-args").status, 403u);
  EXPECT_EQ(ApiAccess::check(vm, "GET", "/api/v1/events").status, 403u);

  json vms = json::array({{{"name", "vm1"}}, {{"name", "vm2"}}});
  EXPECT_TRUE(ApiAccess::filter(vm, "/api/v1/vms", vms));
  EXPECT_EQ(vms, json::array({{{"name", "vm1"}}}));
  json devices = json::array({{{"name", "gz"}, {"vms", json::array({{{"vm", "vm1"}}, {{"vm", "vm2"}}})}},
                              {{"name", "cam"}, {"vms", json::array({{{"vm", "vm2"}}})}}});
  EXPECT_TRUE(ApiAccess::filter(vm, "/api/v1/devices", devices));
  ASSERT_EQ(devices.size(), 1u);
  EXPECT_EQ(devices[0]["name"], "gz");
  EXPECT_EQ(devices[0]["vms"], json::array({{{"vm", "vm1"}}}));  // not who else has it
  json cam = {{"name", "cam"}, {"vms", json::array({{{"vm", "vm2"}}})}};
  EXPECT_FALSE(ApiAccess::filter(vm, "/api/v1/devices/cam", cam));
  json stats = {{"vms", {{"vm1", {{"gz", 1}}}, {"vm2", {{"cam", 2}}}}}, {"buses", json::object()}};
  EXPECT_TRUE(ApiAccess::filter(vm, "/api/v1/stats", stats));
  EXPECT_EQ(stats, (json{{"vms", {{"vm1", {{"gz", 1}}}}}}));
  json att = json::array({{{"vm", "vm1"}}, {{"vm", "vm2"}}});
  EXPECT_TRUE(ApiAccess::filter(vm, "/api/v1/attachments", att));
  EXPECT_EQ(att.size(), 1u);
}

TEST_F(ApiAccessTest, BadTokenConfigurationsAreRefusedAtStart) {
  std::ofstream(dir_ / "short") << "tooshort\n";
  EXPECT_FALSE(ApiAccess::make({{"", file("short"), "admin", ""}}));
  EXPECT_FALSE(ApiAccess::make({{"", file("missing"), "admin", ""}}));
  EXPECT_FALSE(ApiAccess::make({{"", file("admin"), "root", ""}}));
  EXPECT_FALSE(ApiAccess::make({{"", file("admin"), "vm", ""}}));  // which VM?
  EXPECT_FALSE(ApiAccess::make({{"", file("admin"), "admin", "vm1"}}));
  EXPECT_FALSE(ApiAccess::make({{"a", file("admin"), "admin", ""}, {"b", file("admin"), "read", ""}}));
  EXPECT_FALSE(ApiAccess::make({}, "write"));
}

}  // namespace
}  // namespace vusbd
