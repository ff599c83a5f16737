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

namespace usb::usbredir {
namespace {

namespace asio = boost::asio;

template <typename Pred>
bool run_until(asio::io_context& io, Pred pred, int ms = 3000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!pred() && std::chrono::steady_clock::now() < deadline) {
    io.run_for(std::chrono::milliseconds(2));
    if (io.stopped()) io.restart();
  }
  return pred();
}

// QEMU's side: a libusbredirparser in guest mode that records what the host sends.
class FakeGuest {
 public:
  struct Reply {
    int count = 0;  // a second answer to one id is a protocol error
    uint8_t status = 0xff;
    uint32_t length = 0;
    std::vector<uint8_t> data;
  };

  explicit FakeGuest(std::unique_ptr<usb::net::Stream> stream) : stream_(std::move(stream)) {
    p_ = usbredirparser_create();
    p_->priv = this;
    p_->log_func = [](void*, int, const char*) {};
    p_->read_func = [](void* priv, uint8_t* data, int count) -> int {
      auto& g = *static_cast<FakeGuest*>(priv);
      const size_t n = std::min(g.rx_.size(), static_cast<size_t>(count));
      if (!n) return 0;
      std::memcpy(data, g.rx_.data(), n);
      g.rx_ = g.rx_.subspan(n);
      return static_cast<int>(n);
    };
    p_->write_func = [](void* priv, uint8_t* data, int count) -> int {
      auto& g = *static_cast<FakeGuest*>(priv);
      g.out_.insert(g.out_.end(), data, data + count);
      return count;
    };
    p_->hello_func = [](void* priv, usb_redir_hello_header*) { self(priv).hello = true; };
    p_->device_connect_func = [](void* priv, usb_redir_device_connect_header* h) {
      self(priv).order.push_back("device_connect");
      self(priv).connect = *h;
    };
    p_->device_disconnect_func = [](void* priv) { self(priv).order.push_back("device_disconnect"); };
    p_->interface_info_func = [](void* priv, usb_redir_interface_info_header* h) {
      self(priv).order.push_back("interface_info");
      self(priv).interfaces = *h;
    };
    p_->ep_info_func = [](void* priv, usb_redir_ep_info_header* h) {
      self(priv).order.push_back("ep_info");
      self(priv).endpoints = *h;
    };
    p_->configuration_status_func = [](void* priv, uint64_t id,
                                       usb_redir_configuration_status_header* h) {
      self(priv).order.push_back("configuration_status");
      self(priv).statuses[id] = {1, h->status, h->configuration, {}};
    };
    p_->alt_setting_status_func = [](void* priv, uint64_t id, usb_redir_alt_setting_status_header* h) {
      self(priv).order.push_back("alt_setting_status");
      self(priv).statuses[id] = {1, h->status, h->alt, {}};
    };
    p_->interrupt_receiving_status_func = [](void* priv, uint64_t id,
                                             usb_redir_interrupt_receiving_status_header* h) {
      self(priv).statuses[id] = {1, h->status, h->endpoint, {}};
    };
    p_->iso_stream_status_func = [](void* priv, uint64_t id, usb_redir_iso_stream_status_header* h) {
      self(priv).statuses[id] = {1, h->status, h->endpoint, {}};
    };
    p_->control_packet_func = [](void* priv, uint64_t id, usb_redir_control_packet_header* h,
                                 uint8_t* data, int len) {
      self(priv).record(id, h->status, h->length, data, len);
    };
    p_->bulk_packet_func = [](void* priv, uint64_t id, usb_redir_bulk_packet_header* h,
                              uint8_t* data, int len) {
      self(priv).record(id, h->status, h->length | (uint32_t{h->length_high} << 16), data, len);
    };
    p_->interrupt_packet_func = [](void* priv, uint64_t id, usb_redir_interrupt_packet_header* h,
                                   uint8_t* data, int len) {
      FakeGuest& g = self(priv);
      if (h->endpoint & 0x80) {
        g.interrupt_in.emplace_back(data, data + len);
        usbredirparser_free_packet_data(g.p_, data);
      } else {
        g.record(id, h->status, h->length, data, len);
      }
    };
    p_->iso_packet_func = [](void* priv, uint64_t, usb_redir_iso_packet_header*, uint8_t* data,
                             int) { usbredirparser_free_packet_data(self(priv).p_, data); };
    uint32_t caps[USB_REDIR_CAPS_SIZE] = {};
    for (int cap : {usb_redir_cap_connect_device_version, usb_redir_cap_filter,
                    usb_redir_cap_ep_info_max_packet_size, usb_redir_cap_64bits_ids,
                    usb_redir_cap_32bits_bulk_length})
      usbredirparser_caps_set_cap(caps, cap);
    static char version[] = "fake-qemu";
    usbredirparser_init(p_, version, caps, USB_REDIR_CAPS_SIZE, 0);
    flush();
    read();
  }
  ~FakeGuest() { usbredirparser_destroy(p_); }

