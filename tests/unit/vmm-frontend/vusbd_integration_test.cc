// vusbd end to end in one process and one loop: a USB/IP server (vusb-stub's) with a scripted
// device, vusbd importing it and serving two VMs, and vusb's own client in the VMs' place.
#include <gtest/gtest.h>

#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <filesystem>

#include "devices/remote/usbip_remote_device.h"
#include "usb/usbip/export_table.h"
#include "usb/usbip/server.h"
#include "usb/core/fake_device.h"
#include "vmm-frontend/vusbd.h"
#include "tests/unit/run_until.h"

namespace vusbd {
namespace {

namespace asio = boost::asio;

// The stub side: a server on a fixed port that can die and come back.
struct Stub {
  explicit Stub(asio::io_context& io) : io(io) {}
  void start(uint16_t port) { start(usb::net::Endpoint("127.0.0.1", port)); }
  void start(const usb::net::Endpoint& where) {
    server = std::make_unique<usb::usbip::Server>(io, exports, usb::usbip::ConnectionLimits{});
    ASSERT_TRUE(server->listen(where));
  }
  void kill() { server->stop(); }
  asio::io_context& io;
  usb::usbip::ExportTable exports;
  std::unique_ptr<usb::usbip::Server> server;
};

using usb::testing::run_until;

std::unique_ptr<devices::UsbipRemoteDevice> import(asio::io_context& io,
                                                   const usb::net::Endpoint& server,
                                                   const std::string& busid,
                                                   std::string* error = nullptr) {
  std::unique_ptr<devices::UsbipRemoteDevice> dev;
  bool done = false;
  devices::UsbipRemoteDevice::import(io, server, busid, {}, [&](auto r) {
    if (r)
      dev = std::move(*r);
    else if (error)
      *error = r.error().message;
    done = true;
  });
  run_until(io, [&] { return done; });
  return dev;
}
std::unique_ptr<devices::UsbipRemoteDevice> import(asio::io_context& io, uint16_t port,
                                                   const std::string& busid,
                                                   std::string* error = nullptr) {
  return import(io, usb::net::Endpoint("127.0.0.1", port), busid, error);
}

TEST(VusbdIntegrationTest, TwoVmsShareAndTheStubDiesAndComesBack) {
  asio::io_context io;
  usb::testing::FakeDevice device(usb::testing::gadget_zero_like_descriptors(), usb::Speed::kHigh,
                                  usb::DeviceLocation{.busid = "1-1", .path = {}});
  Stub stub(io);
  ASSERT_TRUE(stub.exports.add(device));
  // Pick a free port for the stub by listening on 0 first.
  stub.start(0);
  const uint16_t stub_port = stub.server->local_port();

  VusbdConfig config;
  config.vms = {{"vm1", {"127.0.0.1", 0}}, {"vm2", {"127.0.0.1", 0}}};
  DeviceConfig d;
  d.name = "gz";
  ASSERT_TRUE(parse_source("usbip://127.0.0.1:" + std::to_string(stub_port) + "/1-1", d));
  d.vms = {"vm1", "vm2"};
  config.devices = {d};
  Vusbd daemon(io, config);
  bool ready = false;
  auto started = daemon.start([&] { ready = true; });
  ASSERT_TRUE(started) << started.error().message;
  ASSERT_TRUE(run_until(io, [&] { return ready; }));

  // Both VMs import "their" 1-1 at once (shared mode).
  auto vm1 = import(io, daemon.vm_port("vm1"), "1-1");
  auto vm2 = import(io, daemon.vm_port("vm2"), "1-1");
  ASSERT_TRUE(vm1 && vm2);
  std::string err;
  EXPECT_FALSE(import(io, daemon.vm_port("vm1"), "1-2", &err)) << "a bus id vm1 was not given";

  // A URB from vm1 reaches the device and is left in flight; a URB from vm2 completes.
  usb::Transfer t1(0x81, usb::TransferType::kBulk, 64), t2(0x81, usb::TransferType::kBulk, 64);
  usb::Status s1 = usb::Status::kOk, s2 = usb::Status::kIoError;
  bool d1 = false, d2 = false;
  t1.set_completion([&](usb::Transfer& t) { s1 = t.status(), d1 = true; });
  t2.set_completion([&](usb::Transfer& t) { s2 = t.status(), d2 = true; });
  vm1->submit(t1);
  vm2->submit(t2);
  ASSERT_TRUE(run_until(io, [&] { return device.pending.size() == 2; }));
  device.finish(*device.pending.back(), usb::Status::kOk, 64);
  ASSERT_TRUE(run_until(io, [&] { return d2; }));
  EXPECT_EQ(s2, usb::Status::kOk);

  // The stub dies with vm1's URB in flight: it completes -108 (ESHUTDOWN) and vm1 is cut off.
  stub.kill();
  ASSERT_TRUE(run_until(io, [&] { return d1; }));
  EXPECT_EQ(s1, usb::Status::kNoDevice);
  ASSERT_TRUE(run_until(io, [&] { return !vm1->connected() && !vm2->connected(); }));

  // The stub comes back on the same port: vusbd re-imports and offers 1-1 again.
  device.pending.clear();
  stub.start(stub_port);
  std::unique_ptr<devices::UsbipRemoteDevice> again;
  ASSERT_TRUE(run_until(
      io,
      [&] {
        if (!again) again = import(io, daemon.vm_port("vm1"), "1-1");
        return again != nullptr;
      },
      10000));
  EXPECT_TRUE(again->connected());

  auto stats = daemon.stats();
  EXPECT_GE(stats["vms"]["vm1"]["gz"]["urbs"].get<uint64_t>(), 1u);
  EXPECT_GE(stats["vms"]["vm2"]["gz"]["bytes_in"].get<uint64_t>(), 64u);
  EXPECT_GT(stats["vms"]["vm1"]["gz"]["cache_hits"].get<uint64_t>(), 0u);
  again->close();
  vm1->close();
  vm2->close();
  daemon.stop();
  stub.kill();
}

// The same daemon with no TCP at all: the stub serves on a UNIX socket, vusbd imports from it
// ("usbip+unix://PATH/BUSID") and serves the VM on a UNIX socket of its own; the stub dies and
// comes back on the same path, and vusbd imports again.
TEST(VusbdIntegrationTest, AStubOnAUnixSocketIsImportedAndServedOnOne) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("vusbd-unix-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string stub_path = (dir / "stub.sock").string();
  const std::string vm_path = (dir / "vm1.sock").string();
  asio::io_context io;
  usb::testing::FakeDevice device(usb::testing::gadget_zero_like_descriptors(), usb::Speed::kHigh,
                                  usb::DeviceLocation{.busid = "1-1", .path = {}});
  Stub stub(io);
  ASSERT_TRUE(stub.exports.add(device));
  stub.start(usb::net::Endpoint::unix_socket(stub_path));

  VusbdConfig config;
  config.vms = {{"vm1", usb::net::Endpoint::unix_socket(vm_path)}};
  DeviceConfig d;
  d.name = "gz";
  ASSERT_TRUE(parse_source("usbip+unix://" + stub_path + "/1-1", d));
  EXPECT_EQ(d.source, "usbip+unix://" + stub_path + "/1-1");
  d.vms = {"vm1"};
  config.devices = {d};
  Vusbd daemon(io, config);
  bool ready = false;
  auto started = daemon.start([&] { ready = true; });
  ASSERT_TRUE(started) << started.error().message;
  ASSERT_TRUE(run_until(io, [&] { return ready; }));
  EXPECT_EQ(daemon.devices_json()[0]["connected"], true);

  auto vm1 = import(io, usb::net::Endpoint::unix_socket(vm_path), "1-1");
  ASSERT_TRUE(vm1);
  usb::Transfer t(0x81, usb::TransferType::kBulk, 64);
  bool done = false;
  usb::Status status = usb::Status::kIoError;
  t.set_completion([&](usb::Transfer& x) { status = x.status(), done = true; });
  vm1->submit(t);
  ASSERT_TRUE(run_until(io, [&] { return device.pending.size() == 1; }));
  device.finish(*device.pending.back(), usb::Status::kOk, 64);
  ASSERT_TRUE(run_until(io, [&] { return done; }));
  EXPECT_EQ(status, usb::Status::kOk);

  stub.kill();
  ASSERT_TRUE(run_until(io, [&] { return !vm1->connected(); }));
  device.pending.clear();
  stub.start(usb::net::Endpoint::unix_socket(stub_path));
  std::unique_ptr<devices::UsbipRemoteDevice> again;
  ASSERT_TRUE(run_until(
      io,
      [&] {
        if (!again) again = import(io, usb::net::Endpoint::unix_socket(vm_path), "1-1");
        return again != nullptr;
      },
      10000));
  again->close();
  vm1->close();
  daemon.stop();
  stub.kill();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vusbd

namespace vusbd {
namespace {

bool listed(asio::io_context& io, uint16_t port, const std::string& busid) {
  std::string err;
  auto dev = import(io, port, busid, &err);
  if (dev) dev->close();
  return dev != nullptr;
}

TEST(VusbdControlTest, AttachDetachModeAreLiveEmittedAndWrittenBack) {
  asio::io_context io;
  const std::string path = ::testing::TempDir() + "/vusbd-control.toml";
  VusbdConfig config;
  config.vms = {{"vm1", {"127.0.0.1", 0}}, {"vm2", {"127.0.0.1", 0}}};
  std::vector<nlohmann::json> events;
  {
    Vusbd daemon(io, config, path);
    daemon.on_event([&](const nlohmann::json& e) { events.push_back(e); });
    ASSERT_TRUE(daemon.start());

    DeviceConfig gz;
    gz.name = "gz";
    gz.source = "emulated:gadget-zero";
    gz.vms = {"vm1"};
    ASSERT_TRUE(daemon.add_device(gz));
    EXPECT_TRUE(listed(io, daemon.vm_port("vm1"), "1-1"));
    EXPECT_FALSE(listed(io, daemon.vm_port("vm2"), "1-1")) << "not given to vm2";

    // vm2 gets it at a port of its choosing; vm1's address is untouched.
    auto a = daemon.attach("gz", "vm2", 4);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->busid, "1-4");
    EXPECT_EQ(a->devid(), 0x10005u);
    EXPECT_TRUE(listed(io, daemon.vm_port("vm2"), "1-4"));
    EXPECT_EQ(daemon.addresses().resolve_busid("vm2", "1-4"),
              daemon.addresses().resolve_busid("vm1", "1-1"));

    // Errors name what is wrong and change nothing.
    EXPECT_EQ(daemon.attach("gz", "vm9").error().code, usb::Error::Code::kNotFound);
    EXPECT_EQ(daemon.attach("nope", "vm1").error().code, usb::Error::Code::kNotFound);
    EXPECT_EQ(daemon.attach("gz", "vm2", 5).error().code, usb::Error::Code::kBusy);
    EXPECT_EQ(daemon.set_mode("gz", "sometimes").error().code, usb::Error::Code::kInvalidArgument);
    EXPECT_EQ(daemon.add_device(gz).error().code, usb::Error::Code::kBusy);
    DeviceConfig bad;
    bad.name = "bad";
    bad.source = "floppy:a";
    EXPECT_EQ(daemon.add_device(bad).error().code, usb::Error::Code::kInvalidArgument);

    ASSERT_TRUE(daemon.set_mode("gz", "exclusive"));
    ASSERT_TRUE(daemon.detach("gz", "vm1"));
    EXPECT_FALSE(listed(io, daemon.vm_port("vm1"), "1-1"));
    EXPECT_EQ(daemon.detach("gz", "vm1").error().code, usb::Error::Code::kNotFound);

    auto devices = daemon.devices_json();
    ASSERT_EQ(devices.size(), 1u);
    EXPECT_EQ(devices[0]["mode"], "exclusive");
    EXPECT_EQ(devices[0]["connected"], true);
    ASSERT_EQ(devices[0]["vms"].size(), 1u);
    EXPECT_EQ(devices[0]["vms"][0]["busid"], "1-4");
    daemon.stop();
  }
  std::vector<std::string> kinds;
  for (const auto& e : events) kinds.push_back(e["event"]);
  EXPECT_NE(std::ranges::find(kinds, "device-added"), kinds.end());
  EXPECT_NE(std::ranges::find(kinds, "connected"), kinds.end());
  EXPECT_NE(std::ranges::find(kinds, "attached"), kinds.end());
  EXPECT_NE(std::ranges::find(kinds, "imported"), kinds.end());
  EXPECT_NE(std::ranges::find(kinds, "mode"), kinds.end());
  EXPECT_NE(std::ranges::find(kinds, "detached"), kinds.end());

  // A restart from the written-back file restores the device, its mode and vm2's address.
  auto reloaded = load_config(path);
  ASSERT_TRUE(reloaded) << reloaded.error().message;
  Vusbd again(io, *reloaded, path);
  ASSERT_TRUE(again.start());
  EXPECT_TRUE(listed(io, again.vm_port("vm2"), "1-4"));
  EXPECT_FALSE(listed(io, again.vm_port("vm1"), "1-1"));
  EXPECT_EQ(again.devices_json()[0]["mode"], "exclusive");
  ASSERT_TRUE(again.remove_device("gz"));
  EXPECT_FALSE(listed(io, again.vm_port("vm2"), "1-4"));
  EXPECT_TRUE(load_config(path)->devices.empty());
  again.stop();
}

}  // namespace
}  // namespace vusbd

namespace vusbd {
namespace {

TEST(VusbdDiscoveryTest, AWholeServerIsFollowedDevicesBehindHubsIncluded) {
  asio::io_context io;
  usb::testing::FakeDevice root(usb::testing::gadget_zero_like_descriptors(), usb::Speed::kHigh,
                                usb::DeviceLocation{.busid = "1-1", .path = {}});
  auto behind_hub_desc = usb::testing::gadget_zero_like_descriptors();
  behind_hub_desc.device.product_id = 0x1234;
  usb::testing::FakeDevice behind_hub(behind_hub_desc, usb::Speed::kFull,
                                      usb::DeviceLocation{.busid = "1-2.4", .path = {}});
  // A server may list anything as a bus id: this one is not taken.
  usb::testing::FakeDevice odd(usb::testing::gadget_zero_like_descriptors(), usb::Speed::kHigh,
                               usb::DeviceLocation{.busid = "*", .path = {}});
  Stub stub(io);
  ASSERT_TRUE(stub.exports.add(root));
  ASSERT_TRUE(stub.exports.add(behind_hub));
  ASSERT_TRUE(stub.exports.add(odd));
  stub.start(0);

  VusbdConfig config;
  config.vms = {{"vm1", {"127.0.0.1", 0}}};
  DeviceConfig lab;
  lab.name = "lab";
  ASSERT_TRUE(
      parse_source("usbip://127.0.0.1:" + std::to_string(stub.server->local_port()) + "/*", lab));
  EXPECT_EQ(lab.kind, DeviceConfig::Kind::kUsbipAll);
  lab.vms = {"vm1"};
  config.devices = {lab};
  Vusbd daemon(io, config);
  std::vector<std::string> discovered;
  daemon.on_event([&](const nlohmann::json& e) {
    if (e["event"] == "discovered") discovered.push_back(e["device"]);
  });
  bool ready = false;
  ASSERT_TRUE(daemon.start([&] { ready = true; }));
  ASSERT_TRUE(run_until(io, [&] { return ready; }));
  EXPECT_EQ(discovered, (std::vector<std::string>{"lab-1-1", "lab-1-2.4"}));
  // Both reach vm1 at its own addresses; the device behind the hub is the one at 1-2.
  ASSERT_TRUE(
      run_until(io, [&] { return daemon.stats()["devices"]["lab-1-2.4"]["connected"] == true; }));
  auto vm_dev = import(io, daemon.vm_port("vm1"), "1-2");
  ASSERT_TRUE(vm_dev);
  EXPECT_EQ(vm_dev->descriptors().device.product_id, 0x1234);
  vm_dev->close();
  EXPECT_EQ(daemon.attach("lab", "vm1").error().code, usb::Error::Code::kInvalidArgument);
  // Modes apply to discovered devices and through the discovery to all of them.
  ASSERT_TRUE(daemon.set_mode("lab-1-1", "exclusive"));
  ASSERT_TRUE(daemon.set_mode("lab", "shared"));
  EXPECT_EQ(daemon.stats()["devices"]["lab-1-1"]["mode"], "shared");
  EXPECT_FALSE(daemon.set_mode("lab-1-1", "sometimes"));

  // The server stops listing the device behind the hub: vusbd removes it (within a listing).
  stub.exports.remove(behind_hub);
  ASSERT_TRUE(run_until(
      io,
      [&] {
        for (const auto& d : daemon.devices_json())
          if (d["name"] == "lab-1-2.4") return false;
        return true;
      },
      8000));
  EXPECT_FALSE(daemon.addresses().resolve_busid("vm1", "1-2"));
  EXPECT_TRUE(daemon.addresses().resolve_busid("vm1", "1-1"));
  // Removed by hand, a listed device stays removed (the next listings do not bring it back).
  ASSERT_TRUE(daemon.remove_device("lab-1-1"));
  run_until(
      io, [] { return false; }, 2500);
  for (const auto& d : daemon.devices_json()) EXPECT_NE(d["name"], "lab-1-1");
  daemon.stop();
  stub.kill();
}

}  // namespace
}  // namespace vusbd
