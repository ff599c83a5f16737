// usbredir::HostChannel against a guest built on libusbredirparser itself (the library QEMU's
// usb-redir uses, in guest mode, with QEMU's capabilities), over a UNIX socket pair, serving a
// scripted device: the announce, control / bulk / interrupt traffic, cancellation answered once,
// configuration and alternate-setting changes with fresh endpoint info, detach and re-attach.
#include "usb/usbredir/host_channel.h"

#include <gtest/gtest.h>
#include <usbredirparser.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>

#include "usb/core/fake_device.h"
#include "usb/net/socket_stream.h"
#include "tests/unit/usbredir/fake_guest.h"
#include "tests/unit/run_until.h"

namespace usb::usbredir {
namespace {

using usb::testing::FakeGuest;

namespace asio = boost::asio;

using usb::testing::run_until;

class HostChannelTest : public ::testing::Test {
 protected:
  HostChannelTest() : device(usb::testing::gadget_zero_like_descriptors()) {
    auto pair = usb::net::stream_pair(io);
    EXPECT_TRUE(pair);
    HostChannel::Options options;
    options.label = "test";
    options.clock = [this] { return now; };
    options.timer = [this](std::chrono::nanoseconds d, std::move_only_function<void()> fn) {
      timers.push_back({d, std::move(fn)});
    };
    channel = HostChannel::create(std::move(pair->first), std::move(options));
    guest = std::make_unique<FakeGuest>(std::move(pair->second));
    channel->on_closed([this](const std::string& why) { closed = why; });
    channel->start();
  }
  ~HostChannelTest() override {
    channel->close();
    io.run_for(std::chrono::milliseconds(10));
  }
  void attach_and_wait() {
    channel->attach(device);
    ASSERT_TRUE(run_until(io, [&] { return guest->connect.has_value(); }));
  }
  const FakeGuest::Reply* reply(uint64_t id) {
    run_until(io, [&] { return guest->replies.contains(id); });
    auto it = guest->replies.find(id);
    return it == guest->replies.end() ? nullptr : &it->second;
  }

  // Runs the iso pacing timers that are due by `now`.
  void fire_timers() {
    auto due = std::move(timers);
    timers.clear();
    for (auto& [d, fn] : due) fn();
  }
  void set_alt(uint8_t alt) {
    usb_redir_set_alt_setting_header h{0, alt};
    usbredirparser_send_set_alt_setting(guest->parser(), 900 + alt, &h);
    guest->flush();
    ASSERT_TRUE(run_until(io, [&] { return guest->statuses.contains(900 + alt); }));
  }
  const FakeGuest::Reply* status(uint64_t id) {
    run_until(io, [&] { return guest->statuses.contains(id); });
    auto it = guest->statuses.find(id);
    return it == guest->statuses.end() ? nullptr : &it->second;
  }

  std::chrono::steady_clock::time_point now{std::chrono::seconds(100)};
  std::vector<std::pair<std::chrono::nanoseconds, std::move_only_function<void()>>> timers;
  asio::io_context io;
  usb::testing::FakeDevice device;
  std::shared_ptr<HostChannel> channel;
  std::unique_ptr<FakeGuest> guest;
  std::string closed;
};

TEST_F(HostChannelTest, TheDeviceIsAnnouncedAfterHelloWithItsInterfacesAndEndpoints) {
  ASSERT_TRUE(run_until(io, [&] { return guest->hello; }));
  attach_and_wait();
  EXPECT_EQ(guest->order,
            (std::vector<std::string>{"interface_info", "ep_info", "device_connect"}));
  const usb_redir_device_connect_header c = *guest->connect;
  EXPECT_EQ(c.speed, usb_redir_speed_high);
  EXPECT_EQ(c.vendor_id, 0x0525);
  EXPECT_EQ(c.product_id, 0xa4a0);
  EXPECT_EQ(c.device_version_bcd, 0x0100);
  const usb_redir_interface_info_header ii = *guest->interfaces;
  EXPECT_EQ(ii.interface_count, 1u);
  EXPECT_EQ(ii.interface_class[0], 0xff);
  const usb_redir_ep_info_header ep = *guest->endpoints;
  EXPECT_EQ(ep.type[0], usb_redir_type_control);
  EXPECT_EQ(ep.type[16], usb_redir_type_control);
  EXPECT_EQ(ep.type[16 + 1], usb_redir_type_bulk);  // 0x81
  EXPECT_EQ(ep.type[1], usb_redir_type_bulk);       // 0x01
  EXPECT_EQ(ep.type[16 + 3], usb_redir_type_interrupt);
  EXPECT_EQ(ep.interval[16 + 3], 4);
  EXPECT_EQ(ep.max_packet_size[16 + 3], 64);
  EXPECT_EQ(ep.type[16 + 2], usb_redir_type_invalid) << "alt 1's iso endpoint is not active";
  EXPECT_TRUE(channel->announced());
}

TEST_F(HostChannelTest, ControlAndBulkPacketsAreAnsweredWithTheirIds) {
  attach_and_wait();
  // GET_DESCRIPTOR(device), 64 bytes asked: the device's 18.
  usb_redir_control_packet_header get{0x80, 6, 0x80, 0, 0x0100, 0, 64};
  usbredirparser_send_control_packet(guest->parser(), 7, &get, nullptr, 0);
  guest->flush();
  const auto* r = reply(7);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->status, usb_redir_success);
  EXPECT_EQ(r->length, 18u);
  ASSERT_EQ(r->data.size(), 18u);
  EXPECT_EQ(r->data[1], 1);  // bDescriptorType DEVICE

