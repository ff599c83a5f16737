// FakeDevice: a scripted usb::Device for tests (STYLE 11). It records every call and keeps
// submitted transfers pending until the test completes them, so races (cancel vs complete,
// unplug with URBs in flight) are driven step by step. Lives on the test's thread.
#pragma once

#include <algorithm>
#include <deque>
#include <string>
#include <vector>

#include "usb/core/device.h"

namespace usb::testing {

// Descriptors shaped like Gadget Zero's source/sink configuration (0525:a4a0, configuration 3,
// self-powered, one vendor-specific interface): alt 0 = bulk IN 0x81 + bulk OUT 0x01 (512) +
// interrupt IN 0x83 (64, bInterval 4); alt 1 = alt 0 + iso IN 0x82 + iso OUT 0x02 (1024, 4).
// Tests that need more add to it.
inline DescriptorSet gadget_zero_like_descriptors() {
  DescriptorSet d;
  d.device.vendor_id = 0x0525;
  d.device.product_id = 0xa4a0;
  d.device.bcd_device = 0x0100;
  d.device.num_configurations = 1;
  ConfigurationDescriptor c;
  c.value = 3;
  c.num_interfaces = 1;
  c.attributes = kConfigAttrOne | kConfigAttrSelfPowered;
  InterfaceDescriptor alt0;
  alt0.interface_class = 0xff;
  alt0.endpoints.push_back({.address = 0x81, .attributes = 2, .max_packet_size = 512});
  alt0.endpoints.push_back({.address = 0x01, .attributes = 2, .max_packet_size = 512});
  alt0.endpoints.push_back(
      {.address = 0x83, .attributes = 3, .max_packet_size = 64, .interval = 4});
  InterfaceDescriptor alt1 = alt0;
  alt1.alternate = 1;
  alt1.endpoints.push_back(
      {.address = 0x82, .attributes = 1, .max_packet_size = 1024, .interval = 4});
  alt1.endpoints.push_back(
      {.address = 0x02, .attributes = 1, .max_packet_size = 1024, .interval = 4});
  c.interfaces = {alt0, alt1};
  d.configurations.push_back(c);
  return d;
}

class FakeDevice : public Device {
 public:
  explicit FakeDevice(DescriptorSet descriptors, Speed speed = Speed::kHigh,
                      DeviceLocation location = {})
      : descriptors_(std::move(descriptors)), speed_(speed), location_(std::move(location)) {
    if (!descriptors_.configurations.empty()) active_config_ = descriptors_.configurations[0].value;
  }

  const DescriptorSet& descriptors() const override { return descriptors_; }
  Speed speed() const override { return speed_; }
  const DeviceLocation& location() const override { return location_; }
  uint8_t active_configuration() const override { return active_config_; }
  uint8_t alternate_setting(uint8_t interface) const override {
    return interface < alt_.size() ? alt_[interface] : 0;
  }
  bool connected() const override { return connected_; }

  void submit(Transfer& t) override {
    if (!connected_) {
      t.complete(Status::kNoDevice, 0);
      return;
    }
    t.begin(this);
    if (serve_descriptors && t.type() == TransferType::kControl &&
        t.setup.is_standard(Recipient::kDevice, request::kGetDescriptor)) {
      // Like any device: device and configuration descriptors are answered at once.
      const uint8_t type = t.setup.value >> 8, index = t.setup.value & 0xff;
      std::vector<uint8_t> bytes;
      if (type == desc::kDevice) bytes = descriptors_.device.build();
      if (type == desc::kConfiguration && index < descriptors_.configurations.size())
        bytes = descriptors_.configurations[index].build();
      if (!bytes.empty()) {
        const size_t n = std::min({bytes.size(), t.length(), size_t{t.setup.length}});
        std::copy_n(bytes.begin(), n, t.buffer().begin());
        t.complete(Status::kOk, n);
        return;
      }
    }
    pending.push_back(&t);
    if (auto_complete) complete_next(auto_status, SIZE_MAX);
  }
  void cancel(Transfer& t) override {
    cancel_requests.push_back(&t);
    if (complete_on_cancel) finish(t, Status::kCancelled, 0);
  }
  void reset(StatusCallback done) override {
    calls.push_back("reset");
    done(next_op_status);
  }
  void set_configuration(uint8_t value, StatusCallback done) override {
    calls.push_back("set_configuration " + std::to_string(value));
    if (next_op_status == Status::kOk) active_config_ = value;
    done(next_op_status);
  }
  void set_interface(uint8_t interface, uint8_t alternate, StatusCallback done) override {
    calls.push_back("set_interface " + std::to_string(interface) + " " + std::to_string(alternate));
    if (next_op_status == Status::kOk) {
      if (alt_.size() <= interface) alt_.resize(interface + 1u);
      alt_[interface] = alternate;
    }
    done(next_op_status);
  }
  void clear_halt(uint8_t endpoint, StatusCallback done) override {
    calls.push_back("clear_halt " + std::to_string(endpoint));
    done(next_op_status);
  }
  void set_halt(uint8_t endpoint, StatusCallback done) override {
    calls.push_back("set_halt " + std::to_string(endpoint));
    done(next_op_status);
  }

  // --- Test controls ---
  // Completes the oldest pending transfer; actual defaults to the whole buffer.
  Transfer* complete_next(Status status = Status::kOk, size_t actual = SIZE_MAX) {
    if (pending.empty()) return nullptr;
    Transfer* t = pending.front();
    finish(*t, status, actual == SIZE_MAX ? t->length() : actual);
    return t;
  }
  void finish(Transfer& t, Status status, size_t actual) {
    std::erase(pending, &t);
    t.complete(status, actual);
  }
  // Unplug: every pending transfer completes with kNoDevice.
  void unplug() {
    connected_ = false;
    while (!pending.empty()) complete_next(Status::kNoDevice, 0);
  }

  std::deque<Transfer*> pending;
  std::vector<Transfer*> cancel_requests;
  std::vector<std::string> calls;
  bool complete_on_cancel = true;
  bool serve_descriptors = true;  // GET_DESCRIPTOR(device / configuration) answered inline
  bool auto_complete = false;
  Status auto_status = Status::kOk;
  Status next_op_status = Status::kOk;

 private:
  DescriptorSet descriptors_;
  Speed speed_;
  DeviceLocation location_;
  uint8_t active_config_ = 0;
  std::vector<uint8_t> alt_;
  bool connected_ = true;
};

}  // namespace usb::testing
