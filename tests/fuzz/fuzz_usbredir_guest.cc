// libFuzzer: usbredir::GuestChannel, the usb-guest side vusbd imports from usbredirect with, fed
// what a hostile usbredir host could send after a valid hello and device announce (the hello from
// libusbredirparser's own host mode with usbredirhost's capabilities; interface_info, ep_info and
// device_connect written out, so the input reaches the answer handlers). Eight transfers and
// requests are pending under the ids 1-8 when the input arrives (see below); one bulk IN has been
// cancelled. Nothing the host sends may crash the channel, and once it closes every transfer
// must have completed exactly once.
#include <spdlog/spdlog.h>
#include <usbredirparser.h>

#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "tests/unit/usbredir/wire.h"
#include "usb/net/socket_stream.h"
#include "usb/usbredir/guest_channel.h"

namespace {

using usb::testing::usbredir_put;

// A host's hello as usbredirhost's parser writes it, then a full-speed device with a bulk pair
// (0x81, 0x02), an interrupt pair (0x83, 0x04) and an iso IN (0x85) on interface 0.
std::vector<uint8_t> host_prefix() {
  static std::vector<uint8_t> bytes;
  if (!bytes.empty()) return bytes;
  bytes = usb::testing::usbredir_hello(/*host=*/true);
  usb_redir_interface_info_header ii{};
  ii.interface_count = 1;
  ii.interface_class[0] = 0xff;
  usbredir_put(bytes, usb_redir_interface_info, 0, ii);
  usb_redir_ep_info_header ep{};
  std::memset(ep.type, usb_redir_type_invalid, sizeof ep.type);
  ep.type[0] = ep.type[16] = usb_redir_type_control;
  ep.type[16 + 1] = ep.type[2] = usb_redir_type_bulk;
  ep.type[16 + 3] = ep.type[4] = usb_redir_type_interrupt;
  ep.type[16 + 5] = usb_redir_type_iso;
  for (int i : {16 + 1, 2, 16 + 3, 4, 16 + 5}) ep.max_packet_size[i] = 64;
  ep.interval[16 + 3] = ep.interval[4] = ep.interval[16 + 5] = 1;
  // No bulk streams on either side: ep_info ends before max_streams.
  usbredir_put(bytes, usb_redir_ep_info, 0, ep, {}, offsetof(usb_redir_ep_info_header, max_streams));
  usb_redir_device_connect_header dc{usb_redir_speed_full, 0, 0, 0, 0x1234, 0x5678, 0x0100};
  usbredir_put(bytes, usb_redir_device_connect, 0, dc);
  return bytes;
}

void settle(boost::asio::io_context& io) {
  for (int idle = 0, i = 0; idle < 3 && i < 10000; ++i) idle = io.poll() ? 0 : idle + 1;
  io.restart();
}

struct Sent {
  std::unique_ptr<usb::Transfer> t;
  int completions = 0;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  boost::asio::io_context io;
  auto pair = usb::net::stream_pair(io);
  if (!pair) return 0;
  usb::usbredir::GuestChannel::Options options;
  options.label = "fuzz";
  options.max_outstanding = 16;
  options.interrupt_queue = 8;
  auto guest = usb::usbredir::GuestChannel::create(std::move(pair->first), std::move(options));
  guest->start();
  auto& peer = *pair->second;
  std::vector<uint8_t> sink(65536);
  std::function<void()> drain = [&] {
    peer.async_read_some(boost::asio::buffer(sink), [&](boost::system::error_code ec, size_t) {
      if (!ec) drain();
    });
  };
  drain();
  auto prefix = std::make_shared<std::vector<uint8_t>>(host_prefix());
  peer.async_write(boost::asio::buffer(*prefix), [prefix](boost::system::error_code, size_t) {});
  settle(io);

  // The ids follow the order: 1 GET_DESCRIPTOR, 2 vendor OUT (4 bytes), 3 bulk IN 512 (then
  // cancelled), 4 bulk OUT 64, 5 GET_CONFIGURATION, 6 SET_INTERFACE 0/0, 7 start of interrupt
  // receiving on 0x83 (two IN transfers wait), 8 interrupt OUT 0x04 (8 bytes); an iso IN is
  // refused at once.
  std::vector<std::unique_ptr<Sent>> sent;
  auto submit = [&](std::unique_ptr<usb::Transfer> t) {
    auto s = std::make_unique<Sent>();
    s->t = std::move(t);
    if (s->t->length()) std::memset(s->t->buffer().data(), 0x5a, s->t->length());
    s->t->set_completion([p = s.get()](usb::Transfer&) { ++p->completions; });
    s->t->begin(nullptr);
    guest->submit(*s->t);
    sent.push_back(std::move(s));
  };
  using usb::Transfer, usb::TransferType;
  submit(Transfer::control(0x80, {0x80, 6, 0x0100, 0, 64}));
  submit(Transfer::control(0x00, {0x40, 1, 0, 0, 4}));
  submit(std::make_unique<Transfer>(0x81, TransferType::kBulk, 512));
  submit(std::make_unique<Transfer>(0x02, TransferType::kBulk, 64));
  submit(Transfer::control(0x80, {0x80, 8, 0, 0, 1}));
  submit(Transfer::control(0x00, {0x01, 11, 0, 0, 0}));
  submit(std::make_unique<Transfer>(0x83, TransferType::kInterrupt, 64));
  submit(std::make_unique<Transfer>(0x83, TransferType::kInterrupt, 64));
  submit(std::make_unique<Transfer>(0x04, TransferType::kInterrupt, 8));
  submit(std::make_unique<Transfer>(0x85, TransferType::kIsochronous, 64));
  guest->cancel(*sent[2]->t);

  auto bytes = std::make_shared<std::vector<uint8_t>>(data, data + size);
  peer.async_write(boost::asio::buffer(*bytes), [bytes](boost::system::error_code, size_t) {});
  settle(io);
  // More interrupt IN transfers take what was queued; a few requests go out after the input.
  for (int i = 0; i < 3; ++i) submit(std::make_unique<Transfer>(0x83, TransferType::kInterrupt, 8));
  guest->set_configuration(1, [](usb::Status) {});
  guest->reset([](usb::Status) {});
  settle(io);

  if (size % 2)
    peer.close();  // half the runs: the host goes away
  else
    guest->close();
  settle(io);
  guest->close();
  settle(io);
  for (const auto& s : sent)
    if (s->completions != 1) std::abort();  // every transfer completes exactly once
  return 0;
}
