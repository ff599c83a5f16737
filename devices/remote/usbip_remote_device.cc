#include "devices/remote/usbip_remote_device.h"

#include <spdlog/spdlog.h>

#include <boost/asio/steady_timer.hpp>

#include "devices/remote/descriptor_fetcher.h"

namespace devices {

UsbipRemoteDevice::UsbipRemoteDevice(std::shared_ptr<usb::usbip::ClientChannel> channel)
    : channel_(std::move(channel)) {
  const auto& rec = channel_->record();
  state_->active_config = rec.configuration_value;
  state_->location = {rec.busnum, rec.devnum, rec.busid, rec.path};
}

UsbipRemoteDevice::~UsbipRemoteDevice() {
  close();
}

void UsbipRemoteDevice::close() {
  channel_->close("closed by owner");
}

void UsbipRemoteDevice::import(boost::asio::io_context& io, const usb::net::Endpoint& server,
                               const std::string& busid, Options options, ImportCallback done) {
  usb::usbip::ClientChannel::import(
      io, server, busid, std::move(options),
      [done = std::make_shared<ImportCallback>(std::move(done))](ChannelResult ch) {
        on_channel(std::move(ch), done);
      });
}

void UsbipRemoteDevice::import(std::unique_ptr<usb::net::Stream> stream, const std::string& busid,
                               Options options, ImportCallback done) {
  usb::usbip::ClientChannel::import(
      std::move(stream), busid, std::move(options),
      [done = std::make_shared<ImportCallback>(std::move(done))](ChannelResult ch) {
        on_channel(std::move(ch), done);
      });
}

void UsbipRemoteDevice::on_channel(ChannelResult channel, std::shared_ptr<ImportCallback> done) {
  if (!channel) return (*done)(std::unexpected(channel.error()));
  auto ch = *channel;
  auto dev = std::unique_ptr<UsbipRemoteDevice>(new UsbipRemoteDevice(std::move(*channel)));
  UsbipRemoteDevice* raw = dev.get();
  auto holder = std::make_shared<std::unique_ptr<UsbipRemoteDevice>>(std::move(dev));
  // The descriptors come over URBs the server may never answer: past the import deadline the
  // connection closes, the pending read completes with kNoDevice and the import fails.
  auto deadline = std::make_shared<boost::asio::steady_timer>(ch->stream_executor());
  auto expired = std::make_shared<bool>(false);
  deadline->expires_after(ch->options().import_timeout);
  deadline->async_wait([weak = std::weak_ptr(ch), expired](boost::system::error_code ec) {
    if (ec) return;
    *expired = true;
    if (auto c = weak.lock()) c->close("no descriptors within the import deadline");
  });
  const auto timeout_ms = ch->options().import_timeout.count();
  auto fetch = DescriptorFetcher::create(
      *raw, raw->state_->descriptors, [=](usb::Result<void> r) {
        deadline->cancel();
        if (!r) {
          auto e = *expired ? usb::Error{usb::Error::Code::kIo,
                                         "the server did not answer the descriptor reads within " +
                                             std::to_string(timeout_ms) + " ms"}
                            : r.error();
          holder->reset();
          return (*done)(std::unexpected(std::move(e)));
        }
        (*done)(std::move(*holder));
      });
  fetch->start();
}

const usb::DescriptorSet& UsbipRemoteDevice::descriptors() const {
  return state_->descriptors;
}
usb::Speed UsbipRemoteDevice::speed() const {
  return static_cast<usb::Speed>(channel_->record().speed);
}
const usb::DeviceLocation& UsbipRemoteDevice::location() const {
  return state_->location;
}
uint8_t UsbipRemoteDevice::active_configuration() const {
  return state_->active_config;
}
uint8_t UsbipRemoteDevice::alternate_setting(uint8_t i) const {
  return i < state_->alt.size() ? state_->alt[i] : 0;
}
bool UsbipRemoteDevice::connected() const {
  return channel_->connected();
}
const usb::wire::usbip::DeviceRecord& UsbipRemoteDevice::record() const {
  return channel_->record();
}

void UsbipRemoteDevice::submit(usb::Transfer& t) {
  if (!channel_->connected()) {
    t.complete(usb::Status::kNoDevice, 0);
    return;
  }
  if (t.length() > channel_->options().limits.max_transfer_length) {
    t.complete(usb::Status::kInvalid, 0);
    return;
  }
  if (!t.begin(this)) return;
  channel_->submit(t);
}

void UsbipRemoteDevice::cancel(usb::Transfer& t) {
  channel_->cancel(t);
}

void UsbipRemoteDevice::standard_request(const usb::SetupPacket& setup, usb::StatusCallback done) {
  auto t = usb::Transfer::control(setup.direction() == usb::Direction::kIn ? 0x80 : 0x00, setup);
  usb::Transfer* raw = t.get();
  raw->set_completion([t = std::move(t), done = std::move(done)](usb::Transfer& x) mutable {
    done(x.status());
    // The transfer is destroyed with this lambda after complete() returns.
  });
  submit(*raw);
}

void UsbipRemoteDevice::reset(usb::StatusCallback done) {
  // Hub-class SET_FEATURE(PORT_RESET): USB/IP servers reset the device when they see it. What
  // the device is configured as afterwards depends on the server (a reset device is unconfigured;
  // Linux's usbip-host configures it again as it was), so ask it: a stale cached configuration
  // would make vusbd answer a guest's SET_CONFIGURATION from the cache and never configure it.
  standard_request(
      {0x23, usb::request::kSetFeature, usb::kHubPortResetFeature, 0, 0},
      [ch = channel_, st = state_, done = std::move(done)](usb::Status s) mutable {
        if (s != usb::Status::kOk) return done(s);
        st->alt.clear();
        auto t = usb::Transfer::control(
            0x80, {0x80, usb::request::kGetConfiguration, 0, 0, 1});
        usb::Transfer* raw = t.get();
        raw->set_completion([t = std::move(t), st, done = std::move(done)](usb::Transfer& x) mutable {
          // A device that cannot say is taken as the reset left it: unconfigured.
          st->active_config = x.status() == usb::Status::kOk && x.actual_length() == 1
                                  ? x.data()[0]
                                  : 0;
          done(usb::Status::kOk);
        });
        // The completions may outlive this device: the channel and the state are shared.
        if (!ch->connected() || !raw->begin(nullptr))
          raw->complete(usb::Status::kNoDevice, 0);
        else
          ch->submit(*raw);
      });
}

void UsbipRemoteDevice::set_configuration(uint8_t value, usb::StatusCallback done) {
  standard_request({0x00, usb::request::kSetConfiguration, value, 0, 0},
                   [st = state_, value, done = std::move(done)](usb::Status s) mutable {
                     if (s == usb::Status::kOk) {
                       st->active_config = value;
                       st->alt.clear();
                     }
                     done(s);
                   });
}

void UsbipRemoteDevice::set_interface(uint8_t interface, uint8_t alternate,
                                      usb::StatusCallback done) {
  standard_request(
      {0x01, usb::request::kSetInterface, alternate, interface, 0},
      [st = state_, interface, alternate, done = std::move(done)](usb::Status s) mutable {
        if (s == usb::Status::kOk) {
          if (st->alt.size() <= interface) st->alt.resize(interface + 1u);
          st->alt[interface] = alternate;
        }
        done(s);
      });
}

void UsbipRemoteDevice::clear_halt(uint8_t endpoint, usb::StatusCallback done) {
  standard_request({0x02, usb::request::kClearFeature, usb::feature::kEndpointHalt, endpoint, 0},
                   std::move(done));
}

void UsbipRemoteDevice::set_halt(uint8_t endpoint, usb::StatusCallback done) {
  standard_request({0x02, usb::request::kSetFeature, usb::feature::kEndpointHalt, endpoint, 0},
                   std::move(done));
}

}  // namespace devices
