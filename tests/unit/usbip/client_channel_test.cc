// usb::usbip::ClientChannel (vusbd's import side) against the project's own USB/IP server on
// loopback, all on the test's loop: what the client does with the server's answers.
#include "usb/usbip/client_channel.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <array>
#include <optional>
#include <sstream>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "devices/remote/usbip_remote_device.h"
#include "usb/core/fake_device.h"
#include "usb/usbip/export_table.h"
#include "usb/usbip/server.h"
#include "usb/wire/usbip_codec.h"
#include "tests/unit/run_until.h"

namespace usb::usbip {
namespace {

namespace asio = boost::asio;
namespace wire = usb::wire::usbip;

using usb::testing::run_until;

// A vusb-stub-like server (a FakeDevice as 1-1) on loopback, and the client channel that
// imported it, on the test thread's loop.
class ClientChannelTest : public ::testing::Test {
 protected:
  ClientChannelTest()
      : device(usb::testing::gadget_zero_like_descriptors(), Speed::kHigh,
               DeviceLocation{.busid = "1-1", .path = {}}),
        server(io, exports, ConnectionLimits{}) {}
  ~ClientChannelTest() override {
    if (client) client->close("test over");
    server.stop();
    io.run_for(std::chrono::milliseconds(10));
  }
  // Imports 1-1. `gone` records why the connection ended; it is a member because the close in
  // the destructor reports to it after the test body's locals are gone.
  void import() {
    ASSERT_TRUE(exports.add(device));
    ASSERT_TRUE(server.listen({"127.0.0.1", 0}));
    ClientChannel::Options options;
    options.on_disconnect = [this](const std::string& why) { gone = why; };
    ClientChannel::import(io, server.local_endpoint(), "1-1", std::move(options), [&](auto r) {
      ASSERT_TRUE(r) << r.error().message;
      client = *r;
    });
    ASSERT_TRUE(run_until(io, [&] { return client != nullptr; }));
  }

