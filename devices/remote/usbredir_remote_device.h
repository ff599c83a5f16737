// UsbredirRemoteDevice: a usb::Device owned by a usbredir "usb-host" — Debian's `usbredirect
// --device VID:PID --as HOST:PORT`, or anything else speaking usbredirhost's side — reached through
// a usb::usbredir::GuestChannel over TCP or a UNIX socket. Importing connects, waits for the
// host's device_connect, asks for the active configuration and reads the descriptors
// (GET_DESCRIPTOR over the channel). Transfers go out as usbredir data packets; SET_CONFIGURATION
// and SET_INTERFACE, as control transfers or as the operations below, go as set_configuration /
// set_alt_setting packets, and the configuration and alternate settings are what the host
// reports back. Isochronous endpoints are not supported yet (their transfers fail).
//
// Owned by whoever imported it (unique_ptr). The channel is shared with its pending I/O, so the
// device can be destroyed with I/O outstanding. Lives on the loop of the io_context it was
// imported on.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "usb/core/device.h"
#include "usb/net/endpoint.h"
#include "usb/net/socket_stream.h"
#include "usb/usbredir/guest_channel.h"

namespace devices {

class UsbredirRemoteDevice : public usb::Device {
 public:
  struct Options {
    usb::usbredir::GuestChannel::Options channel{};
    usb::net::TcpOptions tcp{};
    std::chrono::milliseconds connect_timeout{10000};
    // From the connection to the host's device_connect (usbredirect resets the device first).
    std::chrono::milliseconds announce_timeout{10000};
    // Called once after the import when the device goes: the connection ended or the host
    // disconnected the device (pending transfers have completed with kNoDevice).
    std::function<void(const std::string& reason)> on_disconnect{};
  };
  using ImportCallback =
      std::move_only_function<void(usb::Result<std::unique_ptr<UsbredirRemoteDevice>>)>;

  // Connects to `host` (TCP or a UNIX socket), waits for its device, reads the descriptors, then
  // calls done on the loop.
  static void import(boost::asio::io_context& io, const usb::net::Endpoint& host, Options options,
                     ImportCallback done);
  // The same over a stream that is already connected; `where` names the host in the location.
  static void import(std::unique_ptr<usb::net::Stream> stream, const std::string& where,
                     Options options, ImportCallback done);

  ~UsbredirRemoteDevice() override;

  // usb::Device
  const usb::DescriptorSet& descriptors() const override { return descriptors_; }
  usb::Speed speed() const override { return channel_->device_info().speed; }
  const usb::DeviceLocation& location() const override { return location_; }
  uint8_t active_configuration() const override { return channel_->configuration(); }
  uint8_t alternate_setting(uint8_t interface) const override {
    return channel_->alt_setting(interface);
  }
  bool connected() const override { return channel_->device_connected(); }
  void submit(usb::Transfer& transfer) override;
  void cancel(usb::Transfer& transfer) override;
  void reset(usb::StatusCallback done) override;
  void set_configuration(uint8_t value, usb::StatusCallback done) override;
  void set_interface(uint8_t interface, uint8_t alternate, usb::StatusCallback done) override;
  void clear_halt(uint8_t endpoint, usb::StatusCallback done) override;
  void set_halt(uint8_t endpoint, usb::StatusCallback done) override;

  // Ends the connection; in-flight transfers complete with kNoDevice. on_disconnect is not called.
  void close();
  const usb::usbredir::GuestChannel& channel() const { return *channel_; }

 private:
  struct Import;
  UsbredirRemoteDevice(std::shared_ptr<usb::usbredir::GuestChannel> channel,
                       const std::string& where);
  void endpoint_request(uint8_t request, uint8_t endpoint, usb::StatusCallback done);

  std::shared_ptr<usb::usbredir::GuestChannel> channel_;
  usb::DescriptorSet descriptors_;
  usb::DeviceLocation location_;
};

}  // namespace devices
