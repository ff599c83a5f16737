// usbredir::GuestChannel against our own HostChannel over a UNIX socket pair, the host serving a
// scripted Gadget-Zero-like device: the announce, control / bulk / interrupt traffic, a stall, a
// cancel answered once, configuration and alternate-setting changes as their own packets, reset,
// the host disconnecting the device or closing the connection. Then a hostile host written byte by
// byte (answers longer than asked, unknown ids and statuses, an interrupt flood), and
// devices::UsbredirRemoteDevice importing through the same pair.
#include "usb/usbredir/guest_channel.h"

#include <gtest/gtest.h>
#include <usbredirparser.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <optional>

#include "devices/remote/usbredir_remote_device.h"
#include "usb/core/fake_device.h"
#include "usb/net/socket_stream.h"
#include "usb/usbredir/host_channel.h"
#include "tests/unit/run_until.h"
#include "tests/unit/usbredir/wire.h"

namespace usb::usbredir {
namespace {

namespace asio = boost::asio;

using usb::testing::run_until;

// A transfer the test submitted to the guest channel, with its completion count.
struct Sent {
  std::unique_ptr<Transfer> t;
  int completions = 0;
  bool done() const { return completions > 0; }
  std::vector<uint8_t> data() const { return {t->data().begin(), t->data().end()}; }
};

std::unique_ptr<Sent> send(GuestChannel& guest, std::unique_ptr<Transfer> t) {
  auto s = std::make_unique<Sent>();
  s->t = std::move(t);
  s->t->set_completion([p = s.get()](Transfer&) { ++p->completions; });
  s->t->begin(nullptr);
  guest.submit(*s->t);
  return s;
}

std::unique_ptr<Transfer> control(SetupPacket setup) {
  return Transfer::control(setup.request_type & 0x80, setup);
}

class GuestChannelTest : public ::testing::Test {
 protected:
  GuestChannelTest() : device(usb::testing::gadget_zero_like_descriptors()) {
    auto pair = usb::net::stream_pair(io);
    EXPECT_TRUE(pair);
    HostChannel::Options host_options;
    host_options.label = "host";
    host = HostChannel::create(std::move(pair->first), std::move(host_options));
    GuestChannel::Options guest_options;
    guest_options.label = "guest";
    guest = GuestChannel::create(std::move(pair->second), std::move(guest_options));
    guest->on_device_connect([this] { ++connects; });
    guest->on_device_disconnect([this] { ++disconnects; });
    guest->on_closed([this](const std::string& why) { closed = why; });
    host->start();
    guest->start();
    host->attach(device);
  }
  ~GuestChannelTest() override {
    guest->close();
    host->close();
    io.run_for(std::chrono::milliseconds(10));
  }
  void connect() {
    ASSERT_TRUE(run_until(io, [&] { return connects == 1; }));
  }
  std::unique_ptr<Sent> send(std::unique_ptr<Transfer> t) {
    return usbredir::send(*guest, std::move(t));
  }
  bool wait(const Sent& s) {
    return run_until(io, [&] { return s.done(); });
  }
  bool wait_pending(size_t n) {
    return run_until(io, [&] { return device.pending.size() == n; });
  }
  Status op(std::function<void(StatusCallback)> start) {
    std::optional<Status> st;
    start([&](Status s) { st = s; });
    run_until(io, [&] { return st.has_value(); });
    return st.value_or(Status::kIoError);
  }