  // Bulk OUT 512 bytes and bulk IN 512 asked, 100 given.
  std::vector<uint8_t> payload(512, 0xa5);
  usb_redir_bulk_packet_header out{0x01, 0, 512, 0, 0};
  usbredirparser_send_bulk_packet(guest->parser(), 1, &out, payload.data(), 512);
  usb_redir_bulk_packet_header in{0x81, 0, 512, 0, 0};
  usbredirparser_send_bulk_packet(guest->parser(), 2, &in, nullptr, 0);
  guest->flush();
  ASSERT_TRUE(run_until(io, [&] { return device.pending.size() == 2; }));
  EXPECT_EQ(device.pending[0]->buffer()[511], 0xa5);
  device.finish(*device.pending[0], Status::kOk, 512);
  device.finish(*device.pending[0], Status::kOk, 100);
  r = reply(1);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->status, usb_redir_success);
  EXPECT_EQ(r->length, 512u);
  EXPECT_TRUE(r->data.empty());
  r = reply(2);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->length, 100u);
  EXPECT_EQ(r->data.size(), 100u);
  // A stall comes back as a stall.
  usbredirparser_send_bulk_packet(guest->parser(), 3, &in, nullptr, 0);
  guest->flush();
  ASSERT_TRUE(run_until(io, [&] { return device.pending.size() == 1; }));
  device.finish(*device.pending[0], Status::kStall, 0);
  r = reply(3);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->status, usb_redir_stall);
  EXPECT_EQ(channel->stats().packets_in, 4u);
}

TEST_F(HostChannelTest, ACancelledPacketIsAnsweredOnceAndItsLateCompletionDropped) {
  attach_and_wait();
  device.complete_on_cancel = false;
  usb_redir_bulk_packet_header in{0x81, 0, 512, 0, 0};
  usbredirparser_send_bulk_packet(guest->parser(), 9, &in, nullptr, 0);
  guest->flush();
  ASSERT_TRUE(run_until(io, [&] { return device.pending.size() == 1; }));
  usbredirparser_send_cancel_data_packet(guest->parser(), 9);
  usbredirparser_send_cancel_data_packet(guest->parser(), 12345);  // unknown: silence
  guest->flush();
  const auto* r = reply(9);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->status, usb_redir_cancelled);
  EXPECT_EQ(r->length, 0u);
  ASSERT_EQ(device.cancel_requests.size(), 1u);
  // QEMU's xHCI restarts a stopped TD under the same id (its TRB address) before the device
  // has let go of the cancelled one: the id is free again and the new packet is served.
  guest->replies.erase(9);
  usbredirparser_send_bulk_packet(guest->parser(), 9, &in, nullptr, 0);
  guest->flush();
  ASSERT_TRUE(run_until(io, [&] { return device.pending.size() == 2; }));
  // The device finishes the cancelled one anyway, with data: the guest hears nothing of it.
  device.finish(*device.pending[0], Status::kOk, 64);
  run_until(io, [] { return false; }, 50);
  EXPECT_FALSE(guest->replies.contains(9));
  device.finish(*device.pending[0], Status::kOk, 32);
  r = reply(9);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->status, usb_redir_success);
  EXPECT_EQ(r->length, 32u);
  EXPECT_EQ(guest->replies[9].count, 1);
  EXPECT_FALSE(guest->replies.contains(12345));
  EXPECT_EQ(channel->stats().cancelled, 1u);
}

