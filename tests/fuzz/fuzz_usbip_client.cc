// libFuzzer: vusbd's USB/IP client side fed whatever a hostile or broken server sends —
//   mode 0: UsbipRemoteDevice's import: the OP_REP_IMPORT and the descriptor fetch after it
//   mode 1: ClientChannel's URB phase: RET_SUBMIT / RET_UNLINK for control, bulk and isochronous
//           IN transfers in flight (iso packet descriptors unpacked), one of them cancelled
//   mode 2: OP_REQ_DEVLIST over a UNIX socket (counts, records, interface records)
// The first input byte picks the mode; with its bit 3 set a valid import reply comes first, so
// the rest of the input reaches the URB phase. Nothing may crash, leak, complete a transfer twice
// or leave one uncompleted once the connection is gone.
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "devices/remote/usbip_remote_device.h"
#include "usb/core/transfer.h"
#include "usb/net/listener.h"
#include "usb/net/socket_stream.h"
#include "usb/usbip/client_channel.h"
#include "usb/wire/usbip_codec.h"

namespace {

namespace wire = usb::wire::usbip;

void settle(boost::asio::io_context& io) {
  for (int idle = 0, i = 0; idle < 3 && i < 20000; ++i) idle = io.poll() ? 0 : idle + 1;
  io.restart();
}

void check(bool ok) {
  if (!ok) __builtin_trap();
}

std::vector<uint8_t> import_reply() {
  wire::DeviceRecord r;
  r.path = "/fuzz";
  r.busid = "1-1";
  r.busnum = 1;
  r.devnum = 2;
  r.speed = 3;
  r.id_vendor = 0x0525;
  r.id_product = 0xa4a0;
  r.num_configurations = 1;
  r.configuration_value = 1;
  return wire::encode_import_reply(wire::kStOk, &r);
}

// Writes `bytes` to `peer` and drains what the client sends.
struct Server {
  Server(usb::net::Stream& peer, std::vector<uint8_t> bytes)
      : peer(peer), out(std::make_shared<std::vector<uint8_t>>(std::move(bytes))) {
    peer.async_write(boost::asio::buffer(*out), [o = out](boost::system::error_code, size_t) {});
    drain();
  }
  void drain() {
    peer.async_read_some(boost::asio::buffer(sink), [this](boost::system::error_code ec, size_t) {
      if (!ec) drain();
    });
  }
  usb::net::Stream& peer;
  std::shared_ptr<std::vector<uint8_t>> out;
  std::vector<uint8_t> sink = std::vector<uint8_t>(65536);
};

void remote_device(const uint8_t* data, size_t size, bool valid_reply) {
  boost::asio::io_context io;
  auto pair = usb::net::stream_pair(io);
  if (!pair) return;
  auto bytes = valid_reply ? import_reply() : std::vector<uint8_t>{};
  bytes.insert(bytes.end(), data, data + size);
  Server server(*pair->second, std::move(bytes));
  std::unique_ptr<devices::UsbipRemoteDevice> dev;
  int calls = 0;
  devices::UsbipRemoteDevice::import(std::move(pair->first), "1-1", {}, [&](auto r) {
    ++calls;
    if (r) dev = std::move(*r);
  });
  settle(io);
  pair->second->close();
  settle(io);
  if (dev) dev->close();
  settle(io);
  check(calls <= 1);
}

void channel(const uint8_t* data, size_t size, bool valid_reply) {
  boost::asio::io_context io;
  auto pair = usb::net::stream_pair(io);
  if (!pair) return;
  auto bytes = valid_reply ? import_reply() : std::vector<uint8_t>{};
  bytes.insert(bytes.end(), data, data + size);
  Server server(*pair->second, std::move(bytes));
  std::shared_ptr<usb::usbip::ClientChannel> ch;
  usb::usbip::ClientChannel::Options options;
  options.limits.max_transfer_length = 1 << 16;
  usb::usbip::ClientChannel::import(std::move(pair->first), "1-1", options, [&](auto r) {
    if (r) ch = *r;
  });
  // Transfers in flight while the input's RETs arrive (seqnums 1.. in this order).
  std::vector<std::unique_ptr<usb::Transfer>> urbs;
  std::vector<int> completions;
  auto start = [&](std::unique_ptr<usb::Transfer> t) {
    const size_t i = urbs.size();
    completions.push_back(0);
    t->set_completion([&completions, i](usb::Transfer&) { ++completions[i]; });
    t->begin(nullptr);
    ch->submit(*t);
    urbs.push_back(std::move(t));
  };
  for (int round = 0; round < 2; ++round) {
    settle(io);
    if (!ch || !ch->connected()) break;
    if (round == 0) {
      start(usb::Transfer::control(0x80, usb::SetupPacket{0x80, 6, 0x0100, 0, 18}));
      start(std::make_unique<usb::Transfer>(0x81, usb::TransferType::kBulk, 512));
      auto iso = std::make_unique<usb::Transfer>(0x82, usb::TransferType::kIsochronous, 4096);
      for (uint32_t i = 0; i < 4; ++i)
        iso->iso_packets.push_back({i * 1024, 1024, 0, usb::Status::kOk});
      start(std::move(iso));
      start(std::make_unique<usb::Transfer>(0x01, usb::TransferType::kBulk, 64));
      urbs[1]->cancel();
    }
  }
  settle(io);
  pair->second->close();
  settle(io);
  if (ch) ch->close("fuzz done");
  settle(io);
  for (int c : completions) check(c == 1);  // every transfer completed exactly once
}

void devlist(const uint8_t* data, size_t size) {
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("vusb-fuzz-devlist-" + std::to_string(::getpid()) + ".sock")).string();
  boost::asio::io_context io;
  usb::net::Listener listener(io, {});
  if (!listener.listen(usb::net::Endpoint::unix_socket(path))) return;
  std::vector<std::unique_ptr<usb::net::Stream>> accepted;
  std::optional<Server> server;
  listener.start([&](std::unique_ptr<usb::net::Stream> s) {
    accepted.push_back(std::move(s));
    server.emplace(*accepted.back(), std::vector<uint8_t>(data, data + size));
  });
  int calls = 0;
  usb::usbip::list_devices(io, usb::net::Endpoint::unix_socket(path), std::chrono::seconds(5),
                           [&](auto) { ++calls; });
  settle(io);
  for (auto& s : accepted) s->close();
  settle(io);
  listener.stop();
  check(calls <= 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  switch (mode % 3) {
    case 0: remote_device(data + 1, size - 1, mode & 8); break;
    case 1: channel(data + 1, size - 1, mode & 8); break;
    default: devlist(data + 1, size - 1); break;
  }
  return 0;
}
