#include "devices/process/device_host.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include "devices/process/confine.h"
#include "devices/process/seccomp_policy.h"
#include "usb/net/asio_timer.h"
#include "usb/net/socket_stream.h"
#include "usb/usbip/export_table.h"
#include "usb/usbip/server_connection.h"

namespace devices {

namespace asio = boost::asio;

int run_device_host(const DeviceHostOptions& o) {
  asio::io_context io;
  auto device = make_emulated(o.device, usb::net::asio_timer(io),
                              [] { return std::chrono::steady_clock::now(); });
  if (!device) {
    spdlog::error("device process: {}", device.error().message);
    return 2;
  }
  usb::usbip::ExportTable exports;  // the first device is bus id 1-1
  if (auto busid = exports.add(**device); !busid) {
    spdlog::error("device process: {}", busid.error().message);
    return 2;
  }
  boost::system::error_code ec;
  asio::generic::stream_protocol::socket socket(io);
  socket.assign(asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), o.fd, ec);
  if (ec) {
    spdlog::error("device process: fd {} is not a stream to the parent: {}", o.fd, ec.message());
    return 2;
  }
  usb::usbip::ConnectionLimits limits;
  limits.label = "device process " + o.device.type;
  auto connection = std::make_shared<usb::usbip::ServerConnection>(
      std::make_unique<usb::net::UnixStream>(std::move(socket), "parent"), exports, limits);
  connection->start();
  asio::signal_set stop(io, SIGTERM, SIGINT);
  stop.async_wait([&](boost::system::error_code e, int) {
    if (!e) io.stop();
  });
  if (o.seccomp) {
    auto confined = confine_device_process();
    if (!confined) {
      spdlog::error("device process: {}", confined.error().message);
      return 2;
    }
    spdlog::info("device process {} (pid {}): {}", o.device.type, getpid(), *confined);
    prepare_for_seccomp();
    if (auto r = install_device_process_seccomp(); !r) {
      spdlog::error("device process: {}", r.error().message);
      return 2;
    }
    spdlog::info("device process {} (pid {}): serving {} with seccomp on", o.device.type, getpid(),
                 (*device)->descriptors().strings.size() > 1 ? (*device)->descriptors().strings[1]
                                                             : o.device.type);
    if (o.seccomp_selftest) {
      // Not on the allowlist: the kernel kills the process here with SIGSYS.
      (void)::socket(AF_INET, SOCK_STREAM, 0);
      spdlog::error("device process: seccomp self-test: socket() was allowed");
      return 3;
    }
  }
  // Ends when the parent hangs up: the connection closes, the device is released and nothing is
  // left for the loop to do.
  while (!connection->closed() && !io.stopped()) io.run_one();
  connection->close("parent gone");
  stop.cancel();
  exports.remove(**device);
  return 0;
}

}  // namespace devices