TEST_F(HostChannelTest, AnAlternateSettingSendsFreshEndpointInfoBeforeItsStatus) {
  attach_and_wait();
  guest->order.clear();
  usb_redir_set_configuration_header same{3};
  usbredirparser_send_set_configuration(guest->parser(), 20, &same);
  usb_redir_set_alt_setting_header alt{0, 1};
  usbredirparser_send_set_alt_setting(guest->parser(), 21, &alt);
  usb_redir_set_alt_setting_header bad{5, 0};
  usbredirparser_send_set_alt_setting(guest->parser(), 22, &bad);
  guest->flush();
  ASSERT_TRUE(run_until(io, [&] { return guest->statuses.size() == 3; }));
  EXPECT_EQ(guest->statuses[20].status, usb_redir_success);
  EXPECT_EQ(guest->statuses[20].length, 3u);  // the configuration
  EXPECT_EQ(guest->statuses[21].status, usb_redir_success);
  EXPECT_EQ(guest->statuses[21].length, 1u);  // the alternate setting
  EXPECT_EQ(guest->statuses[22].status, usb_redir_inval);
  // Even the configuration in force goes to the device (a vusbd view learns from it that this
  // VM chose it), and every change sends fresh interface and endpoint info before its status.
  EXPECT_EQ(guest->order,
            (std::vector<std::string>{"interface_info", "ep_info", "configuration_status",
                                      "interface_info", "ep_info", "alt_setting_status",
                                      "alt_setting_status"}));
  const usb_redir_ep_info_header ep = *guest->endpoints;
  EXPECT_EQ(ep.type[16 + 2], usb_redir_type_iso);
  EXPECT_EQ(ep.max_packet_size[16 + 2], 1024);
  EXPECT_EQ(device.calls, (std::vector<std::string>{"set_configuration 3", "set_interface 0 1"}));
}

TEST_F(HostChannelTest, InterruptInIsPolledAndStreamedUntilStopped) {
  attach_and_wait();
  usb_redir_start_interrupt_receiving_header start{0x83};
  usbredirparser_send_start_interrupt_receiving(guest->parser(), 30, &start);
  guest->flush();
  ASSERT_TRUE(run_until(io, [&] { return device.pending.size() == 5; }));
  EXPECT_EQ(guest->statuses[30].status, usb_redir_success);
  std::memset(device.pending[0]->buffer().data(), 0x42, 8);
  device.finish(*device.pending[0], Status::kOk, 8);
  ASSERT_TRUE(run_until(io, [&] { return guest->interrupt_in.size() == 1; }));
  EXPECT_EQ(guest->interrupt_in[0], std::vector<uint8_t>(8, 0x42));
  EXPECT_TRUE(run_until(io, [&] { return device.pending.size() == 5; }))
      << "the transfer went back to the device";
  usb_redir_stop_interrupt_receiving_header stop{0x83};
  usbredirparser_send_stop_interrupt_receiving(guest->parser(), 31, &stop);
  guest->flush();
  ASSERT_TRUE(run_until(io, [&] { return guest->statuses.contains(31); }));
  EXPECT_EQ(guest->statuses[31].status, usb_redir_success);
  EXPECT_TRUE(device.pending.empty()) << "cancelled";
}

TEST_F(HostChannelTest, DetachDisconnectsAndAReattachIsAnnouncedAgain) {
  attach_and_wait();
  channel->detach();
  ASSERT_TRUE(run_until(io, [&] { return guest->order.back() == "device_disconnect"; }));
  EXPECT_FALSE(channel->announced());
  guest->connect.reset();
  attach_and_wait();  // after the guest's ack
  EXPECT_TRUE(channel->announced());
  // Iso streams are refused (not implemented yet) with a stall the guest can report.
  usb_redir_start_iso_stream_header iso{0x82, 8, 4};
  usbredirparser_send_start_iso_stream(guest->parser(), 40, &iso);
  guest->flush();
  ASSERT_TRUE(run_until(io, [&] { return guest->statuses.contains(40); }));
  EXPECT_EQ(guest->statuses[40].status, usb_redir_stall);
}