  asio::io_context io;
  usb::testing::FakeDevice device;
  std::shared_ptr<HostChannel> host;
  std::shared_ptr<GuestChannel> guest;
  int connects = 0, disconnects = 0;
  std::string closed;
};

TEST_F(GuestChannelTest, TheAnnouncedDeviceIsRecorded) {
  connect();
  const auto& d = guest->device_info();
  EXPECT_EQ(d.vendor_id, 0x0525);
  EXPECT_EQ(d.product_id, 0xa4a0);
  EXPECT_EQ(d.bcd_device, 0x0100);
  EXPECT_EQ(d.speed, Speed::kHigh);
  ASSERT_EQ(guest->interfaces().size(), 1u);
  EXPECT_EQ(guest->interfaces()[0].interface_class, 0xff);
  const auto& ep = guest->endpoints();
  EXPECT_EQ(ep[16 + 1].type, 2);  // 0x81 bulk
  EXPECT_EQ(ep[1].type, 2);       // 0x01 bulk
  EXPECT_EQ(ep[16 + 3].type, 3);  // 0x83 interrupt
  EXPECT_EQ(ep[16 + 3].interval, 4);
  EXPECT_EQ(ep[16 + 3].max_packet_size, 64);
  EXPECT_EQ(ep[16 + 2].type, 0xff) << "alt 1's iso endpoint is not active";
  EXPECT_EQ(guest->configuration(), 0) << "not reported yet";
  EXPECT_EQ(op([&](StatusCallback cb) { guest->get_configuration(std::move(cb)); }), Status::kOk);
  EXPECT_EQ(guest->configuration(), 3);
  EXPECT_TRUE(guest->device_connected());
}

TEST_F(GuestChannelTest, ControlTransfersCarryTheirDataBothWays) {
  connect();
  // GET_DESCRIPTOR(device), answered by the device at once.
  auto get = send(control({0x80, request::kGetDescriptor, 0x0100, 0, 64}));
  ASSERT_TRUE(wait(*get));
  EXPECT_EQ(get->t->status(), Status::kOk);
  ASSERT_EQ(get->t->actual_length(), 18u);
  EXPECT_EQ(get->data()[1], 1);

  // A vendor IN request answered short, and a vendor OUT request with data.
  auto in = send(control({0xc0, 0x5c, 0x1234, 0x0002, 64}));
  auto out_setup = control({0x40, 0x5b, 0, 0, 3});
  out_setup->buffer()[0] = 1, out_setup->buffer()[1] = 2, out_setup->buffer()[2] = 3;
  auto out = send(std::move(out_setup));
  ASSERT_TRUE(wait_pending(2));
  Transfer& din = *device.pending[0];
  EXPECT_EQ(din.setup, (SetupPacket{0xc0, 0x5c, 0x1234, 0x0002, 64}));
  std::memcpy(din.buffer().data(), "\xde\xad\xbe\xef", 4);
  device.finish(din, Status::kOk, 4);
  Transfer& dout = *device.pending[0];
  EXPECT_EQ(std::vector<uint8_t>(dout.buffer().begin(), dout.buffer().end()),
            (std::vector<uint8_t>{1, 2, 3}));
  device.finish(dout, Status::kOk, 3);
  ASSERT_TRUE(wait(*in));
  ASSERT_TRUE(wait(*out));
  EXPECT_EQ(in->t->status(), Status::kOk) << "a short IN is fine";
  EXPECT_EQ(in->data(), (std::vector<uint8_t>{0xde, 0xad, 0xbe, 0xef}));
  EXPECT_EQ(out->t->status(), Status::kOk);
  EXPECT_EQ(out->t->actual_length(), 3u);

  // A stall comes back as a stall.
  auto stalled = send(control({0xc0, 0x5d, 0, 0, 8}));
  ASSERT_TRUE(wait_pending(1));
  device.finish(*device.pending[0], Status::kStall, 0);
  ASSERT_TRUE(wait(*stalled));
  EXPECT_EQ(stalled->t->status(), Status::kStall);
  EXPECT_EQ(stalled->completions, 1);
}

TEST_F(GuestChannelTest, BulkTransfersCarryDataAndThirtyTwoBitLengths) {
  connect();
  auto out_t = std::make_unique<Transfer>(0x01, TransferType::kBulk, 1000);
  for (size_t i = 0; i < 1000; ++i) out_t->buffer()[i] = static_cast<uint8_t>(i);
  auto out = send(std::move(out_t));
  auto in = send(std::make_unique<Transfer>(0x81, TransferType::kBulk, 512));
  auto big = send(std::make_unique<Transfer>(0x81, TransferType::kBulk, 100000));
  ASSERT_TRUE(wait_pending(3));
  EXPECT_EQ(device.pending[0]->buffer()[999], static_cast<uint8_t>(999));
  device.finish(*device.pending[0], Status::kOk, 1000);
  std::memset(device.pending[0]->buffer().data(), 0x5a, 100);
  device.finish(*device.pending[0], Status::kOk, 100);
  EXPECT_EQ(device.pending[0]->length(), 100000u) << "length_high carried";
  std::memset(device.pending[0]->buffer().data(), 0x77, 70000);
  device.finish(*device.pending[0], Status::kOk, 70000);
  ASSERT_TRUE(wait(*out) && wait(*in) && wait(*big));
  EXPECT_EQ(out->t->status(), Status::kOk);
  EXPECT_EQ(out->t->actual_length(), 1000u);
  EXPECT_EQ(in->t->status(), Status::kOk);
  EXPECT_EQ(in->data(), std::vector<uint8_t>(100, 0x5a));
  EXPECT_EQ(big->t->actual_length(), 70000u);
  EXPECT_EQ(big->t->data()[69999], 0x77);
  // Over 4 MiB is refused without asking the host.
  auto huge = send(std::make_unique<Transfer>(0x81, TransferType::kBulk, 5u << 20));
  EXPECT_TRUE(huge->done());
  EXPECT_EQ(huge->t->status(), Status::kInvalid);
}

TEST_F(GuestChannelTest, ACancelIsAnsweredOnceWithCancelled) {
  connect();
  device.complete_on_cancel = false;
  auto in = send(std::make_unique<Transfer>(0x81, TransferType::kBulk, 512));
  ASSERT_TRUE(wait_pending(1));
  guest->cancel(*in->t);
  ASSERT_TRUE(wait(*in));
  EXPECT_EQ(in->t->status(), Status::kCancelled);
  EXPECT_EQ(device.cancel_requests.size(), 1u);
  // The device finishes it anyway: the host drops that, the guest hears nothing more.
  device.finish(*device.pending[0], Status::kOk, 64);
  run_until(
      io, [] { return false; }, 50);
  EXPECT_EQ(in->completions, 1);
  EXPECT_EQ(guest->stats().unknown_ids, 0u);
  guest->cancel(*in->t);  // done already: nothing to send
  EXPECT_EQ(guest->stats().cancelled, 1u);
}

TEST_F(GuestChannelTest, ConfigurationAndInterfaceRequestsGoAsTheirOwnPackets) {
  connect();
  auto set_config = send(control({0x00, request::kSetConfiguration, 3, 0, 0}));
  ASSERT_TRUE(wait(*set_config));
  EXPECT_EQ(set_config->t->status(), Status::kOk);
  EXPECT_EQ(guest->configuration(), 3);
  auto set_alt = send(control({0x01, request::kSetInterface, 1, 0, 0}));
  ASSERT_TRUE(wait(*set_alt));
  EXPECT_EQ(set_alt->t->status(), Status::kOk);
  EXPECT_EQ(guest->alt_setting(0), 1);
  EXPECT_EQ(guest->endpoints()[16 + 2].type, 1) << "fresh ep_info: alt 1's iso IN";
  auto get_alt = send(control({0x81, request::kGetInterface, 0, 0, 1}));
  auto get_config = send(control({0x80, request::kGetConfiguration, 0, 0, 1}));
  ASSERT_TRUE(wait(*get_alt) && wait(*get_config));
  EXPECT_EQ(get_alt->data(), std::vector<uint8_t>{1});
  EXPECT_EQ(get_config->data(), std::vector<uint8_t>{3});
  // The same as operations; an interface the device lacks is refused.
  EXPECT_EQ(op([&](StatusCallback cb) { guest->set_interface(0, 0, std::move(cb)); }), Status::kOk);
  EXPECT_EQ(guest->alt_setting(0), 0);
  EXPECT_EQ(op([&](StatusCallback cb) { guest->set_interface(5, 0, std::move(cb)); }),
            Status::kInvalid);
  EXPECT_EQ(op([&](StatusCallback cb) { guest->set_configuration(3, std::move(cb)); }),
            Status::kOk);
  EXPECT_EQ(device.calls, (std::vector<std::string>{"set_configuration 3", "set_interface 0 1",
                                                    "set_interface 0 0", "set_configuration 3"}));
  EXPECT_TRUE(device.pending.empty()) << "none of them went as a control transfer";
}

TEST_F(GuestChannelTest, InterruptInIsReceivedAndCompletesTransfersInOrder) {
  connect();
  auto first = send(std::make_unique<Transfer>(0x83, TransferType::kInterrupt, 64));
  ASSERT_TRUE(wait_pending(5)) << "start_interrupt_receiving: the host polls with 5 transfers";
  for (uint8_t v : {0x11, 0x22, 0x33}) {
    std::memset(device.pending[0]->buffer().data(), v, 8);
    device.finish(*device.pending[0], Status::kOk, 8);
  }
  ASSERT_TRUE(wait(*first));
  EXPECT_EQ(first->data(), std::vector<uint8_t>(8, 0x11));
  // The rest waited in the queue for the next transfers.
  auto second = send(std::make_unique<Transfer>(0x83, TransferType::kInterrupt, 64));
  auto third = send(std::make_unique<Transfer>(0x83, TransferType::kInterrupt, 64));
  ASSERT_TRUE(run_until(io, [&] { return second->done() && third->done(); }));
  EXPECT_EQ(second->data(), std::vector<uint8_t>(8, 0x22));
  EXPECT_EQ(third->data(), std::vector<uint8_t>(8, 0x33));
  // A waiting IN transfer is cancelled locally; interrupt OUT is an ordinary packet.
  auto waiting = send(std::make_unique<Transfer>(0x83, TransferType::kInterrupt, 64));
  guest->cancel(*waiting->t);
  EXPECT_EQ(waiting->t->status(), Status::kCancelled);
  auto out_t = std::make_unique<Transfer>(0x04, TransferType::kInterrupt, 4);
  std::memset(out_t->buffer().data(), 0x99, 4);
  auto out = send(std::move(out_t));
  ASSERT_TRUE(run_until(io, [&] {
    return std::any_of(device.pending.begin(), device.pending.end(),
                       [](Transfer* t) { return t->endpoint() == 0x04; });
  }));
  auto it = std::find_if(device.pending.begin(), device.pending.end(),
                         [](Transfer* t) { return t->endpoint() == 0x04; });
  EXPECT_EQ((*it)->buffer()[3], 0x99);
  device.finish(**it, Status::kOk, 4);
  ASSERT_TRUE(wait(*out));
  EXPECT_EQ(out->t->actual_length(), 4u);
}

TEST_F(GuestChannelTest, IsochronousTransfersAreNotSupported) {
  connect();
  auto iso = send(std::make_unique<Transfer>(0x82, TransferType::kIsochronous, 1024));
  EXPECT_TRUE(iso->done());
  EXPECT_EQ(iso->t->status(), Status::kNotSupported);
}

TEST_F(GuestChannelTest, ResetIsSentAndTheConfigurationAskedAfterIt) {
  connect();
  EXPECT_EQ(op([&](StatusCallback cb) { guest->reset(std::move(cb)); }), Status::kOk);
  EXPECT_EQ(device.calls, std::vector<std::string>{"reset"});
  EXPECT_EQ(guest->configuration(), 3);
}

TEST_F(GuestChannelTest, TheHostDisconnectingTheDeviceFailsPendingTransfers) {
  connect();
  auto in = send(std::make_unique<Transfer>(0x81, TransferType::kBulk, 512));
  ASSERT_TRUE(wait_pending(1));
  host->detach();
  ASSERT_TRUE(wait(*in));
  EXPECT_EQ(in->t->status(), Status::kNoDevice);
  EXPECT_EQ(disconnects, 1);
  EXPECT_FALSE(guest->device_connected());
  EXPECT_TRUE(guest->open());
  auto late = send(std::make_unique<Transfer>(0x81, TransferType::kBulk, 512));
  EXPECT_EQ(late->t->status(), Status::kNoDevice);
}

TEST_F(GuestChannelTest, ThePeerClosingFailsPendingTransfersWithNoDevice) {
  connect();
  auto in = send(std::make_unique<Transfer>(0x81, TransferType::kBulk, 512));
  auto intr = send(std::make_unique<Transfer>(0x83, TransferType::kInterrupt, 64));
  ASSERT_TRUE(wait_pending(6));
  host->close();
  ASSERT_TRUE(wait(*in) && wait(*intr));
  EXPECT_EQ(in->t->status(), Status::kNoDevice);
  EXPECT_EQ(intr->t->status(), Status::kNoDevice);
  EXPECT_EQ(closed, "peer closed");
  EXPECT_FALSE(guest->open());
  auto late = send(std::make_unique<Transfer>(0x81, TransferType::kBulk, 512));
  EXPECT_EQ(late->t->status(), Status::kNoDevice);
}

// ---------------------------------------------------------------- a hostile host

using usb::testing::usbredir_put;
std::vector<uint8_t> host_hello() { return usb::testing::usbredir_hello(/*host=*/true); }

class HostileHostTest : public ::testing::Test {
 protected:
  HostileHostTest() {
    auto pair = usb::net::stream_pair(io);
    EXPECT_TRUE(pair);
    GuestChannel::Options options;
    options.label = "guest";
    options.max_outstanding = 3;
    options.interrupt_queue = 4;
    guest = GuestChannel::create(std::move(pair->first), std::move(options));
    guest->on_device_connect([this] { connected = true; });
    peer = std::move(pair->second);
    guest->start();
    drain();
    std::vector<uint8_t> b = host_hello();
    usb_redir_interface_info_header ii{};
    ii.interface_count = 1;
    ii.interface_class[0] = 0xff;
    usbredir_put(b, usb_redir_interface_info, 0, ii);
    usb_redir_ep_info_header ep{};
    std::memset(ep.type, usb_redir_type_invalid, sizeof ep.type);
    ep.type[0] = ep.type[16] = usb_redir_type_control;
    ep.type[16 + 1] = usb_redir_type_bulk;
    ep.type[16 + 3] = usb_redir_type_interrupt;
    ep.interval[16 + 3] = 4;
    usbredir_put(b, usb_redir_ep_info, 0, ep, {}, offsetof(usb_redir_ep_info_header, max_streams));
    usb_redir_device_connect_header dc{usb_redir_speed_full, 0, 0, 0, 0x1234, 0x5678, 0x0200};
    usbredir_put(b, usb_redir_device_connect, 0, dc);
    write(std::move(b));
    EXPECT_TRUE(run_until(io, [&] { return connected; }));
  }
  ~HostileHostTest() override {
    guest->close();
    peer->close();
    io.run_for(std::chrono::milliseconds(10));
  }
  void write(std::vector<uint8_t> bytes) {
    auto b = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
    peer->async_write(asio::buffer(*b), [b](boost::system::error_code, size_t) {});
  }
  void drain() {
    peer->async_read_some(asio::buffer(sink), [this](boost::system::error_code ec, size_t) {
      if (!ec) drain();
    });
  }

