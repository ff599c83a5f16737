#include "vmm-frontend/vusbd_config.h"

#include <gtest/gtest.h>

#include <fstream>

namespace vusbd {
namespace {

TEST(VusbdConfigTest, Sources) {
  DeviceConfig d;
  ASSERT_TRUE(parse_source("usbip://10.0.0.5:3240/1-1.2", d));
  EXPECT_EQ(d.kind, DeviceConfig::Kind::kUsbip);
  EXPECT_EQ(d.server.host, "10.0.0.5");
  EXPECT_EQ(d.server.port, 3240);
  EXPECT_EQ(d.busid, "1-1.2");
  ASSERT_TRUE(parse_source("emulated:gadget-zero", d));
  EXPECT_EQ(d.kind, DeviceConfig::Kind::kEmulated);
  EXPECT_FALSE(parse_source("usbip://host:3240", d));
  EXPECT_FALSE(parse_source("usbip://host:99999/1-1", d));
  EXPECT_FALSE(parse_source("emulated:toaster", d));
  EXPECT_FALSE(parse_source("ftp://x", d));
}

TEST(VusbdConfigTest, LoadAndValidate) {
  const std::string path = ::testing::TempDir() + "/vusbd.toml";
  std::ofstream(path) << R"(
[[vm]]
name = "vm1"
listen = "127.0.0.1:41001"
[[vm]]
name = "vm2"
listen = "41002"
[[device]]
name = "gz"
source = "usbip://127.0.0.1:3240/1-1"
mode = "shared"
vms = ["vm1", "vm2"]
)";
  auto c = load_config(path);
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_EQ(c->vms.size(), 2u);
  EXPECT_EQ(c->vms[1].listen.host, "127.0.0.1");
  ASSERT_EQ(c->devices.size(), 1u);
  EXPECT_EQ(c->devices[0].vms, (std::vector<std::string>{"vm1", "vm2"}));

  VusbdConfig bad = *c;
  bad.devices[0].vms.push_back("vm9");
  EXPECT_FALSE(validate(bad));
  bad = *c;
  bad.devices[0].mode = "sometimes";
  EXPECT_FALSE(validate(bad));
  bad = *c;
  bad.vms.push_back(bad.vms[0]);
  EXPECT_FALSE(validate(bad));
}

}  // namespace
}  // namespace vusbd