TEST_F(HostChannelTest, AClosedPeerEndsTheChannelAndCancelsItsTransfers) {
  attach_and_wait();
  usb_redir_bulk_packet_header in{0x81, 0, 512, 0, 0};
  usbredirparser_send_bulk_packet(guest->parser(), 50, &in, nullptr, 0);
  guest->flush();
  ASSERT_TRUE(run_until(io, [&] { return device.pending.size() == 1; }));
  guest->close();
  ASSERT_TRUE(run_until(io, [&] { return !closed.empty(); }));
  EXPECT_EQ(closed, "peer closed");
  EXPECT_FALSE(channel->open());
  EXPECT_TRUE(device.pending.empty());
}


TEST_F(HostChannelTest, AnIsoInStreamSendsEveryPacketAndKeepsTheEndpointsPace) {
  attach_and_wait();
  set_alt(1);
  // High speed, bInterval 4: one packet per millisecond; 4 packets per URB = a 4 ms URB period.
  usb_redir_start_iso_stream_header start{0x82, 4, 2};
  usbredirparser_send_start_iso_stream(guest->parser(), 20, &start);
  guest->flush();
  const auto* st = status(20);
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->status, usb_redir_success);
  ASSERT_TRUE(run_until(io, [&] { return device.pending.size() == 2; }));
  Transfer& t = *device.pending.front();
  ASSERT_EQ(t.iso_packets.size(), 4u);
  EXPECT_EQ(t.iso_packets[1].offset, 1024u);
  for (size_t i = 0; i < 4; ++i) {
    t.iso_packets[i].actual_length = i == 2 ? 0 : 100;
    t.buffer()[t.iso_packets[i].offset] = static_cast<uint8_t>(0x10 + i);
  }
  device.finish(t, Status::kOk, 3 * 100);
  ASSERT_TRUE(run_until(io, [&] { return guest->iso_in.size() == 4; }));
  EXPECT_EQ(guest->iso_in[0].data.size(), 100u);
  EXPECT_EQ(guest->iso_in[1].data[0], 0x11);
  EXPECT_TRUE(guest->iso_in[2].data.empty()) << "an empty interval is an empty packet";
  EXPECT_EQ(guest->iso_in[3].endpoint, 0x82);
  // The third URB of the stream is due one URB period after the start: it waits for it.
  run_until(io, [&] { return !timers.empty(); }, 200);
  ASSERT_EQ(timers.size(), 1u);
  EXPECT_EQ(timers[0].first, std::chrono::milliseconds(4));
  EXPECT_EQ(device.pending.size(), 1u);
  now += std::chrono::milliseconds(4);
  fire_timers();
  EXPECT_EQ(device.pending.size(), 2u);
  EXPECT_EQ(channel->stats().iso_packets_out, 4u);

  // stop: the URBs are cancelled, the answer carries the request's id.
  usb_redir_stop_iso_stream_header stop{0x82};
  usbredirparser_send_stop_iso_stream(guest->parser(), 21, &stop);
  guest->flush();
  st = status(21);
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->status, usb_redir_success);
  EXPECT_TRUE(device.pending.empty());
}

TEST_F(HostChannelTest, IsoOutPacketsAreBufferedIntoWholeUrbsOnceHalfTheBufferIsFull) {
  attach_and_wait();
  set_alt(1);
  usb_redir_start_iso_stream_header start{0x02, 2, 4};  // 8 packets of buffer: start at 4
  usbredirparser_send_start_iso_stream(guest->parser(), 30, &start);
  guest->flush();
  ASSERT_NE(status(30), nullptr);
  EXPECT_EQ(guest->statuses[30].status, usb_redir_success);
  auto send = [&](uint8_t tag, size_t n) {
    std::vector<uint8_t> data(n, tag);
    usb_redir_iso_packet_header h{0x02, 0, static_cast<uint16_t>(n)};
    usbredirparser_send_iso_packet(guest->parser(), 0, &h, data.data(), static_cast<int>(n));
    guest->flush();
  };
  send(1, 100);
  send(2, 200);
  send(3, 300);
  run_until(io, [&] { return channel->stats().iso_packets_in == 3; });
  EXPECT_TRUE(device.pending.empty()) << "nothing goes out before half the buffer is in";
  send(4, 400);
  ASSERT_TRUE(run_until(io, [&] { return device.pending.size() == 2; }));
  Transfer& a = *device.pending[0];
  ASSERT_EQ(a.iso_packets.size(), 2u);
  EXPECT_EQ(a.length(), 300u);
  EXPECT_EQ(a.iso_packets[1].offset, 100u);
  EXPECT_EQ(a.iso_packets[1].length, 200u);
  EXPECT_EQ(a.buffer()[100], 2);
  EXPECT_EQ(device.pending[1]->buffer()[0], 3);
  // A packet longer than the endpoint's is dropped and counted.
  send(9, 1025);
  run_until(io, [&] { return channel->stats().iso_dropped == 1; });
  EXPECT_EQ(channel->stats().iso_dropped, 1u);
  // A failing URB: the guest hears it once, unsolicited (id 0).
  device.finish(*device.pending[0], Status::kStall, 0);
  ASSERT_NE(status(0), nullptr);
  EXPECT_EQ(guest->statuses[0].status, usb_redir_stall);
}

