// usb::Device: the one small interface through which everything above sees a USB device
// (STYLE 3). Emulated, libusb, remote USB/IP and device-process devices implement it; callers
// never touch sockets, fds or libusb. Every Device lives on one loop (its class comment names
// it); its methods are called and its callbacks run on that loop.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "usb/core/descriptors.h"
#include "usb/core/status.h"
#include "usb/core/transfer.h"
#include "usb/core/types.h"

namespace usb {

using StatusCallback = std::move_only_function<void(Status)>;

// Where a device sits, for naming and for the USB/IP device record.
struct DeviceLocation {
  uint32_t busnum = 0;
  uint32_t devnum = 0;
  std::string busid{};  // e.g. "1-1.2"; empty lets an exporter choose
  std::string path{};   // sysfs-like path or a description, e.g. "/sys/devices/.../1-1"
};

class Device {
 public:
  virtual ~Device() = default;

  virtual const DescriptorSet& descriptors() const = 0;
  virtual Speed speed() const = 0;
  virtual const DeviceLocation& location() const = 0;
  // bConfigurationValue in force, 0 when unconfigured.
  virtual uint8_t active_configuration() const = 0;
  // Alternate setting in force on an interface of the active configuration.
  virtual uint8_t alternate_setting(uint8_t interface) const = 0;
  // False once the device is gone; then every submit completes with kNoDevice.
  virtual bool connected() const = 0;

  // Starts a transfer. The device calls transfer.begin(this), then later transfer.complete().
  // Emulated devices may complete before submit() returns. A transfer the device cannot start
  // is completed with a status (never thrown, never dropped).
  virtual void submit(Transfer& transfer) = 0;
  // Asks the device to stop an in-flight transfer. Called by Transfer::cancel(); the transfer
  // completes exactly once afterwards (kCancelled, or its real outcome if it won the race).
  virtual void cancel(Transfer& transfer) = 0;

  // Standard operations a USB/IP server or a host controller performs on the device rather than
  // forwarding as plain control transfers. Each completes with a Status.
  virtual void reset(StatusCallback done) = 0;
  virtual void set_configuration(uint8_t value, StatusCallback done) = 0;
  virtual void set_interface(uint8_t interface, uint8_t alternate, StatusCallback done) = 0;
  virtual void clear_halt(uint8_t endpoint, StatusCallback done) = 0;
  virtual void set_halt(uint8_t endpoint, StatusCallback done) = 0;

  // True if the device wants SET_CONFIGURATION / SET_INTERFACE / CLEAR_FEATURE(HALT) / port
  // reset as ordinary control transfers, in order with its other ep0 requests (vusbd's shared
  // views do), instead of having a USB/IP server perform them through the methods above.
  virtual bool performs_standard_requests() const { return false; }

  // Class state beyond chapter 9 that a sharing layer may save when one VM's time slice ends and
  // restore when that VM's next one begins (opaque bytes). Empty: the device exposes none (a
  // remote device cannot). Emulated devices that keep host-visible state override both.
  virtual std::vector<uint8_t> save_class_state() const { return {}; }
  virtual void restore_class_state(std::span<const uint8_t> /*state*/) {}

  // Convenience: the active configuration's descriptor, or nullptr.
  const ConfigurationDescriptor* active_config_descriptor() const {
    return descriptors().find_configuration(active_configuration());
  }
};

}  // namespace usb
