// vusbd end to end in one process and one loop: a USB/IP server (vusb-stub's) with a scripted
// device, vusbd importing it and serving two VMs, and vusb's own client in the VMs' place.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include "devices/remote/usbip_remote_device.h"
#include "usb-stub/export_table.h"
#include "usb-stub/usbip_server.h"
#include "usb/core/fake_device.h"
#include "vmm-frontend/vusbd.h"

namespace vusbd {
namespace {

namespace asio = boost::asio;

usb::DescriptorSet descriptors() {
  usb::DescriptorSet d;
  d.device.vendor_id = 0x0525;
  d.device.product_id = 0xa4a0;
  d.device.num_configurations = 1;
  usb::ConfigurationDescriptor c;
  c.value = 3;
  c.num_interfaces = 1;
  usb::InterfaceDescriptor i;
  i.interface_class = 0xff;
  usb::EndpointDescriptor in;
  in.address = 0x81;
  in.attributes = 2;
  in.max_packet_size = 512;
  i.endpoints = {in};
  c.interfaces = {i};
  d.configurations.push_back(c);
  return d;
}

// The stub side: a server on a fixed port that can die and come back.
struct Stub {
  explicit Stub(asio::io_context& io) : io(io) {}
  void start(uint16_t port) {
    server = std::make_unique<stub::UsbipServer>(io, exports, stub::ConnectionLimits{});
    ASSERT_TRUE(server->listen({"127.0.0.1", port}));
  }
  void kill() { server->stop(); }
  asio::io_context& io;
  stub::ExportTable exports;
  std::unique_ptr<stub::UsbipServer> server;
};

template <typename Pred>
bool run_until(asio::io_context& io, Pred pred, int ms = 5000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!pred() && std::chrono::steady_clock::now() < deadline) {
    io.run_for(std::chrono::milliseconds(5));
    if (io.stopped()) io.restart();
  }
  return pred();
}

std::unique_ptr<devices::UsbipRemoteDevice> import(asio::io_context& io, uint16_t port,
                                                   const std::string& busid,
                                                   std::string* error = nullptr) {
  std::unique_ptr<devices::UsbipRemoteDevice> dev;
  bool done = false;
  devices::UsbipRemoteDevice::import(io, {"127.0.0.1", port}, busid, {}, [&](auto r) {
    if (r)
      dev = std::move(*r);
    else if (error)
      *error = r.error().message;
    done = true;
  });
  run_until(io, [&] { return done; });
  return dev;
}

TEST(VusbdIntegrationTest, TwoVmsShareAndTheStubDiesAndComesBack) {
  asio::io_context io;
  usb::testing::FakeDevice device(descriptors(), usb::Speed::kHigh,
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
  ASSERT_TRUE(daemon.start([&] { ready = true; }));
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

}  // namespace
}  // namespace vusbd
