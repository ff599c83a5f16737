#include "devices/remote/descriptor_fetcher.h"

#include <string>

#include "usb/core/byte_order.h"

namespace devices {

std::shared_ptr<DescriptorFetcher> DescriptorFetcher::create(usb::Device& device,
                                                             usb::DescriptorSet& out, Done done) {
  return std::shared_ptr<DescriptorFetcher>(new DescriptorFetcher(device, out, std::move(done)));
}

void DescriptorFetcher::start() {
  get(usb::desc::kDevice << 8, usb::desc::kDeviceSize,
      [self = shared_from_this()](usb::Transfer& t) {
        auto d = usb::DeviceDescriptor::parse(t.data());
        if (t.status() != usb::Status::kOk || !d)
          return self->finish(
              usb::Error::make(usb::Error::Code::kIo, "cannot read the device descriptor"));
        self->out_.device = *d;
        self->next_config(0);
      });
}

void DescriptorFetcher::get(uint16_t value, uint16_t length,
                            std::move_only_function<void(usb::Transfer&)> then) {
  usb::SetupPacket s{0x80, usb::request::kGetDescriptor, value, 0, length};
  current_ = usb::Transfer::control(0x80, s);
  current_->set_completion(
      [self = shared_from_this(), then = std::move(then)](usb::Transfer& t) mutable { then(t); });
  device_.submit(*current_);
}

void DescriptorFetcher::next_config(uint8_t index) {
  if (index >= out_.device.num_configurations) return finish({});
  get(uint16_t(usb::desc::kConfiguration << 8 | index), usb::desc::kConfigurationSize,
      [self = shared_from_this(), index](usb::Transfer& t) {
        if (t.status() != usb::Status::kOk || t.actual_length() < 4)
          return self->finish(
              usb::Error::make(usb::Error::Code::kIo, "cannot read configuration header"));
        const uint16_t total = usb::load_le16(t.data().data() + 2);
        self->get(
            uint16_t(usb::desc::kConfiguration << 8 | index), total,
            [self, index](usb::Transfer& t) {
              auto c = usb::ConfigurationDescriptor::parse(t.data());
              if (t.status() != usb::Status::kOk || !c)
                return self->finish(usb::Error::make(
                    usb::Error::Code::kIo, "cannot parse configuration " + std::to_string(index)));
              self->out_.configurations.push_back(std::move(*c));
              self->next_config(uint8_t(index + 1));
            });
      });
}

void DescriptorFetcher::finish(usb::Result<void> r) {
  auto done = std::move(done_);
  done(std::move(r));
}

}  // namespace devices
