// DescriptorFetcher: reads an imported device's descriptors — the device descriptor, then every
// configuration (its 9-byte header for wTotalLength, then the whole of it) — with GET_DESCRIPTOR
// control transfers submitted to that device. The remote devices (UsbipRemoteDevice,
// UsbredirRemoteDevice) use it once, right after the connection is up, to fill their
// DescriptorSet; it only calls Device::submit, so any usb::Device works.
//
// Shared by its caller and its one outstanding transfer's completion (create(), then start());
// `device` and `out` must outlive it or the transfer it has in flight. Lives on the device's loop.
#pragma once

#include <functional>
#include <memory>

#include "usb/core/descriptors.h"
#include "usb/core/device.h"
#include "usb/core/error.h"
#include "usb/core/transfer.h"

namespace devices {

class DescriptorFetcher : public std::enable_shared_from_this<DescriptorFetcher> {
 public:
  using Done = std::move_only_function<void(usb::Result<void>)>;

  // `done` runs once: ok with `out` filled, or kIo naming the descriptor that failed.
  static std::shared_ptr<DescriptorFetcher> create(usb::Device& device, usb::DescriptorSet& out,
                                                   Done done);
  void start();

 private:
  DescriptorFetcher(usb::Device& device, usb::DescriptorSet& out, Done done)
      : device_(device), out_(out), done_(std::move(done)) {}
  void get(uint16_t value, uint16_t length, std::move_only_function<void(usb::Transfer&)> then);
  void next_config(uint8_t index);
  void finish(usb::Result<void> r);

  usb::Device& device_;
  usb::DescriptorSet& out_;
  Done done_;
  // Replaced from its own completion, which Transfer::complete allows.
  std::unique_ptr<usb::Transfer> current_;
};

}  // namespace devices