  void flush() {
    usbredirparser_do_write(p_);
    if (out_.empty()) return;
    auto bytes = std::make_shared<std::vector<uint8_t>>(std::move(out_));
    out_.clear();
    stream_->async_write(asio::buffer(*bytes), [bytes](boost::system::error_code, size_t) {});
  }
  usbredirparser* parser() { return p_; }
  void close() { stream_->close(); }

  bool hello = false;
  std::vector<std::string> order;
  std::optional<usb_redir_device_connect_header> connect;
  std::optional<usb_redir_interface_info_header> interfaces;
  std::optional<usb_redir_ep_info_header> endpoints;
  std::map<uint64_t, Reply> replies;   // data packets by id
  std::map<uint64_t, Reply> statuses;  // status packets by id (length: their second field)
  std::vector<std::vector<uint8_t>> interrupt_in;

 private:
  static FakeGuest& self(void* priv) { return *static_cast<FakeGuest*>(priv); }
  void record(uint64_t id, uint8_t status, uint32_t length, uint8_t* data, int len) {
    Reply& r = replies[id];
    ++r.count;
    r.status = status;
    r.length = length;
    r.data.assign(data, data + len);
    usbredirparser_free_packet_data(p_, data);
  }
  void read() {
    stream_->async_read_some(asio::buffer(buf_), [this](boost::system::error_code ec, size_t n) {
      if (ec) return;
      rx_ = std::span<const uint8_t>(buf_.data(), n);
      usbredirparser_do_read(p_);
      flush();
      read();
    });
  }

  std::unique_ptr<usb::net::Stream> stream_;
  usbredirparser* p_ = nullptr;
  std::vector<uint8_t> buf_ = std::vector<uint8_t>(65536);
  std::span<const uint8_t> rx_;
  std::vector<uint8_t> out_;
};

class HostChannelTest : public ::testing::Test {
 protected:
  HostChannelTest() : device(usb::testing::gadget_zero_like_descriptors()) {
    auto pair = usb::net::stream_pair(io);
    EXPECT_TRUE(pair);
    channel = HostChannel::create(std::move(pair->first), {.label = "test"});
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
  // The device finishes it anyway, with data: the guest hears nothing more.
  device.finish(*device.pending[0], Status::kOk, 64);
  run_until(io, [] { return false; }, 50);
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
  EXPECT_EQ(guest->order, (std::vector<std::string>{"configuration_status", "interface_info",
                                                    "ep_info", "alt_setting_status",
                                                    "alt_setting_status"}));
  const usb_redir_ep_info_header ep = *guest->endpoints;
  EXPECT_EQ(ep.type[16 + 2], usb_redir_type_iso);
  EXPECT_EQ(ep.max_packet_size[16 + 2], 1024);
  EXPECT_EQ(device.calls, (std::vector<std::string>{"set_interface 0 1"}));
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

}  // namespace
}  // namespace usb::usbredir
