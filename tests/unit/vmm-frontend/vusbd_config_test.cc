#include "vmm-frontend/vusbd_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <fstream>

namespace vusbd {
namespace {

TEST(VusbdConfigTest, Sources) {
  DeviceConfig d;
  ASSERT_TRUE(parse_source("usbip://10.0.0.5:3240/1-1.2", d));
  EXPECT_EQ(d.kind, DeviceConfig::Kind::kUsbip);
  EXPECT_EQ(d.server.tcp.host, "10.0.0.5");
  EXPECT_EQ(d.server.tcp.port, 3240);
  EXPECT_EQ(d.busid, "1-1.2");
  ASSERT_TRUE(parse_source("emulated:gadget-zero", d));
  EXPECT_EQ(d.kind, DeviceConfig::Kind::kEmulated);
  EXPECT_FALSE(parse_source("usbip://host:3240", d));
  EXPECT_FALSE(parse_source("usbip://host:99999/1-1", d));
  EXPECT_FALSE(parse_source("emulated:toaster", d));
  ASSERT_TRUE(parse_source("process:uvc-camera?transport=bulk", d));
  EXPECT_EQ(d.kind, DeviceConfig::Kind::kProcess);
  EXPECT_EQ(d.emulated, "uvc-camera");
  EXPECT_EQ(d.emulated_options, "transport=bulk");
  EXPECT_FALSE(parse_source("process:uvc-camera?transport=carrier-pigeon", d));
  EXPECT_FALSE(parse_source("ftp://x", d));
}

TEST(VusbdConfigTest, UsbredirSourcesNameAHost) {
  DeviceConfig d;
  ASSERT_TRUE(parse_source("usbredir://127.0.0.1:4000", d));
  EXPECT_EQ(d.kind, DeviceConfig::Kind::kUsbredir);
  EXPECT_EQ(d.server, usb::net::Endpoint("127.0.0.1", 4000));
  EXPECT_EQ(bus_of(d), "usbredir://127.0.0.1:4000");
  ASSERT_TRUE(parse_source("usbredir+unix:///run/usbredir.sock", d));
  EXPECT_EQ(d.kind, DeviceConfig::Kind::kUsbredir);
  EXPECT_EQ(d.server, usb::net::Endpoint::unix_socket("/run/usbredir.sock"));
  EXPECT_EQ(d.source, "usbredir+unix:///run/usbredir.sock");
  for (const char* bad : {"usbredir://", "usbredir://127.0.0.1:4000/1-1", "usbredir://host:99999",
                          "usbredir://host:0", "usbredir+unix://relative.sock"}) {
    auto r = parse_source(bad, d);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message.find("usbredir"), std::string::npos) << r.error().message;
  }
  auto r = parse_source("usbredirect:4000", d);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("usbredir://HOST:PORT"), std::string::npos)
      << "the refusal lists the forms: " << r.error().message;
}

TEST(VusbdConfigTest, AVmAskingForAnEmulatedCameraGetsOneCameraProcessSharedByAll) {
  const std::string path = ::testing::TempDir() + "/vusbd-camera.toml";
  std::ofstream(path) << R"(
[[vm]]
name = "vm1"
listen = "127.0.0.1:41001"
camera = "emulated"
[[vm]]
name = "vm2"
listen = "127.0.0.1:41002"
camera = "emulated"
[[vm]]
name = "vm3"
listen = "127.0.0.1:41003"
)";
  auto c = load_config(path);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  const DeviceConfig* cam = c->device("camera");
  ASSERT_NE(cam, nullptr);
  EXPECT_EQ(cam->kind, DeviceConfig::Kind::kProcess);
  EXPECT_EQ(cam->source, "process:uvc-camera");
  EXPECT_EQ(cam->mode, "shared");
  EXPECT_EQ(cam->vms, (std::vector<std::string>{"vm1", "vm2"}));
  // Written back and read again: still one camera, the same VMs.
  std::ofstream(path) << to_toml(*c);
  auto again = load_config(path);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(again->devices.size(), 1u);
  EXPECT_EQ(again->device("camera")->vms, cam->vms);
  // A camera that is not a device is refused with the VM's name.
  std::ofstream(path) << R"(
[[vm]]
name = "vm1"
listen = "127.0.0.1:41001"
camera = "webcam"
)";
  auto bad = load_config(path);
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("vm1"), std::string::npos);
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
  EXPECT_EQ(c->vms[1].listen.tcp.host, "127.0.0.1");
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

