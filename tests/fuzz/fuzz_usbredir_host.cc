// libFuzzer: usbredir::HostChannel, the stateful usb-host side of QEMU's usb-redir, fed what a
// hostile guest could send after a valid hello (libusbredirparser's own guest mode makes the
// hello, with QEMU's capabilities, so the input reaches the packet handlers). The channel serves a
// scripted device that completes what the guest started, a bounded number of times. Nothing the guest sends may crash the
// channel, leak, or leave it unable to close.
#include <usbredirparser.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "tests/unit/usbredir/wire.h"
#include "usb/core/fake_device.h"
#include "usb/net/socket_stream.h"
#include "usb/usbredir/host_channel.h"

namespace {

// A guest's hello, as QEMU's parser writes it.
std::vector<uint8_t> guest_hello() {
  static const std::vector<uint8_t> bytes = usb::testing::usbredir_hello(/*host=*/false);
  return bytes;
}

void settle(boost::asio::io_context& io) {
  for (int idle = 0, i = 0; idle < 3 && i < 10000; ++i) idle = io.poll() ? 0 : idle + 1;
  io.restart();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  boost::asio::io_context io;
  auto pair = usb::net::stream_pair(io);
  if (!pair) return 0;
  usb::testing::FakeDevice device(usb::testing::gadget_zero_like_descriptors());
  usb::usbredir::HostChannel::Options options;
  options.label = "fuzz";
  // Iso pacing runs on the next loop turn: the input, not the clock, decides what happens.
  options.clock = [] { return std::chrono::steady_clock::time_point{}; };
  options.timer = [&io](auto, std::move_only_function<void()> fn) {
    boost::asio::post(io, [fn = std::make_shared<std::move_only_function<void()>>(std::move(fn))] {
      (*fn)();
    });
  };
  auto channel = usb::usbredir::HostChannel::create(std::move(pair->first), std::move(options));
  channel->start();
  channel->attach(device);
  auto bytes = std::make_shared<std::vector<uint8_t>>(guest_hello());
  bytes->insert(bytes->end(), data, data + size);
  auto& peer = *pair->second;
  peer.async_write(boost::asio::buffer(*bytes), [bytes](boost::system::error_code, size_t) {});
  // Drain what the channel answers so its writes never block.
  std::vector<uint8_t> sink(65536);
  std::function<void()> drain = [&] {
    peer.async_read_some(boost::asio::buffer(sink), [&](boost::system::error_code ec, size_t) {
      if (!ec) drain();
    });
  };
  drain();
  settle(io);
  // The device answers (the status varies with the input), a bounded number of times: interrupt
  // IN streams resubmit forever.
  for (int i = 0; i < 32 && !device.pending.empty(); ++i) {
    const auto status = size && data[i % size] < 32 ? usb::Status::kStall : usb::Status::kOk;
    device.complete_next(status, size ? data[(i * 7) % size] : 0);
    settle(io);
  }
  if (size % 2) channel->detach();  // half the runs unplug the device with packets in flight
  peer.close();
  settle(io);
  channel->close();
  settle(io);
  return 0;
}
