// DeviceSources: creates the devices vusb-stub exports — emulated devices from --emulate specs
// and libusb providers from --libusb / --libusb-all — owns them, and feeds the ExportTable.
// Owned by the stub's main; lives on the stub's loop.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "usb-stub/stub_config.h"
#include "usb/core/executor.h"
#include "usb/usbip/export_table.h"

namespace boost::asio {
class io_context;
}

namespace devices {
class LibusbProvider;
class EvdevSensorSource;
class ReplaySensorSource;
class IioSensorSource;
class SensorRecorder;
class EvdevInputSource;
class HidInputDevice;
}  // namespace devices

namespace stub {

class DeviceSources {
 public:
  DeviceSources(boost::asio::io_context& io, usb::Executor& loop, usb::usbip::ExportTable& exports);
  ~DeviceSources();

  usb::Result<void> add_emulated(const EmulateSpec& spec);
  // selectors: "VID:PID" or bus ids; all = every non-hub device with hotplug.
  usb::Result<void> add_libusb(const std::vector<std::string>& selectors, bool all);
  // A HID sensor hub fed by sensor sources, exported as one device. Specs: "evdev" (every motion
  // sensor input device), "evdev:/dev/input/eventN", "iio" (every IIO motion / light sensor),
  // "iio:/sys/bus/iio/devices/iio:deviceN", "replay:FILE" or "replay:FILE,loop".
  // With `record` set, every sample the hub takes is also written there as a trace.
  usb::Result<void> add_sensors(const std::vector<std::string>& specs,
                                const std::string& record = {});
  // One USB HID device per input device (keyboard, mouse, touchscreen). Specs: "evdev" (every
  // such input device) or "evdev:/dev/input/eventN", each optionally ",nograb" (by default the
  // input device is grabbed: its events go to the importer only). A device that goes away is
  // unplugged.
  usb::Result<void> add_inputs(const std::vector<std::string>& specs);
  // Unplugs everything (in-flight transfers complete) before the loop stops.
  void stop();

 private:
  boost::asio::io_context& io_;
  usb::Executor& loop_;
  usb::usbip::ExportTable& exports_;
  std::vector<std::unique_ptr<usb::Device>> emulated_;
  std::vector<std::unique_ptr<devices::LibusbProvider>> providers_;
  std::vector<std::unique_ptr<devices::EvdevSensorSource>> evdev_;
  std::vector<std::unique_ptr<devices::ReplaySensorSource>> replays_;
  std::vector<std::unique_ptr<devices::IioSensorSource>> iio_;
  std::unique_ptr<devices::SensorRecorder> recorder_;
  // A source and the device it feeds; destroyed as one (the source first: it holds the device's
  // LED callback). Held by pointer so no member-wise move ever frees one before the other.
  struct Input {
    std::unique_ptr<devices::HidInputDevice> device;
    std::unique_ptr<devices::EvdevInputSource> source;
  };
  std::vector<std::unique_ptr<Input>> inputs_;
  void input_gone(devices::HidInputDevice* device);
};

}  // namespace stub
