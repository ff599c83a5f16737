// libFuzzer: usbip::ServerConnection, the stateful server side every USB/IP port runs (vusb-stub,
// each VM's port in vusbd), fed whatever a hostile client sends — an op request (devlist or
// import of the one export, whose access list refuses some peers), then CMD_SUBMIT / CMD_UNLINK
// in any order, lengths and counts, over a UNIX socket pair. The export is a scripted device that
// completes what was started, a bounded number of times, with statuses taken from the input.
// Nothing may crash, leak or keep the connection from closing; the connection's bounds are small
// here so the input reaches them.
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "usb/core/fake_device.h"
#include "usb/net/socket_stream.h"
#include "usb/usbip/export_access.h"
#include "usb/usbip/export_table.h"
#include "usb/usbip/server_connection.h"

namespace {

void settle(boost::asio::io_context& io) {
  for (int idle = 0, i = 0; idle < 3 && i < 20000; ++i) idle = io.poll() ? 0 : idle + 1;
  io.restart();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  ++data;
  --size;
  boost::asio::io_context io;
  auto pair = usb::net::stream_pair(io);
  if (!pair) return 0;
  usb::testing::FakeDevice device(usb::testing::gadget_zero_like_descriptors(),
                                  usb::Speed::kHigh, usb::DeviceLocation{.busid = "1-1", .path = {}});
  usb::usbip::ExportTable exports;
  if (!exports.add(device)) return 0;
  if (mode & 1) {
    // An access list that admits only a TLS identity this peer has not: imports are refused.
    auto access = usb::usbip::ExportAccess::make({{{"1-1"}, {"cn:someone"}}});
    if (access) exports.set_access(std::make_shared<usb::usbip::ExportAccess>(std::move(*access)));
  }
  usb::usbip::ConnectionLimits limits;
  limits.wire.max_transfer_length = 1 << 16;
  limits.max_inflight_bytes = 1 << 18;
  limits.max_inflight_urbs = 64;
  limits.max_queued_replies = 64;
  auto conn = std::make_shared<usb::usbip::ServerConnection>(std::move(pair->first), exports,
                                                             limits);
  conn->start();
  auto bytes = std::make_shared<std::vector<uint8_t>>(data, data + size);
  auto& peer = *pair->second;
  peer.async_write(boost::asio::buffer(*bytes), [bytes](boost::system::error_code, size_t) {});
  // Mode bit 1: a client that never reads its replies; otherwise they are drained.
  std::vector<uint8_t> sink(65536);
  std::function<void()> drain = [&] {
    peer.async_read_some(boost::asio::buffer(sink), [&](boost::system::error_code ec, size_t) {
      if (!ec) drain();
    });
  };
  if (!(mode & 2)) drain();
  settle(io);
  for (int i = 0; i < 64 && !device.pending.empty(); ++i) {
    const auto status = data[i % (size ? size : 1)] < 24 ? usb::Status::kStall : usb::Status::kOk;
    device.complete_next(status, size ? data[(i * 13) % size] * 4u : 0);
    settle(io);
  }
  if (mode & 4) exports.remove(device);  // the device unplugs with URBs in flight
  settle(io);
  peer.close();
  settle(io);
  conn->close("fuzz done");
  settle(io);
  return 0;
}
