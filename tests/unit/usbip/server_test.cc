// usb::usbip::Server and ServerConnection over real sockets — every test runs twice, once over
// loopback TCP and once over a UNIX-domain socket (the same protocol code over either stream) —
// against a FakeDevice the test drives. The server's loop runs on a background thread; the test
// talks raw USB/IP bytes with blocking sockets and touches the FakeDevice only through on_loop().
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <filesystem>
#include <future>
#include <thread>

#include "usb/core/byte_order.h"
#include "usb/core/fake_device.h"
#include "usb/net/connector.h"
#include "usb/usbip/export_table.h"
#include "usb/usbip/server.h"
#include "usb/wire/usbip_codec.h"

namespace usb::usbip {
namespace {

namespace asio = boost::asio;
namespace wire = usb::wire::usbip;
using Socket = asio::generic::stream_protocol::socket;

enum class Transport { kTcp, kUnix };

class UsbipServerTest : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override {
    device_ = std::make_unique<usb::testing::FakeDevice>(
        usb::testing::gadget_zero_like_descriptors(), usb::Speed::kHigh,
        usb::DeviceLocation{.busid = "1-1", .path = {}});
    ConnectionLimits limits;
    limits.wire.max_transfer_length = 1 << 20;
    limits.max_inflight_bytes = 4 << 20;
    limits.op_timeout = std::chrono::milliseconds(300);
    server_ = std::make_unique<Server>(io_, exports_, limits);
    work_ = std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(
        io_.get_executor());
    thread_ = std::thread([this] { io_.run(); });
    // Everything the server owns lives on its loop thread (LoopChecker asserts it in debug).
    on_loop([&] {
      ASSERT_TRUE(exports_.add(*device_).has_value());
      usb::net::Endpoint where{"127.0.0.1", 0};
      if (GetParam() == Transport::kUnix) {
        where = usb::net::Endpoint::unix_socket(
            (std::filesystem::temp_directory_path() /
             ("vusb-usbip-test-" + std::to_string(::getpid()) + ".sock"))
                .string());
      }
      ASSERT_TRUE(server_->listen(where).has_value());
      endpoint_ = server_->local_endpoint();
    });
  }
  void TearDown() override {
    on_loop([&] { server_->stop(); });
    work_.reset();
    io_.stop();
    thread_.join();
  }

