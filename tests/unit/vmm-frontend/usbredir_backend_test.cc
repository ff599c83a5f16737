// vusbd's usbredir:// source against our own usbredir host (HostChannel serving a scripted
// Gadget-Zero-like device) behind a TCP listener: the device is imported, and imported again
// when the host disconnects it or the connection ends.
#include "vmm-frontend/backends/usbredir_backend.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <vector>

#include "usb/core/fake_device.h"
#include "usb/net/listener.h"
#include "usb/usbredir/host_channel.h"
#include "tests/unit/run_until.h"

namespace vusbd {
namespace {

namespace asio = boost::asio;

using usb::testing::run_until;

TEST(UsbredirBackendTest, KeepsTheHostsDeviceImported) {
  asio::io_context io;
  usb::testing::FakeDevice device(usb::testing::gadget_zero_like_descriptors());
  usb::net::Listener::Options listen_options;
  listen_options.label = "usbredir host";
  usb::net::Listener listener(io, std::move(listen_options));
  ASSERT_TRUE(listener.listen(usb::net::Endpoint("127.0.0.1", 0)));
  std::vector<std::shared_ptr<usb::usbredir::HostChannel>> hosts;
  listener.start([&](std::unique_ptr<usb::net::Stream> stream) {
    usb::usbredir::HostChannel::Options options;
    options.label = "host " + std::to_string(hosts.size());
    auto host = usb::usbredir::HostChannel::create(std::move(stream), std::move(options));
    host->start();
    host->attach(device);
    hosts.push_back(host);
  });
  std::vector<usb::Device*> changes;
  UsbredirBackend backend(io, listener.local_endpoint(),
                          [&](usb::Device* d) { changes.push_back(d); });
  EXPECT_EQ(backend.describe(), "usbredir://127.0.0.1:" + std::to_string(listener.local_port()));
  ASSERT_TRUE(backend.start());
  ASSERT_TRUE(run_until(io, [&] { return changes.size() == 1; }));
  ASSERT_NE(changes[0], nullptr);
  EXPECT_EQ(changes[0]->descriptors().device.vendor_id, 0x0525);
  EXPECT_EQ(changes[0]->active_configuration(), 3);
  EXPECT_EQ(backend.device(), changes[0]);
  nlohmann::json stats;
  backend.add_stats(stats);
  EXPECT_GE(stats["usbredir_import"]["packets_in"].get<uint64_t>(), 3u);

  // The host disconnects the device: gone, then imported over a new connection.
  hosts[0]->detach();
  ASSERT_TRUE(run_until(io, [&] { return changes.size() == 3; }));
  EXPECT_EQ(changes[1], nullptr);
  ASSERT_NE(changes[2], nullptr);
  EXPECT_EQ(hosts.size(), 2u);
  // The connection ends: the same again.
  hosts[1]->close();
  ASSERT_TRUE(run_until(io, [&] { return changes.size() == 5; }));
  EXPECT_EQ(changes[3], nullptr);
  ASSERT_NE(changes[4], nullptr);
  EXPECT_EQ(backend.device(), changes[4]);
  EXPECT_TRUE(backend.device()->connected());
  for (auto& h : hosts) h->close();
  listener.stop();
}

}  // namespace
}  // namespace vusbd
