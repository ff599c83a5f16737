#include "devices/remote/usbredir_remote_device.h"

#include <spdlog/spdlog.h>

#include <boost/asio/steady_timer.hpp>

#include "devices/remote/descriptor_fetcher.h"
#include "usb/net/connector.h"

namespace devices {

using usb::usbredir::GuestChannel;

// One import: from the connection to done(), then the device's disconnect report. Held by the
// channel's callbacks (and the device by it until done), so it lives as long as the channel.
struct UsbredirRemoteDevice::Import {
  ImportCallback done;
  std::unique_ptr<UsbredirRemoteDevice> device;  // until done
  std::shared_ptr<DescriptorFetcher> fetch;
  std::unique_ptr<boost::asio::steady_timer> timer;
  std::function<void(const std::string&)> on_disconnect;
  std::string where;
  bool finished = false;
  bool gone = false;

  void finish(usb::Result<void> r) {
    if (finished) return;
    finished = true;
    timer.reset();  // may be running its own handler: asio allows it
    if (!r) {
      spdlog::warn("usbredir {}: import failed: {}", where, r.error().message);
      device.reset();  // closes the channel
      return done(std::unexpected(r.error()));
    }
    done(std::move(device));
  }
  // The connection ended or the host disconnected the device.
  void lost(const std::string& reason) {
    if (!finished)
      return finish(
          usb::Error::make(usb::Error::Code::kIo, "usbredir host " + where + ": " + reason));
    if (gone) return;
    gone = true;
    if (on_disconnect) on_disconnect(reason);
  }
};

UsbredirRemoteDevice::UsbredirRemoteDevice(std::shared_ptr<GuestChannel> channel,
                                           const std::string& where)
    : channel_(std::move(channel)) {
  location_.busid = "usbredir";
  location_.path = where;
}

UsbredirRemoteDevice::~UsbredirRemoteDevice() {
  close();
}

void UsbredirRemoteDevice::close() {
  channel_->close();
}

void UsbredirRemoteDevice::import(boost::asio::io_context& io, const usb::net::Endpoint& host,
                                  Options options, ImportCallback done) {
  const usb::net::TcpOptions tcp = options.tcp;
  const auto timeout = options.connect_timeout;
  usb::net::async_connect(
      io, host, tcp, timeout,
      [where = host.to_string(), options = std::move(options),
       done = std::move(done)](usb::Result<std::unique_ptr<usb::net::Stream>> stream) mutable {
        if (!stream) return done(std::unexpected(stream.error()));
        import(std::move(*stream), where, std::move(options), std::move(done));
      });
}

void UsbredirRemoteDevice::import(std::unique_ptr<usb::net::Stream> stream,
                                  const std::string& where, Options options, ImportCallback done) {
  auto executor = stream->get_executor();
  if (options.channel.label == GuestChannel::Options{}.label)
    options.channel.label = "usbredir " + where;
  auto channel = GuestChannel::create(std::move(stream), options.channel);
  auto imp = std::make_shared<Import>();
  imp->done = std::move(done);
  imp->on_disconnect = std::move(options.on_disconnect);
  imp->where = where;
  imp->device.reset(new UsbredirRemoteDevice(channel, where));
  imp->timer = std::make_unique<boost::asio::steady_timer>(executor, options.announce_timeout);
  imp->timer->async_wait(
      [imp, ms = options.announce_timeout.count()](boost::system::error_code ec) {
        if (ec || imp->finished) return;
        imp->finish(usb::Error::make(usb::Error::Code::kIo, "usbredir host " + imp->where +
                                                                " announced no device within " +
                                                                std::to_string(ms) + " ms"));
      });
  // The callbacks belong to the channel: a raw pointer back to it is enough.
  GuestChannel* ch = channel.get();
  channel->on_device_connect([imp, ch] {
    if (imp->finished) return;  // announced again after a disconnect: the device is gone already
    // The host knows the configuration in force (usbredirect's device may be configured).
    ch->get_configuration([imp](usb::Status st) {
      if (imp->finished) return;
      if (st != usb::Status::kOk)
        spdlog::debug("usbredir {}: get_configuration: {}", imp->where, usb::to_string(st));
      UsbredirRemoteDevice& dev = *imp->device;
      imp->fetch = DescriptorFetcher::create(
          dev, dev.descriptors_, [imp](usb::Result<void> r) { imp->finish(std::move(r)); });
      imp->fetch->start();
    });
  });
  channel->on_device_disconnect([imp] { imp->lost("the host disconnected the device"); });
  channel->on_closed([imp](const std::string& why) { imp->lost(why); });
  channel->start();
}

void UsbredirRemoteDevice::submit(usb::Transfer& t) {
  if (!t.begin(this)) return;
  channel_->submit(t);
}

void UsbredirRemoteDevice::cancel(usb::Transfer& t) {
  channel_->cancel(t);
}

void UsbredirRemoteDevice::reset(usb::StatusCallback done) {
  channel_->reset(std::move(done));
}

void UsbredirRemoteDevice::set_configuration(uint8_t value, usb::StatusCallback done) {
  channel_->set_configuration(value, std::move(done));
}

void UsbredirRemoteDevice::set_interface(uint8_t interface, uint8_t alternate,
                                         usb::StatusCallback done) {
  channel_->set_interface(interface, alternate, std::move(done));
}

void UsbredirRemoteDevice::endpoint_request(uint8_t request, uint8_t endpoint,
                                            usb::StatusCallback done) {
  // usbredirhost turns CLEAR_FEATURE(ENDPOINT_HALT) into libusb_clear_halt, so the host's stack
  // knows too; SET_FEATURE goes to the device as it is.
  auto t = usb::Transfer::control(0x00, {0x02, request, usb::feature::kEndpointHalt, endpoint, 0});
  usb::Transfer* raw = t.get();
  raw->set_completion([t = std::move(t), done = std::move(done)](usb::Transfer& x) mutable {
    done(x.status());
    // The transfer is destroyed with this lambda after complete() returns.
  });
  submit(*raw);
}

void UsbredirRemoteDevice::clear_halt(uint8_t endpoint, usb::StatusCallback done) {
  endpoint_request(usb::request::kClearFeature, endpoint, std::move(done));
}

void UsbredirRemoteDevice::set_halt(uint8_t endpoint, usb::StatusCallback done) {
  endpoint_request(usb::request::kSetFeature, endpoint, std::move(done));
}

}  // namespace devices