  asio::io_context io;
  usb::testing::FakeDevice device;
  ExportTable exports;
  Server server;
  std::shared_ptr<ClientChannel> client;
  std::string gone;
};

TEST_F(ClientChannelTest, AnIsoUrbTheServerRefusesFailsAloneAndTheImportGoesOn) {
  ASSERT_NO_FATAL_FAILURE(import());

  // Iso IN 0x82 exists only in alt 1; the device is in alt 0, so vusb-stub's server refuses the
  // URB with a RET_SUBMIT that carries no iso descriptors (as it would after another VM moved
  // a shared device back to alt 0).
  Transfer iso(0x82, TransferType::kIsochronous, 4 * 1024);
  for (uint32_t i = 0; i < 4; ++i) iso.iso_packets.push_back({i * 1024, 1024, 0, Status::kOk});
  bool iso_done = false;
  iso.set_completion([&](Transfer&) { iso_done = true; });
  ASSERT_TRUE(iso.begin(nullptr));
  client->submit(iso);
  ASSERT_TRUE(run_until(io, [&] { return iso_done; }));
  EXPECT_NE(iso.status(), Status::kOk);
  EXPECT_EQ(iso.actual_length(), 0u);
  EXPECT_NE(iso.iso_packets[3].status, Status::kOk);
  EXPECT_TRUE(client->connected()) << "the import ended: " << gone;

  // The import still works.
  Transfer bulk(0x81, TransferType::kBulk, 512);
  bool bulk_done = false;
  bulk.set_completion([&](Transfer&) { bulk_done = true; });
  ASSERT_TRUE(bulk.begin(nullptr));
  client->submit(bulk);
  ASSERT_TRUE(run_until(io, [&] { return !device.pending.empty(); }));
  device.complete_next(Status::kOk, 100);
  ASSERT_TRUE(run_until(io, [&] { return bulk_done; }));
  EXPECT_EQ(bulk.status(), Status::kOk);
  EXPECT_EQ(bulk.actual_length(), 100u);
}

TEST_F(ClientChannelTest, AFloodOfRefusedUrbsIsLoggedOncePerHundred) {
  // 250 URBs the server must refuse: three warnings (the 1st, 101st, 201st), not 250.
  std::ostringstream log;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
  const auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  ASSERT_NO_FATAL_FAILURE(import());
  std::vector<std::unique_ptr<Transfer>> urbs;
  int done = 0;
  for (int i = 0; i < 250; ++i) {
    auto t = std::make_unique<Transfer>(0x82, TransferType::kIsochronous, 1024);
    t->iso_packets.push_back({0, 1024, 0, Status::kOk});
    t->set_completion([&](Transfer&) { ++done; });
    ASSERT_TRUE(t->begin(nullptr));
    client->submit(*t);
    urbs.push_back(std::move(t));
  }
  ASSERT_TRUE(run_until(io, [&] { return done == 250; }));
  EXPECT_TRUE(client->connected());
  spdlog::set_default_logger(previous);
  size_t lines = 0;
  for (size_t at = 0; (at = log.str().find("refused on this connection", at)) != std::string::npos;
       ++at)
    ++lines;
  EXPECT_EQ(lines, 3u) << log.str();
}

// A server that accepts and then answers nothing, or answers the import and then no URB.
struct SilentServer {
  explicit SilentServer(asio::io_context& io, bool answer_import)
      : acceptor(io, {asio::ip::make_address("127.0.0.1"), 0}), answer(answer_import) {
    acceptor.async_accept([this](boost::system::error_code ec, asio::ip::tcp::socket s) {
      if (ec) return;
      peer = std::make_unique<asio::ip::tcp::socket>(std::move(s));
      if (!answer) return;
      asio::async_read(*peer, asio::buffer(request), [this](boost::system::error_code e, size_t) {
        if (e) return;
        wire::DeviceRecord rec;
        rec.busid = "1-1";
        rec.busnum = 1;
        rec.devnum = 2;
        rec.speed = 3;
        reply = wire::encode_import_reply(wire::kStOk, &rec);
        asio::async_write(*peer, asio::buffer(reply), [](boost::system::error_code, size_t) {});
      });
    });
  }
  uint16_t port() const { return acceptor.local_endpoint().port(); }
  asio::ip::tcp::acceptor acceptor;
  bool answer;
  std::unique_ptr<asio::ip::tcp::socket> peer;
  std::array<uint8_t, 8 + 32> request{};  // OP_REQ_IMPORT
  std::vector<uint8_t> reply;
};

TEST(ClientChannel, AServerThatSaysNothingFailsTheImportAtItsDeadline) {
  asio::io_context io;
  SilentServer server(io, /*answer_import=*/false);
  ClientChannel::Options options;
  options.import_timeout = std::chrono::milliseconds(200);
  std::optional<usb::Result<std::shared_ptr<ClientChannel>>> got;
  const auto t0 = std::chrono::steady_clock::now();
  ClientChannel::import(io, {"127.0.0.1", server.port()}, "1-1", options,
                        [&](auto r) { got = std::move(r); });
  ASSERT_TRUE(run_until(io, [&] { return got.has_value(); }));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  ASSERT_FALSE(*got);
  EXPECT_EQ(got->error().message, "no import reply within 200 ms");
}

TEST(ClientChannel, AServerThatNeverAnswersTheDescriptorReadsFailsTheDeviceImport) {
  // vusbd's USB/IP import: the server answers OP_REQ_IMPORT and then no URB; the descriptor
  // fetch would wait forever. At the deadline the connection closes and the import fails.
  asio::io_context io;
  SilentServer server(io, /*answer_import=*/true);
  devices::UsbipRemoteDevice::Options options;
  options.import_timeout = std::chrono::milliseconds(300);
  std::optional<usb::Result<std::unique_ptr<devices::UsbipRemoteDevice>>> got;
  devices::UsbipRemoteDevice::import(io, {"127.0.0.1", server.port()}, "1-1", options,
                                     [&](auto r) { got = std::move(r); });
  ASSERT_TRUE(run_until(io, [&] { return got.has_value(); }));
  ASSERT_FALSE(*got);
  EXPECT_EQ(got->error().message,
            "the server did not answer the descriptor reads within 300 ms");
}

}  // namespace
}  // namespace usb::usbip
