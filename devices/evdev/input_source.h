// devices::EvdevInputSource: a keyboard, mouse or touchscreen input device read with libevdev and
// replayed into a HidInputDevice, so the machine's keys, pointer and touches reach a VM as an
// ordinary USB HID device.
//  - Keys (EV_KEY codes below BTN_MISC with a Keyboard-page usage, devices/evdev/hid_keymap.h):
//    the keyboard function; presses and releases in order, autorepeat left to the host. The
//    host's LED changes (Caps Lock, ...) are written back to the input device.
//  - Relative pointers (REL_X and REL_Y): the mouse function — BTN_LEFT, RIGHT, MIDDLE, SIDE,
//    EXTRA, REL_WHEEL and REL_HWHEEL, one pointer() per SYN_REPORT.
//  - Touchscreens (ABS_MT_POSITION_X/Y with slots, or ABS_X/Y with BTN_TOUCH; not touchpads,
//    which set INPUT_PROP_POINTER): the touch function, one frame of contacts per SYN_REPORT read
//    from libevdev's slot state (contact identifier: the slot; a slot whose finger changed
//    within a frame reports the old one lifted first); range and physical size from absinfo.
//  - SYN_DROPPED: libevdev's resync replays the differences as events; they take the same path.
//  - By default the device is grabbed (EVIOCGRAB): while exported its events go to the VM only.
//    A device with a key down when it is opened is grabbed once every key is up (else the
//    release of the key that started the stub would never reach this machine).
//  - find_devices() (`--input evdev`) takes keyboards only when they have letters, so a power
//    button stays with this machine; any device can be given by path.
//  - A device that goes away (ENODEV) calls on_gone once.
//
// Owned by the exporting daemon beside the HidInputDevice it feeds; lives on its loop (the
// descriptor is non-blocking and watched by the loop's reactor). The device must outlive it.
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "devices/emulated/hid_input_device.h"
#include "usb/core/error.h"

struct libevdev;

namespace devices {

class EvdevReader;
struct OpenedEvdev;

class EvdevInputSource {
 public:
  struct Options {
    bool grab = true;
  };
  static usb::Result<std::unique_ptr<EvdevInputSource>> open(boost::asio::io_context& io,
                                                             const std::string& path,
                                                             Options options);
  // Every keyboard, mouse and touchscreen under /dev/input.
  static std::vector<std::string> find_devices();
  // What an input device would become (empty: nothing this source can present).
  static std::set<HidInputFunction> classify(const libevdev* dev);
  ~EvdevInputSource();

  const std::string& name() const { return name_; }
  const std::string& path() const { return path_; }
  // Options for the HidInputDevice this source feeds: its functions, name, touch range.
  HidInputOptions device_options() const;
  void start(HidInputDevice& device);
  std::function<void(const std::string& why)> on_gone;
  uint64_t events() const { return events_; }

 private:
  EvdevInputSource(boost::asio::io_context& io, OpenedEvdev opened, std::string path);
  void handle(unsigned type, unsigned code, int value);
  void frame();  // SYN_REPORT
  void set_leds(uint8_t leds);
  bool keys_down() const;

  std::unique_ptr<EvdevReader> reader_;
  libevdev* dev_;
  std::string path_;
  std::string name_;
  std::set<HidInputFunction> functions_;
  bool multitouch_ = false;
  HidInputDevice* device_ = nullptr;
  uint8_t buttons_ = 0;
  int64_t dx_ = 0, dy_ = 0, wheel_ = 0, pan_ = 0;  // this frame's motion (no overflow)
  std::vector<int> slot_tracking_;                 // tracking ID per slot as last reported
  bool grab_pending_ = false;                      // grab once no key is down
  bool pointer_dirty_ = false, touch_dirty_ = false;
  uint64_t events_ = 0;
};

}  // namespace devices
