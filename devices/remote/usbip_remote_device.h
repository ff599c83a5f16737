// UsbipRemoteDevice: a usb::Device that lives on a USB/IP server (vusb-stub or the kernel's
// usbipd) and is reached over TCP — or a device process reached over a socketpair — as the client
// side of the protocol. Transfers become
// CMD_SUBMIT; RET_SUBMIT completes them. Submits made in one loop turn leave in one gathered
// write (a write cache flushed at the end of the turn). cancel() sends CMD_UNLINK; a RET_SUBMIT
// that arrives for a transfer already given back is read and dropped (STYLE 2).
//
// Owned by whoever imported it (unique_ptr). The socket and its pending handlers live in a
// shared Channel so the device can be destroyed with I/O still outstanding. Lives on the loop
// of the io_context it was imported on.
#pragma once

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "usb/core/device.h"
#include "usb/net/address.h"
#include "usb/wire/usbip_codec.h"

namespace devices {

class UsbipRemoteDevice : public usb::Device {
 public:
  struct Options {
    usb::wire::usbip::Limits limits;
    // Submits made in one loop turn leave in one gathered write. false: one write per PDU
    // (for measuring what the batching gains).
    bool batch = true;
    // Called once when the connection ends (peer gone, protocol error, close()).
    std::function<void(const std::string& reason)> on_disconnect;
  };
  using ImportCallback =
      std::move_only_function<void(usb::Result<std::unique_ptr<UsbipRemoteDevice>>)>;

  // Connects, imports `busid`, reads the device's descriptors over the URB channel, then calls
  // done on the loop.
  static void import(boost::asio::io_context& io, const usb::net::HostPort& server,
                     const std::string& busid, Options options, ImportCallback done);
  // The same over a stream that is already connected (one end of a socketpair to a device
  // process); `peer` names it in logs. The socket's executor must be an io_context's.
  static void import_connected(boost::asio::generic::stream_protocol::socket socket,
                               std::string peer, const std::string& busid, Options options,
                               ImportCallback done);

  // OP_REQ_DEVLIST on the loop: connects, asks, reads the list (at most 4096 devices), hangs up,
  // then calls done on the loop; fails (kIo, kMalformed, kTooLarge) if that takes over `timeout`.
  using ListCallback =
      std::move_only_function<void(usb::Result<std::vector<usb::wire::usbip::DevlistEntry>>)>;
  static void list(boost::asio::io_context& io, const usb::net::HostPort& server,
                   std::chrono::milliseconds timeout, ListCallback done);

  // OP_REQ_DEVLIST, blocking: for tools and tests, not for daemons' loops.
  static usb::Result<std::vector<usb::wire::usbip::DevlistEntry>> list_blocking(
      const usb::net::HostPort& server);

  ~UsbipRemoteDevice() override;

  // usb::Device
  const usb::DescriptorSet& descriptors() const override;
  usb::Speed speed() const override;
  const usb::DeviceLocation& location() const override;
  uint8_t active_configuration() const override;
  uint8_t alternate_setting(uint8_t interface) const override;
  bool connected() const override;
  void submit(usb::Transfer& transfer) override;
  void cancel(usb::Transfer& transfer) override;
  void reset(usb::StatusCallback done) override;
  void set_configuration(uint8_t value, usb::StatusCallback done) override;
  void set_interface(uint8_t interface, uint8_t alternate, usb::StatusCallback done) override;
  void clear_halt(uint8_t endpoint, usb::StatusCallback done) override;
  void set_halt(uint8_t endpoint, usb::StatusCallback done) override;

  // Ends the connection; in-flight transfers complete with kNoDevice.
  void close();
  const usb::wire::usbip::DeviceRecord& record() const;

  struct Channel;  // implementation detail, shared with pending I/O handlers

 private:
  explicit UsbipRemoteDevice(std::shared_ptr<Channel> channel);
  // OP_REQ_IMPORT on the channel's connected socket, then the descriptors; calls done once.
  static void start_import(std::shared_ptr<Channel> channel, const std::string& busid,
                           std::shared_ptr<ImportCallback> done);
  void standard_request(const usb::SetupPacket& setup, usb::StatusCallback done);

  std::shared_ptr<Channel> channel_;
};

}  // namespace devices