  // Runs fn on the server's loop and waits for it.
  template <typename Fn>
  void on_loop(Fn fn) {
    if (!thread_.joinable()) return fn();
    std::promise<void> done;
    asio::post(io_, [&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

  // The server again, with other limits, on a new address of the same kind.
  void restart(const ConnectionLimits& limits) {
    on_loop([&] {
      server_->stop();
      server_ = std::make_unique<Server>(io_, exports_, limits);
      usb::net::Endpoint where{"127.0.0.1", 0};
      if (GetParam() == Transport::kUnix)
        where = usb::net::Endpoint::unix_socket(
            (std::filesystem::temp_directory_path() /
             ("vusb-usbip-test-" + std::to_string(::getpid()) + "-2.sock"))
                .string());
      ASSERT_TRUE(server_->listen(where).has_value());
      endpoint_ = server_->local_endpoint();
    });
  }

  Socket connect() {
    auto s = usb::net::connect_blocking(client_io_, endpoint_);
    EXPECT_TRUE(s.has_value()) << s.error().message;
    return std::move(*s);
  }
  static void send(Socket& s, std::span<const uint8_t> bytes) {
    asio::write(s, asio::buffer(bytes.data(), bytes.size()));
  }
  static std::vector<uint8_t> recv(Socket& s, size_t n) {
    std::vector<uint8_t> b(n);
    asio::read(s, asio::buffer(b));
    return b;
  }
  // True if the peer closed the connection (read hits EOF).
  static bool closed_by_peer(Socket& s) {
    uint8_t byte;
    boost::system::error_code ec;
    asio::read(s, asio::buffer(&byte, 1), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

  Socket import(const std::string& busid, uint32_t* status_out = nullptr) {
    auto s = connect();
    send(s, wire::encode_op_header({wire::kVersion, wire::kOpReqImport, 0}));
    send(s, *wire::encode_import_request(busid));
    auto h = *wire::decode_op_header(recv(s, wire::kOpHeaderSize));
    EXPECT_EQ(h.code, wire::kOpRepImport);
    if (status_out) *status_out = h.status;
    if (h.status == wire::kStOk) {
      auto rec = *wire::decode_device_record(recv(s, wire::kDeviceRecordSize));
      EXPECT_EQ(rec.busid, busid);
    }
    return s;
  }

  static wire::CmdSubmit submit(uint32_t seqnum, uint32_t ep, uint32_t dir, int32_t len) {
    wire::CmdSubmit c;
    c.seqnum = seqnum;
    c.devid = wire::make_devid(1, 2);
    c.direction = dir;
    c.ep = ep;
    c.transfer_buffer_length = len;
    c.number_of_packets = 0;
    return c;
  }
  static wire::UrbPdu read_pdu(Socket& s) {
    auto h = recv(s, wire::kUrbHeaderSize);
    auto pdu = wire::decode_urb_header(h);
    EXPECT_TRUE(pdu.has_value());
    return *pdu;
  }

  asio::io_context io_;
  asio::io_context client_io_;
  ExportTable exports_;
  std::unique_ptr<usb::testing::FakeDevice> device_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread thread_;
  usb::net::Endpoint endpoint_;
};

// Waits until the FakeDevice holds n pending transfers.
#define WAIT_PENDING(n)                                        \
  for (int i_ = 0; i_ < 200; ++i_) {                           \
    size_t p_ = 0;                                             \
    on_loop([&] { p_ = device_->pending.size(); });            \
    if (p_ == (n)) break;                                      \
    std::this_thread::sleep_for(std::chrono::milliseconds(5)); \
  }

TEST_P(UsbipServerTest, DevlistListsDeviceWithInterfaces) {
  auto s = connect();
  send(s, wire::encode_op_header({wire::kVersion, wire::kOpReqDevlist, 0}));
  auto h = *wire::decode_op_header(recv(s, 8));
  EXPECT_EQ(h.code, wire::kOpRepDevlist);
  EXPECT_EQ(h.status, 0u);
  auto n = recv(s, 4);
  EXPECT_EQ(usb::load_be32(n.data()), 1u);
  auto rec = *wire::decode_device_record(recv(s, wire::kDeviceRecordSize));
  EXPECT_EQ(rec.busid, "1-1");
  EXPECT_EQ(rec.id_vendor, 0x0525);
  EXPECT_EQ(rec.id_product, 0xa4a0);
  EXPECT_EQ(rec.busnum, 1u);
  EXPECT_EQ(rec.devnum, 2u);
  EXPECT_EQ(rec.speed, 3u);
  EXPECT_EQ(rec.configuration_value, 3);
  EXPECT_EQ(rec.num_interfaces, 1);
  auto intf = recv(s, 4);
  EXPECT_EQ(intf[0], 0xff);
  EXPECT_TRUE(closed_by_peer(s));
}

TEST_P(UsbipServerTest, SilentClientIsDroppedAfterTheOpTimeout) {
  auto s = connect();
  EXPECT_TRUE(closed_by_peer(s)) << "a client that never sends its op request is closed";
  // An imported connection is not subject to the op timeout.
  auto imported = import("1-1");
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  on_loop([&] { device_->auto_complete = true; });
  send(imported, wire::encode(submit(1, 1, wire::kDirIn, 4)));
  EXPECT_EQ(std::get<wire::RetSubmit>(read_pdu(imported)).seqnum, 1u);
}

TEST_P(UsbipServerTest, SecondImporterGetsBusyAndUnknownBusidNoDev) {
  uint32_t st = 99;
  auto a = import("1-1", &st);
  EXPECT_EQ(st, wire::kStOk);
  auto b = import("1-1", &st);
  EXPECT_EQ(st, wire::kStDevBusy);
  EXPECT_TRUE(closed_by_peer(b));
  auto c = import("9-9", &st);
  EXPECT_EQ(st, wire::kStNoDev);
  // After the first importer hangs up, the device can be imported again.
  a.close();
  for (int i = 0; i < 100; ++i) {
    auto d = import("1-1", &st);
    if (st == wire::kStOk) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(st, wire::kStOk);
}

TEST_P(UsbipServerTest, BulkInAndOutRoundTrip) {
  auto s = import("1-1");
  // OUT with payload.
  std::vector<uint8_t> payload(1000);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i);
  send(s, wire::encode(submit(1, 1, wire::kDirOut, 1000)));
  send(s, payload);
  // Wait for the server to read it (the device is the loop's: looked at only there).
  for (int i = 0; i < 100; ++i) {
    bool empty = true;
    on_loop([&] { empty = device_->pending.empty(); });
    if (!empty) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  on_loop([&] {
    ASSERT_EQ(device_->pending.size(), 1u);
    usb::Transfer* t = device_->pending.front();
    EXPECT_EQ(t->endpoint(), 0x01);
    EXPECT_EQ(t->type(), usb::TransferType::kBulk);
    EXPECT_TRUE(std::equal(payload.begin(), payload.end(), t->buffer().begin()));
    device_->complete_next(usb::Status::kOk, 1000);
  });
  auto r = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(r.seqnum, 1u);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.actual_length, 1000);

  // IN: data follows the header.
  on_loop([&] { device_->auto_complete = true; });
  send(s, wire::encode(submit(2, 1, wire::kDirIn, 64)));
  r = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(r.seqnum, 2u);
  EXPECT_EQ(r.actual_length, 64);
  EXPECT_EQ(recv(s, 64).size(), 64u);
  // Zero-length OUT.
  send(s, wire::encode(submit(3, 1, wire::kDirOut, 0)));
  r = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(r.seqnum, 3u);
  EXPECT_EQ(r.actual_length, 0);
}

TEST_P(UsbipServerTest, InterruptInUrb) {
  auto s = import("1-1");
  auto c = submit(5, 3, wire::kDirIn, 64);
  c.number_of_packets = -1;  // what vhci sends for interrupt URBs
  c.start_frame = -1;
  c.interval = 4;
  send(s, wire::encode(c));
  WAIT_PENDING(1u);
  on_loop([&] {
    usb::Transfer* t = device_->pending.front();
    EXPECT_EQ(t->type(), usb::TransferType::kInterrupt);
    EXPECT_EQ(t->interval, 4u);
    std::fill_n(t->buffer().data(), 8, uint8_t{0x42});
    device_->complete_next(usb::Status::kOk, 8);
  });
  auto r = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(r.seqnum, 5u);
  EXPECT_EQ(r.actual_length, 8);
  EXPECT_EQ(recv(s, 8)[7], 0x42);
}

TEST_P(UsbipServerTest, StallAndShortNotOkStatusesReachTheClient) {
  auto s = import("1-1");
  on_loop([&] {
    device_->auto_complete = true;
    device_->auto_status = usb::Status::kStall;
  });
  send(s, wire::encode(submit(7, 1, wire::kDirIn, 512)));
  auto r = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(r.status, -32);
}

TEST_P(UsbipServerTest, UnlinkOfPendingUrbSendsOnlyRetUnlink) {
  auto s = import("1-1");
  send(s, wire::encode(submit(10, 1, wire::kDirIn, 512)));
  WAIT_PENDING(1u);
  wire::CmdUnlink u{.seqnum = 11, .devid = wire::make_devid(1, 2), .unlink_seqnum = 10};
  send(s, wire::encode(u));
  auto r = std::get<wire::RetUnlink>(read_pdu(s));
  EXPECT_EQ(r.seqnum, 11u);
  EXPECT_EQ(r.status, -104);
  // The connection still works and no RET_SUBMIT for 10 follows.
  on_loop([&] { device_->auto_complete = true; });
  send(s, wire::encode(submit(12, 1, wire::kDirIn, 8)));
  auto r2 = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(r2.seqnum, 12u);
}

TEST_P(UsbipServerTest, UnlinkAfterCompletionSendsRetUnlinkZero) {
  auto s = import("1-1");
  on_loop([&] { device_->auto_complete = true; });
  send(s, wire::encode(submit(20, 1, wire::kDirIn, 16)));
  auto r = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(r.seqnum, 20u);
  recv(s, 16);
  wire::CmdUnlink u{.seqnum = 21, .devid = wire::make_devid(1, 2), .unlink_seqnum = 20};
  send(s, wire::encode(u));
  auto ru = std::get<wire::RetUnlink>(read_pdu(s));
  EXPECT_EQ(ru.seqnum, 21u);
  EXPECT_EQ(ru.status, 0);
}

TEST_P(UsbipServerTest, UrbCompletingDuringUnlinkKeepsItsData) {
  auto s = import("1-1");
  on_loop([&] { device_->complete_on_cancel = false; });
  send(s, wire::encode(submit(30, 1, wire::kDirIn, 32)));
  WAIT_PENDING(1u);
  wire::CmdUnlink u{.seqnum = 31, .devid = wire::make_devid(1, 2), .unlink_seqnum = 30};
  send(s, wire::encode(u));
  for (int i = 0; i < 200; ++i) {
    size_t n = 0;
    on_loop([&] { n = device_->cancel_requests.size(); });
    if (n) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  on_loop([&] { device_->complete_next(usb::Status::kOk, 32); });
  auto r = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(r.seqnum, 30u);
  EXPECT_EQ(r.actual_length, 32);
  recv(s, 32);
  auto ru = std::get<wire::RetUnlink>(read_pdu(s));
  EXPECT_EQ(ru.seqnum, 31u);
  EXPECT_EQ(ru.status, 0);
}

TEST_P(UsbipServerTest, StandardRequestsArePerformedOnTheDevice) {
  auto s = import("1-1");
  auto c = submit(40, 0, wire::kDirOut, 0);
  c.setup = usb::SetupPacket{0x01, usb::request::kSetInterface, 1, 0, 0}.to_bytes();
  send(s, wire::encode(c));
  auto r = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(r.seqnum, 40u);
  EXPECT_EQ(r.status, 0);
  c = submit(41, 0, wire::kDirOut, 0);
  c.setup = usb::SetupPacket{0x02, usb::request::kClearFeature, 0, 0x81, 0}.to_bytes();
  send(s, wire::encode(c));
  read_pdu(s);
  c = submit(42, 0, wire::kDirOut, 0);
  c.setup = usb::SetupPacket{0x00, usb::request::kSetConfiguration, 3, 0, 0}.to_bytes();
  send(s, wire::encode(c));
  read_pdu(s);
  on_loop([&] {
    EXPECT_EQ(device_->calls, (std::vector<std::string>{"set_interface 0 1", "clear_halt 129",
                                                        "set_configuration 3"}));
  });
  // After SET_INTERFACE 1 the iso endpoints exist: an iso IN URB with 3 packets, data packed.
  on_loop([&] { device_->auto_complete = false; });
  auto iso = submit(43, 2, wire::kDirIn, 3000);
  iso.number_of_packets = 3;
  send(s, wire::encode(iso));
  std::vector<uint8_t> descs(3 * 16);
  wire::IsoDescriptor d[3] = {{0, 1000, 0, 0}, {1000, 1000, 0, 0}, {2000, 1000, 0, 0}};
  wire::encode_iso_descriptors(d, descs);
  send(s, descs);
  WAIT_PENDING(1u);
  on_loop([&] {
    usb::Transfer* t = device_->pending.front();
    ASSERT_EQ(t->iso_packets.size(), 3u);
    for (int i = 0; i < 3; ++i) {
      t->iso_packets[i].actual_length = 10 * (i + 1);
      std::fill_n(t->buffer().data() + t->iso_packets[i].offset, 10 * (i + 1), uint8_t(i + 1));
    }
    device_->complete_next(usb::Status::kOk, 60);
  });
  auto ri = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(ri.actual_length, 60);
  EXPECT_EQ(ri.number_of_packets, 3);
  auto data = recv(s, 60);
  EXPECT_EQ(data[0], 1);
  EXPECT_EQ(data[10], 2);
  EXPECT_EQ(data[30], 3);
  auto back = *wire::decode_iso_descriptors(recv(s, 48), 3000);
  EXPECT_EQ(back[1].offset, 1000u);
  EXPECT_EQ(back[1].actual_length, 20u);
}

TEST_P(UsbipServerTest, MalformedPduClosesOnlyThatConnection) {
  auto good = import("1-1");
  auto bad = connect();
  std::array<uint8_t, 8> junk{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0};
  send(bad, junk);
  EXPECT_TRUE(closed_by_peer(bad));
  on_loop([&] { device_->auto_complete = true; });
  send(good, wire::encode(submit(1, 1, wire::kDirIn, 4)));
  EXPECT_EQ(std::get<wire::RetSubmit>(read_pdu(good)).seqnum, 1u);
}

TEST_P(UsbipServerTest, AbsurdLengthIsRefusedBeforeAllocation) {
  auto s = import("1-1");
  send(s, wire::encode(submit(1, 1, wire::kDirOut, 0x7fffffff)));
  EXPECT_TRUE(closed_by_peer(s));
  uint32_t st = 99;
  for (int i = 0; i < 100 && st != wire::kStOk; ++i) {
    import("1-1", &st);
    if (st != wire::kStOk) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(st, wire::kStOk) << "the device is free again after the bad client was dropped";
}

TEST_P(UsbipServerTest, WrongDevidClosesConnection) {
  auto s = import("1-1");
  auto c = submit(1, 1, wire::kDirIn, 4);
  c.devid = 0x00050005;
  send(s, wire::encode(c));
  EXPECT_TRUE(closed_by_peer(s));
}

TEST_P(UsbipServerTest, InflightByteLimitRefusesWithEnomemAndKeepsStreamInStep) {
  auto s = import("1-1");
  // 4 pending 1 MiB IN URBs fill the 4 MiB budget; the fifth is refused, the stream stays usable.
  for (uint32_t i = 0; i < 4; ++i) send(s, wire::encode(submit(100 + i, 1, wire::kDirIn, 1 << 20)));
  WAIT_PENDING(4u);
  std::vector<uint8_t> payload(1 << 20, 0x5a);
  send(s, wire::encode(submit(104, 1, wire::kDirOut, 1 << 20)));
  send(s, payload);
  auto r = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(r.seqnum, 104u);
  EXPECT_EQ(r.status, -12);
  on_loop([&] {
    while (!device_->pending.empty()) device_->complete_next(usb::Status::kOk, 0);
  });
  for (int i = 0; i < 4; ++i) EXPECT_EQ(std::get<wire::RetSubmit>(read_pdu(s)).status, 0);
}

TEST_P(UsbipServerTest, ZeroLengthUrbsCountAgainstTheUrbLimit) {
  // Zero-length URBs cost no buffer bytes, but each waits at the device: past max_inflight_urbs
  // they are refused with -ENOMEM like any other.
  ConnectionLimits limits;
  limits.max_inflight_urbs = 8;
  restart(limits);
  auto s = import("1-1");
  for (uint32_t i = 0; i < 10; ++i) send(s, wire::encode(submit(200 + i, 1, wire::kDirOut, 0)));
  WAIT_PENDING(8u);
  for (uint32_t want : {208u, 209u}) {
    auto r = std::get<wire::RetSubmit>(read_pdu(s));
    EXPECT_EQ(r.seqnum, want);
    EXPECT_EQ(r.status, -12);
  }
  on_loop([&] { EXPECT_EQ(device_->pending.size(), 8u); });
}

TEST_P(UsbipServerTest, AClientThatNeverReadsIsCutOffAndOthersAreServed) {
  // 64 KiB IN replies to a client that reads nothing: the server stops reading its commands once
  // 16 replies wait, and closes it when a write has not moved for 300 ms. The device is free for
  // the next importer.
  ConnectionLimits limits;
  limits.max_queued_replies = 16;
  limits.write_timeout = std::chrono::milliseconds(300);
  restart(limits);
  auto s = import("1-1");
  asio::socket_base::receive_buffer_size small(4096);
  s.set_option(small);
  on_loop([&] { device_->auto_complete = true; });
  boost::system::error_code ec;
  for (uint32_t i = 0; i < 400 && !ec; ++i) {
    auto cmd = wire::encode(submit(300 + i, 1, wire::kDirIn, 65536));
    asio::write(s, asio::buffer(cmd), ec);  // blocks once the server stops reading: stop there
    if (i == 100) break;
  }
  uint32_t status = wire::kStDevBusy;
  for (int i = 0; i < 100 && status != wire::kStOk; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto other = import("1-1", &status);
  }
  EXPECT_EQ(status, wire::kStOk) << "the stuck client was closed and the device released";
}

TEST_P(UsbipServerTest, VanishedDeviceCompletesInflightWithEshutdownAndLeavesList) {
  auto s = import("1-1");
  send(s, wire::encode(submit(50, 1, wire::kDirIn, 512)));
  send(s, wire::encode(submit(51, 1, wire::kDirIn, 512)));
  WAIT_PENDING(2u);
  on_loop([&] {
    device_->unplug();
    exports_.remove(*device_);
  });
  auto r1 = std::get<wire::RetSubmit>(read_pdu(s));
  auto r2 = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(r1.status, -108);
  EXPECT_EQ(r2.status, -108);
  // URBs the client sent before it heard: each still gets an answer before the server hangs up.
  std::vector<uint8_t> payload(256, 0);
  send(s, wire::encode(submit(52, 1, wire::kDirOut, 256)));
  send(s, payload);
  auto late = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(late.seqnum, 52u);
  EXPECT_EQ(late.status, -108);
  wire::CmdUnlink u{.seqnum = 53, .devid = wire::make_devid(1, 2), .unlink_seqnum = 51};
  send(s, wire::encode(u));
  EXPECT_EQ(std::get<wire::RetUnlink>(read_pdu(s)).seqnum, 53u);
  EXPECT_TRUE(closed_by_peer(s)) << "closed once the client is quiet";
  on_loop([&] { EXPECT_EQ(exports_.size(), 0u); });
}

TEST_P(UsbipServerTest, DeviceVanishingWhilePayloadIsReadAnswersEshutdown) {
  auto s = import("1-1");
  // Half an OUT payload arrives, then the device vanishes, then the rest of the payload.
  std::vector<uint8_t> payload(4096, 0);
  send(s, wire::encode(submit(70, 1, wire::kDirOut, 4096)));
  send(s, std::span(payload).first(1000));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  on_loop([&] {
    device_->unplug();
    exports_.remove(*device_);
  });
  send(s, std::span(payload).subspan(1000));
  auto r = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(r.seqnum, 70u);
  EXPECT_EQ(r.status, -108);
  EXPECT_TRUE(closed_by_peer(s));
}

TEST_P(UsbipServerTest, ClientHangupCancelsInflight) {
  {
    auto s = import("1-1");
    send(s, wire::encode(submit(60, 1, wire::kDirIn, 512)));
    WAIT_PENDING(1u);
  }
  for (int i = 0; i < 200; ++i) {
    size_t n = 1;
    on_loop([&] { n = device_->pending.size(); });
    if (n == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  on_loop([&] { EXPECT_TRUE(device_->pending.empty()); });
}

}  // namespace
}  // namespace stub

namespace usb::usbip {
namespace {

TEST_P(UsbipServerTest, UnlinkArrivingBeforeItsSubmitCancelsIt) {
  // Linux vhci_tx can send CMD_UNLINK(n) before CMD_SUBMIT(n). The SUBMIT must not run and only
  // RET_UNLINK(-ECONNRESET) may answer; a RET_SUBMIT would kill the kernel client's connection.
  auto s = import("1-1");
  on_loop([&] { device_->auto_complete = true; });
  send(s, wire::encode(submit(80, 1, wire::kDirOut, 0)));
  EXPECT_EQ(std::get<wire::RetSubmit>(read_pdu(s)).seqnum, 80u);
  wire::CmdUnlink u{.seqnum = 83, .devid = wire::make_devid(1, 2), .unlink_seqnum = 82};
  send(s, wire::encode(u));
  std::vector<uint8_t> payload(100, 0);
  send(s, wire::encode(submit(81, 1, wire::kDirOut, 100)));
  send(s, payload);
  auto r81 = std::get<wire::RetSubmit>(read_pdu(s));
  EXPECT_EQ(r81.seqnum, 81u);
  send(s, wire::encode(submit(82, 1, wire::kDirOut, 100)));
  send(s, payload);
  auto ru = std::get<wire::RetUnlink>(read_pdu(s));
  EXPECT_EQ(ru.seqnum, 83u);
  EXPECT_EQ(ru.status, -104);
  // 82 never reached the device; the stream continues with 84.
  send(s, wire::encode(submit(84, 1, wire::kDirIn, 4)));
  EXPECT_EQ(std::get<wire::RetSubmit>(read_pdu(s)).seqnum, 84u);
  recv(s, 4);
  on_loop([&] { EXPECT_EQ(device_->cancel_requests.size(), 0u); });
}

TEST_P(UsbipServerTest, UnlinkOfOldSeqnumIsAnsweredAtOnce) {
  auto s = import("1-1");
  on_loop([&] { device_->auto_complete = true; });
  send(s, wire::encode(submit(90, 1, wire::kDirOut, 0)));
  read_pdu(s);
  wire::CmdUnlink u{.seqnum = 92, .devid = wire::make_devid(1, 2), .unlink_seqnum = 89};
  send(s, wire::encode(u));
  auto ru = std::get<wire::RetUnlink>(read_pdu(s));
  EXPECT_EQ(ru.seqnum, 92u);
  EXPECT_EQ(ru.status, 0);
}

INSTANTIATE_TEST_SUITE_P(Transports, UsbipServerTest,
                         ::testing::Values(Transport::kTcp, Transport::kUnix),
                         [](const auto& info) {
                           return info.param == Transport::kTcp ? "Tcp" : "Unix";
                         });

}  // namespace
}  // namespace usb::usbip
