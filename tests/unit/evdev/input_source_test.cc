// The evdev input source's decisions that need no input device node (this host has no uinput;
// e2e.vusbd_sensors drives a real one in a guest): which key codes become which HID usages, and
// what an input device becomes (keyboard, mouse, touchscreen, or nothing).
#include "devices/evdev/input_source.h"

#include <gtest/gtest.h>
#include <libevdev/libevdev.h>

#include <memory>

#include "devices/evdev/hid_keymap.h"

namespace devices {
namespace {

using Functions = std::set<HidInputFunction>;

TEST(HidKeymap, KeyCodesMapToTheUsagesLinuxMapsBack) {
  EXPECT_EQ(hid_usage_for_key(KEY_A), 0x04);
  EXPECT_EQ(hid_usage_for_key(KEY_1), 0x1e);
  EXPECT_EQ(hid_usage_for_key(KEY_ENTER), 0x28);
  EXPECT_EQ(hid_usage_for_key(KEY_LEFTSHIFT), 0xe1);
  EXPECT_EQ(hid_usage_for_key(KEY_RIGHTMETA), 0xe7);
  EXPECT_EQ(hid_usage_for_key(KEY_BACKSLASH), 0x31);  // the first of 0x31 and 0x32
  EXPECT_EQ(hid_usage_for_key(KEY_VOLUMEUP), 0x80);
  EXPECT_EQ(hid_usage_for_key(KEY_POWER), 0x66);
  EXPECT_EQ(hid_usage_for_key(BTN_LEFT), 0);  // a button, not a key
  EXPECT_EQ(hid_usage_for_key(100000), 0);
}

struct Dev {
  Dev() : d(libevdev_new()) {}
  ~Dev() { libevdev_free(d); }
  void key(unsigned code) { libevdev_enable_event_code(d, EV_KEY, code, nullptr); }
  void rel(unsigned code) { libevdev_enable_event_code(d, EV_REL, code, nullptr); }
  void abs(unsigned code, int max) {
    input_absinfo a{
        .value = 0, .minimum = 0, .maximum = max, .fuzz = 0, .flat = 0, .resolution = 10};
    libevdev_enable_event_code(d, EV_ABS, code, &a);
  }
  libevdev* d;
};

TEST(EvdevInputClassify, KeyboardsMiceTouchscreensAndWhatIsLeftOut) {
  Dev kbd;
  kbd.key(KEY_A);
  kbd.key(KEY_B);
  EXPECT_EQ(EvdevInputSource::classify(kbd.d), Functions{HidInputFunction::kKeyboard});

  Dev phone_keys;  // gpio-keys on a phone: volume and power only
  phone_keys.key(KEY_VOLUMEUP);
  phone_keys.key(KEY_POWER);
  EXPECT_EQ(EvdevInputSource::classify(phone_keys.d), Functions{HidInputFunction::kKeyboard});

  Dev mouse;
  mouse.rel(REL_X);
  mouse.rel(REL_Y);
  mouse.key(BTN_LEFT);
  EXPECT_EQ(EvdevInputSource::classify(mouse.d), Functions{HidInputFunction::kMouse});

  Dev touchscreen;
  touchscreen.abs(ABS_MT_SLOT, 9);
  touchscreen.abs(ABS_MT_POSITION_X, 1079);
  touchscreen.abs(ABS_MT_POSITION_Y, 2339);
  touchscreen.abs(ABS_MT_TRACKING_ID, 65535);
  touchscreen.key(BTN_TOUCH);
  EXPECT_EQ(EvdevInputSource::classify(touchscreen.d), Functions{HidInputFunction::kTouch});

  Dev combo;  // a keyboard with a trackpoint
  combo.key(KEY_A);
  combo.rel(REL_X);
  combo.rel(REL_Y);
  EXPECT_EQ(EvdevInputSource::classify(combo.d),
            (Functions{HidInputFunction::kKeyboard, HidInputFunction::kMouse}));

  Dev touchpad;  // relative by nature: not presented as a touchscreen
  touchpad.abs(ABS_X, 1000);
  touchpad.abs(ABS_Y, 1000);
  touchpad.key(BTN_TOUCH);
  libevdev_enable_property(touchpad.d, INPUT_PROP_POINTER);
  EXPECT_TRUE(EvdevInputSource::classify(touchpad.d).empty());

  Dev accel;  // a motion sensor belongs to --sensors
  libevdev_enable_property(accel.d, INPUT_PROP_ACCELEROMETER);
  accel.abs(ABS_X, 1000);
  accel.abs(ABS_Y, 1000);
  EXPECT_TRUE(EvdevInputSource::classify(accel.d).empty());

  Dev buttons_only;
  buttons_only.key(BTN_LEFT);
  EXPECT_TRUE(EvdevInputSource::classify(buttons_only.d).empty());
}

}  // namespace
}  // namespace devices
