// vusbd giving a device to a VM through QEMU's usb-redir: a guest built on libusbredirparser (as
// QEMU's usb-redir is) connects to the VM's usbredir port, is announced the device, reads its
// descriptor; the view is claimed while it is connected and free again once it goes. And the
// [[vm]] usbredir configuration: round trip and refusals.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>

#include "tests/unit/usbredir/fake_guest.h"
#include "usb/core/fake_device.h"
#include "usb/usbip/export_table.h"
#include "usb/usbip/server.h"
#include "usb/net/connector.h"
#include "vmm-frontend/control_routes.h"
#include "vmm-frontend/vusbd.h"
#include "tests/unit/run_until.h"

namespace vusbd {
namespace {

namespace asio = boost::asio;
using usb::testing::FakeGuest;

using usb::testing::run_until;

VusbdConfig config_with_usbredir() {
  VusbdConfig c;
  VmConfig vm{"vm1", {"127.0.0.1", 0}};
  vm.usbredir = {{"gz", {"127.0.0.1", 0}, false}};
  c.vms = {vm};
  DeviceConfig d;
  d.name = "gz";
  EXPECT_TRUE(parse_source("emulated:gadget-zero", d));
  d.vms = {"vm1"};
  c.devices = {d};
  return c;
}

TEST(UsbredirAdapter, QemusUsbRedirIsAnnouncedTheDeviceAndHoldsItWhileConnected) {
  asio::io_context io;
  Vusbd daemon(io, config_with_usbredir());
  bool ready = false;
  auto started = daemon.start([&] { ready = true; });
  ASSERT_TRUE(started) << started.error().message;
  ASSERT_TRUE(run_until(io, [&] { return ready; }));
  auto vms = daemon.vms_json();
  ASSERT_EQ(vms[0]["usbredir"].size(), 1u);
  EXPECT_EQ(vms[0]["adapters"], nlohmann::json({"usbip", "usbredir"}));
  auto at = usb::net::parse_endpoint(vms[0]["usbredir"][0]["listen"].get<std::string>());
  ASSERT_TRUE(at);

  std::unique_ptr<FakeGuest> guest;
  usb::net::async_connect(io, *at, {}, std::chrono::seconds(2), [&](auto r) {
    ASSERT_TRUE(r) << r.error().message;
    guest = std::make_unique<FakeGuest>(std::move(*r));
  });
  ASSERT_TRUE(run_until(io, [&] { return guest && guest->connect.has_value(); }));
  const usb_redir_device_connect_header c = *guest->connect;
  EXPECT_EQ(c.vendor_id, 0x0525);
  EXPECT_EQ(c.speed, usb_redir_speed_high);
  EXPECT_EQ(daemon.devices_json()[0]["vms"][0]["imported"], true) << "claimed while connected";
  EXPECT_EQ(daemon.vms_json()[0]["usbredir"][0]["announced"], true);

  usb_redir_control_packet_header get{0x80, 6, 0x80, 0, 0x0100, 0, 18};
  usbredirparser_send_control_packet(guest->parser(), 1, &get, nullptr, 0);
  guest->flush();
  ASSERT_TRUE(run_until(io, [&] { return guest->replies.contains(1); }));
  EXPECT_EQ(guest->replies[1].status, usb_redir_success);
  EXPECT_EQ(guest->replies[1].data.size(), 18u);

  // What to give QEMU and libvirt for it: the port vusbd really listens on.
  auto snippets = daemon.qemu_snippets("vm1");
  ASSERT_TRUE(snippets) << snippets.error().message;
  const std::string port = std::to_string(at->tcp.port);
  EXPECT_EQ((*snippets)["qemu"],
            nlohmann::json({"-device", "qemu-xhci,id=vusb-xhci", "-chardev",
                            "socket,id=vusb-gz,host=127.0.0.1,port=" + port + ",reconnect=2",
                            "-device", "usb-redir,chardev=vusb-gz,id=vusb-gz-redir,bus=vusb-xhci.0"}));
  EXPECT_NE((*snippets)["libvirt"].get<std::string>().find(
                "<source mode='connect' host='127.0.0.1' service='" + port + "'/>"),
            std::string::npos);
  EXPECT_FALSE(daemon.qemu_snippets("vm2"));
  // A high-speed guest bus: QEMU's usb-ehci instead.
  auto ehci = daemon.qemu_snippets("vm1", "ehci");
  ASSERT_TRUE(ehci);
  EXPECT_EQ((*ehci)["qemu"][1], "usb-ehci,id=vusb-ehci");
  EXPECT_EQ((*ehci)["qemu"][5], "usb-redir,chardev=vusb-gz,id=vusb-gz-redir,bus=vusb-ehci.0");
  EXPECT_EQ((*ehci)["libvirt"].get<std::string>().rfind("<controller type='usb' model='ehci'/>", 0),
            0u);
  EXPECT_FALSE(daemon.qemu_snippets("vm1", "ohci"));

  // QEMU goes away: the view is free again, and the port takes the next connection.
  guest->close();
  ASSERT_TRUE(run_until(io, [&] { return daemon.devices_json()[0]["vms"][0]["imported"] == false; }));
  std::unique_ptr<FakeGuest> again;
  usb::net::async_connect(io, *at, {}, std::chrono::seconds(2), [&](auto r) {
    ASSERT_TRUE(r);
    again = std::make_unique<FakeGuest>(std::move(*r));
  });
  ASSERT_TRUE(run_until(io, [&] { return again && again->connect.has_value(); }));
  again->close();
  daemon.stop();
  io.run_for(std::chrono::milliseconds(20));
}

TEST(UsbredirAdapter, TheConfigRoundTripsAndBadAttachmentsAreRefused) {
  VusbdConfig c = config_with_usbredir();
  c.vms[0].usbredir.push_back({"gz", usb::net::Endpoint::unix_socket("/run/q.sock"), true});
  auto twice = validate(c);
  ASSERT_FALSE(twice);
  EXPECT_NE(twice.error().message.find("twice"), std::string::npos);
  c.vms[0].usbredir = {{"gz", usb::net::Endpoint::unix_socket("/run/q.sock"), true}};
  ASSERT_TRUE(validate(c));
  const std::string toml = to_toml(c);
  EXPECT_NE(toml.find("usbredir = [{ device = \"gz\", connect = \"unix:/run/q.sock\" }]"),
            std::string::npos)
      << toml;
  c.devices[0].vms.clear();
  auto not_given = validate_usbredir_devices(c);
  ASSERT_FALSE(not_given);
  EXPECT_NE(not_given.error().message.find("not given"), std::string::npos);
}

TEST(UsbredirAdapter, EveryVmOfTheFileGetsItsOwnUsbredirDevice) {
  // vusbd creates the file's devices one by one: vm2's attachment names a device created after
  // vm1's. And a file naming a device it never defines is refused.
  VusbdConfig c = config_with_usbredir();
  VmConfig vm2{"vm2", {"127.0.0.1", 0}};
  vm2.usbredir = {{"gz2", {"127.0.0.1", 0}, false}};
  c.vms.push_back(vm2);
  DeviceConfig d2 = c.devices[0];
  d2.name = "gz2";
  d2.vms = {"vm2"};
  c.devices.push_back(d2);
  asio::io_context io;
  {
    Vusbd daemon(io, c);
    auto started = daemon.start();
    ASSERT_TRUE(started) << started.error().message;
    EXPECT_EQ(daemon.vms_json()[1]["usbredir"][0]["device"], "gz2");
    daemon.stop();
  }
  io.run_for(std::chrono::milliseconds(10));
  c.devices.pop_back();
  const auto path = std::filesystem::temp_directory_path() / "vusbd-usbredir-undefined.toml";
  std::ofstream(path) << to_toml(c);
  auto loaded = load_config(path.string());
  std::filesystem::remove(path);
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message.find("usbredir for 'gz2', a device not defined"),
            std::string::npos)
      << loaded.error().message;
}

TEST(UsbredirAdapter, VusbctlMovesADeviceToUsbRedirAndBack) {
  // The API behind `vusbctl usbredir --vm vm1 -d gz --listen ...` / `--remove`.
  VusbdConfig c = config_with_usbredir();
  c.vms[0].usbredir.clear();
  asio::io_context io;
  Vusbd daemon(io, c);
  ASSERT_TRUE(daemon.start());
  auto bad = route(daemon, "POST", "/api/v1/vms/vm1/usbredir", R"({"device": "gz"})");
  EXPECT_EQ(bad.status, 400);
  auto none = route(daemon, "POST", "/api/v1/vms/vm1/usbredir",
                    R"({"device": "nope", "listen": "127.0.0.1:0"})");
  EXPECT_EQ(none.status, 404);
  auto added = route(daemon, "POST", "/api/v1/vms/vm1/usbredir",
                     R"({"device": "gz", "listen": "127.0.0.1:0"})");
  ASSERT_EQ(added.status, 200) << added.body.dump();
  EXPECT_EQ(route(daemon, "POST", "/api/v1/vms/vm1/usbredir",
                  R"({"device": "gz", "listen": "127.0.0.1:0"})")
                .status,
            409);
  ASSERT_EQ(daemon.config().vms[0].usbredir.size(), 1u) << "written to the config";
  auto vms = daemon.vms_json();
  ASSERT_EQ(vms[0]["usbredir"].size(), 1u);
  auto at = usb::net::parse_endpoint(vms[0]["usbredir"][0]["listen"].get<std::string>());
  ASSERT_TRUE(at);
  std::unique_ptr<FakeGuest> guest;
  usb::net::async_connect(io, *at, {}, std::chrono::seconds(2), [&](auto r) {
    ASSERT_TRUE(r);
    guest = std::make_unique<FakeGuest>(std::move(*r));
  });
  ASSERT_TRUE(run_until(io, [&] { return guest && guest->connect.has_value(); }));
  EXPECT_EQ(daemon.devices_json()[0]["vms"][0]["imported"], true);

  auto removed = route(daemon, "DELETE", "/api/v1/vms/vm1/usbredir/gz", "");
  ASSERT_EQ(removed.status, 200) << removed.body.dump();
  ASSERT_TRUE(run_until(io, [&] {
    return !guest->order.empty() && guest->order.back() == "device_disconnect";
  })) << "QEMU sees the device unplugged";
  EXPECT_TRUE(daemon.config().vms[0].usbredir.empty());
  EXPECT_EQ(daemon.devices_json()[0]["vms"][0]["imported"], false);
  EXPECT_EQ(route(daemon, "DELETE", "/api/v1/vms/vm1/usbredir/gz", "").status, 404);
  EXPECT_EQ(daemon.qemu_snippets("vm1").error().code, usb::Error::Code::kNotFound);
  guest->close();
  daemon.stop();
  io.run_for(std::chrono::milliseconds(20));
}

TEST(UsbredirAdapter, TheExportingHostGoingAwayIsAnUnplugInQemuAndItsReturnAReplug) {
  // gz comes from a USB/IP server that dies and comes back on the same port; vm1 has it over
  // usb-redir. QEMU hears device_disconnect when it goes and a new device_connect when vusbd has
  // imported it again — an unplug and a replug in the guest — on the same connection.
  asio::io_context io;
  usb::testing::FakeDevice device(usb::testing::gadget_zero_like_descriptors(), usb::Speed::kHigh,
                                  usb::DeviceLocation{.busid = "1-1", .path = {}});
  usb::usbip::ExportTable exports;
  ASSERT_TRUE(exports.add(device));
  auto server = std::make_unique<usb::usbip::Server>(io, exports, usb::usbip::ConnectionLimits{});
  ASSERT_TRUE(server->listen({"127.0.0.1", 0}));
  const uint16_t port = server->local_port();

  VusbdConfig c = config_with_usbredir();
  ASSERT_TRUE(parse_source("usbip://127.0.0.1:" + std::to_string(port) + "/1-1", c.devices[0]));
  Vusbd daemon(io, c);
  bool ready = false;
  ASSERT_TRUE(daemon.start([&] { ready = true; }));
  ASSERT_TRUE(run_until(io, [&] { return ready; }));
  auto at = usb::net::parse_endpoint(daemon.vms_json()[0]["usbredir"][0]["listen"].get<std::string>());
  ASSERT_TRUE(at);
  std::unique_ptr<FakeGuest> guest;
  usb::net::async_connect(io, *at, {}, std::chrono::seconds(2), [&](auto r) {
    ASSERT_TRUE(r);
    guest = std::make_unique<FakeGuest>(std::move(*r));
  });
  ASSERT_TRUE(run_until(io, [&] { return guest && guest->connect.has_value(); }));
  auto count = [&](const std::string& what) { return std::ranges::count(guest->order, what); };

  server->stop();
  ASSERT_TRUE(run_until(io, [&] { return count("device_disconnect") == 1; }))
      << "QEMU is told the device went";
  server = std::make_unique<usb::usbip::Server>(io, exports, usb::usbip::ConnectionLimits{});
  ASSERT_TRUE(server->listen({"127.0.0.1", port}));
  ASSERT_TRUE(run_until(io, [&] { return count("device_connect") == 2; }, 10000))
      << "and announced again once it is back";
  EXPECT_EQ(guest->connect->vendor_id, 0x0525);
  EXPECT_EQ(daemon.devices_json()[0]["vms"][0]["imported"], true);
  guest->close();
  daemon.stop();
  server->stop();
  io.run_for(std::chrono::milliseconds(20));
}

}  // namespace
}  // namespace vusbd
