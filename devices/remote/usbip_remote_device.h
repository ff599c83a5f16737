// UsbipRemoteDevice: a usb::Device that lives on a USB/IP server (vusb-stub, the kernel's usbipd,
// a device process) and is reached through a usb::usbip::ClientChannel over any stream — TCP, a
// UNIX socket, a socketpair. Importing reads the device's descriptors over the URB channel;
// transfers go out as CMD_SUBMIT (batched per loop turn), cancel() unlinks; standard requests
// that change device state are sent as the control requests a USB/IP server acts on, and the
// state they set is remembered here.
//
// Owned by whoever imported it (unique_ptr). The channel and its pending handlers are shared, so
// the device can be destroyed with I/O still outstanding. Lives on the loop of the io_context it
// was imported on.
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "usb/core/device.h"
#include "usb/net/endpoint.h"
#include "usb/usbip/client_channel.h"

namespace devices {

class UsbipRemoteDevice : public usb::Device {
 public:
  using Options = usb::usbip::ClientChannel::Options;
  using ImportCallback =
      std::move_only_function<void(usb::Result<std::unique_ptr<UsbipRemoteDevice>>)>;

  // Connects to `server` (TCP or a UNIX socket), imports `busid`, reads the device's
  // descriptors over the URB channel, then calls done on the loop.
  static void import(boost::asio::io_context& io, const usb::net::Endpoint& server,
                     const std::string& busid, Options options, ImportCallback done);
  // The same over a stream that is already connected (one end of a socketpair to a device
  // process).
  static void import(std::unique_ptr<usb::net::Stream> stream, const std::string& busid,
                     Options options, ImportCallback done);

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

 private:
  // What the device's own requests set; shared with their completions, which may outlive it.
  struct State {
    usb::DescriptorSet descriptors;
    usb::DeviceLocation location;
    uint8_t active_config = 0;
    std::vector<uint8_t> alt;
  };
  using ChannelResult = usb::Result<std::shared_ptr<usb::usbip::ClientChannel>>;
  static void on_channel(ChannelResult channel, std::shared_ptr<ImportCallback> done);
  explicit UsbipRemoteDevice(std::shared_ptr<usb::usbip::ClientChannel> channel);
  void standard_request(const usb::SetupPacket& setup, usb::StatusCallback done);

  std::shared_ptr<usb::usbip::ClientChannel> channel_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace devices
