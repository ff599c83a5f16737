// A hostile VM against vusbd: bus ids it was not given, a configuration change while another VM
// uses the device, a halt, forged devids, reused seqnums, absurd lengths. Each is refused (or
// kept to its own view) and the other VM's transfers complete untouched. The stub and vusbd run
// on one loop thread; the good VM uses vusb's client on the test thread; the hostile VM speaks raw
// USB/IP bytes over a blocking socket.
#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <future>
#include <thread>

#include "devices/emulated/gadget_zero.h"
#include "devices/remote/usbip_remote_device.h"
#include "usb/usbip/export_table.h"
#include "usb/usbip/server.h"
#include "vmm-frontend/vusbd.h"

namespace vusbd {
namespace {

namespace asio = boost::asio;
namespace wire = usb::wire::usbip;
using asio::ip::tcp;

class HostileVmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    thread_ = std::thread([this] { server_io_.run(); });
    on_loop([&] {
      gz_ = std::make_unique<devices::GadgetZero>(devices::GadgetZeroOptions{},
                                                  usb::DeviceLocation{.busid = "1-1", .path = {}});
      gz_->set_configuration(3, [](usb::Status) {});
      ASSERT_TRUE(exports_.add(*gz_));
      stub_ = std::make_unique<usb::usbip::Server>(server_io_, exports_, usb::usbip::ConnectionLimits{});
      ASSERT_TRUE(stub_->listen({"127.0.0.1", 0}));
      VusbdConfig config;
      config.vms = {{"good", {"127.0.0.1", 0}}, {"evil", {"127.0.0.1", 0}}};
      DeviceConfig d;
      d.name = "gz";
      ASSERT_TRUE(
          parse_source("usbip://127.0.0.1:" + std::to_string(stub_->local_port()) + "/1-1", d));
      d.vms = {"good", "evil"};
      config.devices = {d};
      daemon_ = std::make_unique<Vusbd>(server_io_, config);
      ASSERT_TRUE(daemon_->start([this] { ready_.set_value(); }));
    });
    ASSERT_EQ(ready_.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
    on_loop([&] {
      good_port_ = daemon_->vm_port("good");
      evil_port_ = daemon_->vm_port("evil");
    });
  }
  void TearDown() override {
    if (good_) good_->close();
    on_loop([&] {  // objects of the loop die on the loop (LoopChecker)
      daemon_.reset();
      stub_->stop();
      stub_.reset();
      exports_.remove(*gz_);
      gz_.reset();
    });
    work_.reset();
    server_io_.stop();
    thread_.join();
  }
  template <typename Fn>
  void on_loop(Fn fn) {
    std::promise<void> done;
    asio::post(server_io_, [&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }
  template <typename Pred>
  bool run_client_until(Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!pred() && std::chrono::steady_clock::now() < deadline) {
      client_io_.run_for(std::chrono::milliseconds(5));
      if (client_io_.stopped()) client_io_.restart();
    }
    return pred();
  }

  void import_good() {
    bool done = false;
    devices::UsbipRemoteDevice::import(client_io_, {"127.0.0.1", good_port_}, "1-1", {},
                                       [&](auto r) {
                                         if (r) good_ = std::move(*r);
                                         done = true;
                                       });
    ASSERT_TRUE(run_client_until([&] { return done; }));
    ASSERT_TRUE(good_);
  }
  // A bulk IN and a bulk OUT from the good VM: both must succeed with full length.
  void good_traffic() {
    usb::Transfer in(0x81, usb::TransferType::kBulk, 4096),
        out(0x01, usb::TransferType::kBulk, 4096);
    std::fill_n(out.buffer().data(), 4096, 0);
    int done = 0;
    in.set_completion([&](usb::Transfer&) { ++done; });
    out.set_completion([&](usb::Transfer&) { ++done; });
    good_->submit(in);
    good_->submit(out);
    ASSERT_TRUE(run_client_until([&] { return done == 2; }));
    EXPECT_EQ(in.status(), usb::Status::kOk);
    EXPECT_EQ(in.actual_length(), 4096u);
    EXPECT_EQ(out.status(), usb::Status::kOk);
    EXPECT_TRUE(good_->connected());
  }

  // --- the hostile VM: raw bytes ---
  tcp::socket evil_import(const std::string& busid, uint32_t* status) {
    tcp::socket s(raw_io_);
    s.connect({asio::ip::make_address("127.0.0.1"), evil_port_});
    auto h = wire::encode_op_header({wire::kVersion, wire::kOpReqImport, 0});
    asio::write(s, asio::buffer(h));
    asio::write(s, asio::buffer(*wire::encode_import_request(busid)));
    std::array<uint8_t, 8> rep{};
    asio::read(s, asio::buffer(rep));
    *status = wire::decode_op_header(rep)->status;
    if (*status == wire::kStOk) {
      std::vector<uint8_t> rec(wire::kDeviceRecordSize);
      asio::read(s, asio::buffer(rec));
    }
    return s;
  }
  static wire::CmdSubmit cmd(uint32_t seqnum, uint32_t ep, uint32_t dir, int32_t len) {
    wire::CmdSubmit c;
    c.seqnum = seqnum;
    c.devid = wire::make_devid(1, 2);  // what vusbd gave this VM for its 1-1
    c.direction = dir;
    c.ep = ep;
    c.transfer_buffer_length = len;
    return c;
  }
  static wire::RetSubmit ret(tcp::socket& s) {
    std::array<uint8_t, 48> h{};
    asio::read(s, asio::buffer(h));
    return std::get<wire::RetSubmit>(*wire::decode_urb_header(h));
  }
  static bool closed(tcp::socket& s) {
    uint8_t b;
    boost::system::error_code ec;
    asio::read(s, asio::buffer(&b, 1), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

  asio::io_context server_io_, client_io_, raw_io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{server_io_.get_executor()};
  std::thread thread_;
  usb::usbip::ExportTable exports_;
  std::unique_ptr<devices::GadgetZero> gz_;
  std::unique_ptr<usb::usbip::Server> stub_;
  std::unique_ptr<Vusbd> daemon_;
  std::promise<void> ready_;
  uint16_t good_port_ = 0, evil_port_ = 0;
  std::unique_ptr<devices::UsbipRemoteDevice> good_;
};

TEST_F(HostileVmTest, RefusedAndTheOtherVmIsUntouched) {
  import_good();
  good_traffic();

  uint32_t st = 0;
  // A bus id it was not given (the good VM's device is 1-1 in *its* space; evil has only 1-1).
  evil_import("1-2", &st);
  EXPECT_EQ(st, wire::kStNoDev);
  evil_import("2-1", &st);
  EXPECT_EQ(st, wire::kStNoDev);

  auto s = evil_import("1-1", &st);
  ASSERT_EQ(st, wire::kStOk);
  // A configuration change while the good VM uses the device: refused with a stall.
  auto c = cmd(1, 0, wire::kDirOut, 0);
  c.setup = usb::SetupPacket{0x00, usb::request::kSetConfiguration, 2, 0, 0}.to_bytes();
  asio::write(s, asio::buffer(wire::encode(c)));
  EXPECT_EQ(ret(s).status, -32);
  // A halt on the shared bulk IN endpoint: evil's view only.
  c = cmd(2, 0, wire::kDirOut, 0);
  c.setup = usb::SetupPacket{0x02, usb::request::kSetFeature, 0, 0x81, 0}.to_bytes();
  asio::write(s, asio::buffer(wire::encode(c)));
  EXPECT_EQ(ret(s).status, 0);
  asio::write(s, asio::buffer(wire::encode(cmd(3, 1, wire::kDirIn, 512))));
  EXPECT_EQ(ret(s).status, -32) << "evil sees its own halt";
  good_traffic();  // the good VM does not
  // A forged devid: the connection is closed.
  c = cmd(4, 1, wire::kDirIn, 512);
  c.devid = 0x00030007;
  asio::write(s, asio::buffer(wire::encode(c)));
  EXPECT_TRUE(closed(s));
  good_traffic();

  // An absurd length: refused before allocation, connection closed.
  for (int i = 0; i < 50 && st != wire::kStOk; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto s2 = evil_import("1-1", &st);
  ASSERT_EQ(st, wire::kStOk);
  asio::write(s2, asio::buffer(wire::encode(cmd(5, 1, wire::kDirOut, 0x7fffffff))));
  EXPECT_TRUE(closed(s2));
  // Garbage instead of a header.
  auto s3 = evil_import("1-1", &st);
  ASSERT_EQ(st, wire::kStOk);
  std::array<uint8_t, 48> junk;
  junk.fill(0xa5);
  asio::write(s3, asio::buffer(junk));
  EXPECT_TRUE(closed(s3));
  good_traffic();

  std::promise<nlohmann::json> stats;
  on_loop([&] { stats.set_value(daemon_->stats()); });
  auto j = stats.get_future().get();
  EXPECT_GE(j["vms"]["evil"]["gz"]["refused"].get<uint64_t>(), 1u);
  EXPECT_EQ(j["vms"]["good"]["gz"]["errors"].get<uint64_t>(), 0u);
  EXPECT_GE(j["vms"]["good"]["gz"]["urbs"].get<uint64_t>(), 8u);
}

}  // namespace
}  // namespace vusbd