namespace vusbd {
namespace {

TEST(VusbdConfigTest, WrittenBackConfigReadsBackTheSame) {
  VusbdConfig c;
  c.control = {"127.0.0.1", 3999};
  c.vms = {{"vm1", {"127.0.0.1", 41001}},
           {"vm-2", {"::1", 41002}},
           {"vm3", usb::net::Endpoint::unix_socket("/run/vusb/vm3.sock")}};
  DeviceConfig d;
  d.name = "gz";
  ASSERT_TRUE(parse_source("usbip://10.0.0.5:3240/1-1.2", d));
  d.mode = "timeslice";
  d.slice_ms = 250;
  d.vms = {"vm1", "vm-2"};
  d.ports = {{"vm1", 3}, {"vm-2", 1}};
  c.devices.push_back(d);
  DeviceConfig l;
  l.name = "cam";
  ASSERT_TRUE(parse_source("libusb:046d:0825", l));
  c.devices.push_back(l);
  DeviceConfig r;
  r.name = "redir";
  ASSERT_TRUE(parse_source("usbredir://127.0.0.1:4000", r));
  r.vms = {"vm3"};
  c.devices.push_back(r);
  ASSERT_TRUE(validate(c));

  const std::string path = ::testing::TempDir() + "/vusbd-roundtrip.toml";
  ASSERT_TRUE(save_config(c, path));
  auto back = load_config(path);
  ASSERT_TRUE(back) << back.error().message << "\n" << to_toml(c);
  EXPECT_EQ(back->control.tcp.port, 3999);
  ASSERT_EQ(back->vms.size(), 3u);
  EXPECT_EQ(back->vms[1].listen.tcp.host, "::1");
  EXPECT_EQ(back->vms[2].listen, usb::net::Endpoint::unix_socket("/run/vusb/vm3.sock"));
  ASSERT_EQ(back->devices.size(), 3u);
  EXPECT_EQ(back->devices[0].mode, "timeslice");
  EXPECT_EQ(back->devices[0].slice_ms, 250u);
  EXPECT_EQ(back->devices[0].vms, d.vms);
  EXPECT_EQ(back->devices[0].ports, d.ports);
  EXPECT_EQ(back->devices[0].busid, "1-1.2");
  EXPECT_EQ(back->devices[1].kind, DeviceConfig::Kind::kLibusb);
  EXPECT_EQ(back->devices[1].libusb, devices::DeviceFilter::vid_pid(0x046d, 0x0825));
  EXPECT_EQ(back->devices[2].kind, DeviceConfig::Kind::kUsbredir);
  EXPECT_EQ(back->devices[2].server, usb::net::Endpoint("127.0.0.1", 4000));
  EXPECT_EQ(back->devices[2].vms, std::vector<std::string>{"vm3"});
  EXPECT_EQ(to_toml(*back), to_toml(c));
}

TEST(VusbdConfigTest, SecuritySettingsSurviveTheWriteBack) {
  VusbdConfig c;
  c.control = *usb::net::parse_endpoint("tls:127.0.0.1:3999");
  c.control_anonymous = "none";
  c.control_tokens = {{"ci", "/etc/vusbd/ci.token", "admin", ""},
                      {"", "/etc/vusbd/vm1.token", "vm", "vm1"}};
  c.tls.ca_file = "/etc/vusbd/ca.crt";
  c.tls.cert_file = "/etc/vusbd/vusbd.crt";
  c.tls.key_file = "/etc/vusbd/vusbd.key";
  c.tls.server_name = "*";
  c.vms = {{"vm1", *usb::net::parse_endpoint("tls:0.0.0.0:41001")}};
  c.vms[0].allow = {"cn:vm1", "10.0.2.15"};
  DeviceConfig d;
  d.name = "gz";
  ASSERT_TRUE(parse_source("usbips://10.0.0.5:3241/1-1", d));
  EXPECT_TRUE(d.server.tls);
  d.vms = {"vm1"};
  c.devices.push_back(d);
  ASSERT_TRUE(validate(c));
  const std::string path = ::testing::TempDir() + "/vusbd-security.toml";
  ASSERT_TRUE(save_config(c, path));
  auto back = load_config(path);
  ASSERT_TRUE(back) << back.error().message << "\n" << to_toml(c);
  EXPECT_EQ(back->control, c.control);
  EXPECT_EQ(back->control_anonymous, "none");
  EXPECT_EQ(back->control_tokens, c.control_tokens);
  EXPECT_EQ(back->tls.cert_file, c.tls.cert_file);
  EXPECT_EQ(back->tls.server_name, "*");
  EXPECT_EQ(back->vms[0].allow, c.vms[0].allow);
  EXPECT_TRUE(back->vms[0].listen.tls);
  EXPECT_EQ(back->devices[0].source, "usbips://10.0.0.5:3241/1-1");
  EXPECT_TRUE(back->devices[0].server.tls);
  EXPECT_EQ(to_toml(*back), to_toml(c));

  c.vms[0].allow = {"cn:"};
  EXPECT_FALSE(validate(c));
  c.vms[0].allow.clear();
  c.tls = {};
  auto r = validate(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("tls: port needs [tls]"), std::string::npos);
}

TEST(VusbdConfigTest, EveryAllowedNameRoundTripsThroughTheWrittenBackFile) {
  // VM and device names may hold '.', '_' and '-': a VM named lab.vm1 with a port must read back
  // as itself (its key in `ports` is quoted), not as a table path that fails the next start.
  VusbdConfig c;
  const std::vector<std::string> names = {"lab.vm1", "a", "A-9_z.x", "..", "-", "_._",
                                          std::string(64, 'v')};
  DeviceConfig d;
  d.name = "dev.1";
  ASSERT_TRUE(parse_source("emulated:gadget-zero", d));
  uint32_t port = 1;
  for (const auto& n : names) {
    c.vms.push_back({n, {"127.0.0.1", 0}});
    d.vms.push_back(n);
    d.ports[n] = port++;
  }
  c.devices.push_back(d);
  ASSERT_TRUE(validate(c));
  const std::string path = ::testing::TempDir() + "/vusbd-names.toml";
  ASSERT_TRUE(save_config(c, path));
  auto back = load_config(path);
  ASSERT_TRUE(back) << back.error().message << "\n" << to_toml(c);
  EXPECT_EQ(back->devices[0].ports, d.ports);
  EXPECT_EQ(to_toml(*back), to_toml(c));
}

TEST(VusbdConfigTest, TheWriteBackReplacesTheFileWholeAndNeverFollowsALink) {
  // The old config stays until the new one is complete; a symlink planted at the old fixed
  // temporary name ("PATH.tmp") is not followed; the file is not readable by others.
  VusbdConfig c;
  c.vms = {{"vm1", {"127.0.0.1", 0}}};
  const std::string dir = ::testing::TempDir() + "/vusbd-writeback";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/vusbd.toml";
  const std::string victim = dir + "/victim";
  { std::ofstream(victim) << "untouched\n"; }
  std::filesystem::create_symlink(victim, path + ".tmp");
  ASSERT_TRUE(save_config(c, path));
  std::string text;
  { std::ifstream v(victim); std::getline(v, text); }
  EXPECT_EQ(text, "untouched");
  auto back = load_config(path);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->vms[0].name, "vm1");
  const auto perms = std::filesystem::status(path).permissions();
  EXPECT_EQ(perms & std::filesystem::perms::others_read, std::filesystem::perms::none);
  // No temporary file is left behind.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    files += std::filesystem::is_regular_file(e.symlink_status());
  EXPECT_EQ(files, 2u) << "vusbd.toml and the victim only (and the planted link)";
  // A directory that cannot be written: an error, the old file untouched.
  EXPECT_FALSE(save_config(c, dir + "/no/such/dir/vusbd.toml"));
}

TEST(VusbdConfigTest, BadNamesModesAndPortsAreRefused) {
  VusbdConfig c;
  c.vms = {{"vm1", {"127.0.0.1", 1}}};
  DeviceConfig a, b;
  a.name = "a";
  b.name = "b";
  ASSERT_TRUE(parse_source("emulated:gadget-zero", a));
  ASSERT_TRUE(parse_source("emulated:gadget-zero", b));
  a.vms = b.vms = {"vm1"};
  a.ports = b.ports = {{"vm1", 2}};
  c.devices = {a, b};
  auto r = validate(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("port 2"), std::string::npos) << r.error().message;
  c.devices = {a};
  EXPECT_TRUE(validate(c));
  c.devices[0].mode = "timeslice";
  EXPECT_TRUE(validate(c));
  c.devices[0].slice_ms = 0;
  EXPECT_FALSE(validate(c)) << "a turn takes some time";
  c.devices[0].slice_ms = 100;
  c.devices[0].mode = "sometimes";
  EXPECT_FALSE(validate(c));
  c.devices[0].mode = "shared";
  c.devices[0].name = "a/../b";
  EXPECT_FALSE(validate(c));
  c.devices[0].name = "a";
  c.devices[0].ports = {{"vm9", 1}};
  EXPECT_FALSE(validate(c));
  DeviceConfig all;
  EXPECT_FALSE(parse_source("libusb:all", all)) << "vusbd takes one device per entry";
  EXPECT_TRUE(parse_source("libusb:1-1.4", all));
}

}  // namespace
}  // namespace vusbd