  asio::io_context io;
  std::shared_ptr<GuestChannel> guest;
  std::unique_ptr<usb::net::Stream> peer;
  std::vector<uint8_t> sink = std::vector<uint8_t>(65536);
  bool connected = false;
};

TEST_F(HostileHostTest, AnswersAreBoundedAndUnknownIdsDropped) {
  EXPECT_EQ(guest->device_info().speed, Speed::kFull);
  EXPECT_EQ(guest->device_info().vendor_id, 0x1234);
  auto in = send(*guest, std::make_unique<Transfer>(0x81, TransferType::kBulk, 16));
  auto odd = send(*guest, std::make_unique<Transfer>(0x81, TransferType::kBulk, 16));
  auto ctl = send(*guest, control({0xc0, 1, 0, 0, 4}));
  auto busy = send(*guest, std::make_unique<Transfer>(0x81, TransferType::kBulk, 16));
  EXPECT_EQ(busy->t->status(), Status::kBusy) << "max_outstanding is 3";
  std::vector<uint8_t> b, data(32, 0xee);
  // 32 bytes for a 16-byte transfer; an answer to nothing; a status nobody defined; a control
  // answer with the id of a bulk packet (kept waiting) before its own.
  usbredir_put(b, usb_redir_bulk_packet, in->t->trace_id,
      usb_redir_bulk_packet_header{0x81, usb_redir_success, 32, 0, 0}, data);
  usbredir_put(b, usb_redir_bulk_packet, 999999, usb_redir_bulk_packet_header{0x81, 0, 4, 0, 0},
      std::span(data).first(4));
  usbredir_put(b, usb_redir_control_packet, odd->t->trace_id,
      usb_redir_control_packet_header{0x80, 1, 0xc0, 0, 0, 0, 0});
  usbredir_put(b, usb_redir_bulk_packet, odd->t->trace_id,
      usb_redir_bulk_packet_header{0x81, 0x77, 0, 0, 0});
  usbredir_put(b, usb_redir_control_packet, ctl->t->trace_id,
      usb_redir_control_packet_header{0x80, 1, 0xc0, usb_redir_success, 0, 0, 2},
      std::span(data).first(2));
  write(std::move(b));
  ASSERT_TRUE(run_until(io, [&] { return in->done() && odd->done() && ctl->done(); }));
  EXPECT_EQ(in->t->status(), Status::kBabble);
  EXPECT_EQ(in->t->actual_length(), 0u);
  EXPECT_EQ(odd->t->status(), Status::kIoError) << "an unknown status is an error";
  EXPECT_EQ(ctl->t->status(), Status::kOk);
  EXPECT_EQ(ctl->data(), (std::vector<uint8_t>{0xee, 0xee}));
  EXPECT_EQ(guest->stats().unknown_ids, 1u);
  EXPECT_EQ(odd->completions, 1);
  // An alt setting status for another interface than asked fails the request.
  std::optional<Status> st;
  guest->set_interface(0, 1, [&](Status s) { st = s; });
  b.clear();
  usbredir_put(b, usb_redir_alt_setting_status, 4,  // ids 1-3 went to the transfers above
      usb_redir_alt_setting_status_header{usb_redir_success, 5, 1});
  write(std::move(b));
  ASSERT_TRUE(run_until(io, [&] { return st.has_value(); }));
  EXPECT_EQ(*st, Status::kIoError);
  EXPECT_EQ(guest->alt_setting(0), 0);
}

TEST_F(HostileHostTest, AnInterruptFloodKeepsTheNewestPackets) {
  auto first = send(*guest, std::make_unique<Transfer>(0x83, TransferType::kInterrupt, 8));
  std::vector<uint8_t> b;
  for (uint8_t i = 0; i < 10; ++i) {
    std::vector<uint8_t> data(4, i);
    usbredir_put(b, usb_redir_interrupt_packet, i,
        usb_redir_interrupt_packet_header{0x83, usb_redir_success, 4}, data);
  }
  // A packet longer than the transfer is babble; an error status ends the stream.
  std::vector<uint8_t> long_data(16, 0xab);
  usbredir_put(b, usb_redir_interrupt_packet, 10,
      usb_redir_interrupt_packet_header{0x83, usb_redir_success, 16}, long_data);
  usbredir_put(b, usb_redir_interrupt_receiving_status, 0,
      usb_redir_interrupt_receiving_status_header{usb_redir_stall, 0x83});
  write(std::move(b));
  ASSERT_TRUE(run_until(io, [&] { return guest->stats().packets_in >= 12; }));
  ASSERT_TRUE(first->done());
  EXPECT_EQ(first->data(), std::vector<uint8_t>(4, 0)) << "it was waiting for the first";
  // Nine more and the long one arrived with nobody waiting; the queue keeps the newest four.
  EXPECT_EQ(guest->stats().interrupt_dropped, 6u);
  std::vector<std::unique_ptr<Sent>> next;
  for (int i = 0; i < 4; ++i)
    next.push_back(send(*guest, std::make_unique<Transfer>(0x83, TransferType::kInterrupt, 8)));
  EXPECT_EQ(next[0]->data(), std::vector<uint8_t>(4, 7));
  EXPECT_EQ(next[1]->data(), std::vector<uint8_t>(4, 8));
  EXPECT_EQ(next[2]->data(), std::vector<uint8_t>(4, 9));
  EXPECT_EQ(next[3]->t->status(), Status::kBabble);
  // ...and the stall, after them.
  auto stalled = send(*guest, std::make_unique<Transfer>(0x83, TransferType::kInterrupt, 8));
  EXPECT_EQ(stalled->t->status(), Status::kStall);
}

// ---------------------------------------------------------------- the remote device

TEST_F(GuestChannelTest, UsbredirRemoteDeviceImportsThroughTheChannel) {
  // A second pair: this fixture's guest channel stays idle.
  auto pair = usb::net::stream_pair(io);
  ASSERT_TRUE(pair);
  HostChannel::Options host_options;
  host_options.label = "host2";
  auto host2 = HostChannel::create(std::move(pair->first), std::move(host_options));
  host2->start();
  host2->attach(device);
  std::optional<usb::Result<std::unique_ptr<devices::UsbredirRemoteDevice>>> result;
  std::vector<std::string> lost;
  devices::UsbredirRemoteDevice::Options options;
  options.on_disconnect = [&](const std::string& why) { lost.push_back(why); };
  devices::UsbredirRemoteDevice::import(std::move(pair->second), "127.0.0.1:4000", options,
                                        [&](auto r) { result = std::move(r); });
  ASSERT_TRUE(run_until(io, [&] { return result.has_value(); }));
  ASSERT_TRUE(*result) << (*result).error().message;
  auto& dev = **result;
  EXPECT_EQ(dev->descriptors().device.vendor_id, 0x0525);
  ASSERT_EQ(dev->descriptors().configurations.size(), 1u);
  EXPECT_EQ(dev->descriptors().configurations[0].interfaces.size(), 2u);
  EXPECT_EQ(dev->active_configuration(), 3);
  EXPECT_EQ(dev->speed(), Speed::kHigh);
  EXPECT_EQ(dev->location().busid, "usbredir");
  EXPECT_EQ(dev->location().path, "127.0.0.1:4000");
  EXPECT_TRUE(dev->connected());
  std::optional<Status> st;
  dev->set_interface(0, 1, [&](Status s) { st = s; });
  ASSERT_TRUE(run_until(io, [&] { return st.has_value(); }));
  EXPECT_EQ(*st, Status::kOk);
  EXPECT_EQ(dev->alternate_setting(0), 1);
  st.reset();
  dev->clear_halt(0x81, [&](Status s) { st = s; });
  ASSERT_TRUE(run_until(io, [&] { return st.has_value(); }));
  EXPECT_EQ(*st, Status::kOk);
  EXPECT_NE(std::find(device.calls.begin(), device.calls.end(), "clear_halt 129"),
            device.calls.end());
  host2->close();
  ASSERT_TRUE(run_until(io, [&] { return !lost.empty(); }));
  EXPECT_EQ(lost, std::vector<std::string>{"peer closed"});
  EXPECT_FALSE(dev->connected());
}

TEST_F(GuestChannelTest, AnImportWithoutADeviceTimesOut) {
  auto pair = usb::net::stream_pair(io);
  ASSERT_TRUE(pair);
  HostChannel::Options host_options;
  host_options.label = "empty host";
  auto empty = HostChannel::create(std::move(pair->first), std::move(host_options));
  empty->start();  // no device attached
  std::optional<usb::Result<std::unique_ptr<devices::UsbredirRemoteDevice>>> result;
  devices::UsbredirRemoteDevice::Options options;
  options.announce_timeout = std::chrono::milliseconds(50);
  devices::UsbredirRemoteDevice::import(std::move(pair->second), "empty", options,
                                        [&](auto r) { result = std::move(r); });
  ASSERT_TRUE(run_until(io, [&] { return result.has_value(); }));
  ASSERT_FALSE(*result);
  EXPECT_NE((*result).error().message.find("announced no device"), std::string::npos);
  empty->close();
}

}  // namespace
}  // namespace usb::usbredir