TEST_F(HostChannelTest, AnAltSettingRefusedForBandwidthReachesTheGuestAsAStall) {
  // vusbd's bandwidth admission answers kNoBandwidth; usbredir has no such status and QEMU
  // makes a transaction error of everything but stall / babble / cancelled: a stall is what the
  // guest's driver understands as "the device refused this setting".
  attach_and_wait();
  device.next_op_status = Status::kNoBandwidth;
  usb_redir_set_alt_setting_header h{0, 1};
  usbredirparser_send_set_alt_setting(guest->parser(), 50, &h);
  guest->flush();
  const auto* st = status(50);
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->status, usb_redir_stall);
  EXPECT_EQ(st->length, 0u) << "the setting in force stays alt 0";
}

TEST_F(HostChannelTest, AGuestCannotQueueMoreThanTheChannelsBoundAtTheDevice) {
  // A hostile guest asks for 4 MiB bulk INs without end: 64 MiB may wait at the device, the
  // next packet is answered ioerror before anything is allocated, and room comes back as
  // packets complete.
  attach_and_wait();
  usb_redir_bulk_packet_header in{0x81, 0, 0, 0, 64};  // 64 << 16 = 4 MiB
  for (uint64_t id = 100; id < 117; ++id)
    usbredirparser_send_bulk_packet(guest->parser(), id, &in, nullptr, 0);
  guest->flush();
  const auto* r = reply(116);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->status, usb_redir_ioerror);
  EXPECT_EQ(device.pending.size(), 16u);
  EXPECT_EQ(channel->stats().refused, 1u);
  device.finish(*device.pending[0], Status::kOk, 0);
  ASSERT_NE(reply(100), nullptr);
  usbredirparser_send_bulk_packet(guest->parser(), 117, &in, nullptr, 0);
  guest->flush();
  ASSERT_TRUE(run_until(io, [&] { return device.pending.size() == 16; }));
  EXPECT_FALSE(guest->replies.contains(117)) << "admitted: at the device";
}

TEST_F(HostChannelTest, IsoStreamsOutsideTheProtocolsBoundsAreRefused) {
  attach_and_wait();
  usb_redir_start_iso_stream_header inactive{0x82, 4, 2};  // alt 0: no iso endpoint
  usbredirparser_send_start_iso_stream(guest->parser(), 40, &inactive);
  guest->flush();
  ASSERT_NE(status(40), nullptr);
  EXPECT_EQ(guest->statuses[40].status, usb_redir_stall);
  set_alt(1);
  usb_redir_start_iso_stream_header too_many{0x82, 33, 2};
  usbredirparser_send_start_iso_stream(guest->parser(), 41, &too_many);
  usb_redir_start_iso_stream_header no_urbs{0x82, 4, 17};
  usbredirparser_send_start_iso_stream(guest->parser(), 42, &no_urbs);
  usb_redir_start_iso_stream_header good{0x82, 4, 2};
  usbredirparser_send_start_iso_stream(guest->parser(), 43, &good);
  usbredirparser_send_start_iso_stream(guest->parser(), 44, &good);
  guest->flush();
  ASSERT_NE(status(44), nullptr);
  EXPECT_EQ(guest->statuses[41].status, usb_redir_stall);
  EXPECT_EQ(guest->statuses[42].status, usb_redir_stall);
  EXPECT_EQ(guest->statuses[43].status, usb_redir_success);
  EXPECT_EQ(guest->statuses[44].status, usb_redir_inval) << "already running";
  EXPECT_EQ(device.pending.size(), 2u);
  // Changing the alt setting stops the stream (its URBs are cancelled).
  set_alt(0);
  EXPECT_TRUE(device.pending.empty());
}

}  // namespace
}  // namespace usb::usbredir
