// devices::HidInputDevice: an ordinary USB HID input device — keyboard, mouse, touchscreen, or a
// composite of them — fed by an input source (devices/evdev/input_source.h: a keyboard, mouse or
// phone touchscreen read with libevdev). Every host's generic HID driver takes it: Linux's
// hid-generic (keyboard, mouse) and hid-multitouch (touchscreen), a BIOS through the boot
// protocol.
//
// Ownership and threading: as EmulatedDevice — owned by the exporting daemon, lives on its loop;
// sources call key() / pointer() / touch() on that loop.
//
// What a host sees (HID 1.11, HID Usage Tables 1.3, Microsoft's multi-touch descriptor layout
// that Linux's hid-multitouch reads):
//  - Full speed, one HID interface per function, each with its own interrupt IN endpoint
//    (0x81, 0x82, 0x83 in the order keyboard, mouse, touch).
//  - Keyboard: boot subclass, protocol 1; the boot report (modifiers, reserved, six key usages;
//    a seventh key held at once reports ErrorRollOver in every slot) and a five-LED output
//    report (SET_REPORT(Output) — what hid-input sends when a guest toggles Caps Lock — reaches
//    the source through on_leds). Report protocol and boot protocol use the same layout.
//  - Mouse: boot subclass, protocol 2; buttons 1..5, X, Y (relative, −127..127), wheel and AC Pan
//    (−127..127). Motion accumulates between polls and goes out in steps of at most 127, so none
//    is lost; a button change starts a new report, so no click is lost. In boot protocol only the
//    first three bytes count, as the boot layout says.
//  - Touchscreen: Digitizer page, application Touch Screen; up to `max_contacts` Finger
//    collections (Tip Switch, Contact Identifier, X, Y absolute over the source's range), Contact
//    Count, and a feature report with Contact Count Maximum. Report ID 1 input, 2 feature.
//    A lifted contact is reported once with Tip Switch 0.
//  - GET_REPORT(Input) answers the current state; SET_IDLE / GET_IDLE / SET_PROTOCOL /
//    GET_PROTOCOL are kept per interface.
//  - Reports wait in a per-interface queue (at most kMaxQueued) until the host polls. Keyboard
//    reports are whole states: a full queue replaces its newest with the current state. Touch
//    reports are changes (a lift is reported once): a full queue is replaced by the way from what
//    the host was last sent to the contacts now, lifts included. A full mouse queue folds motion
//    and button changes into its newest report (clicks pile up only while nobody reads the
//    mouse). A SET_CONFIGURATION or reset empties the queues (nothing stale is replayed).
//  - Touch: contacts that continue or lift go in one report, new contacts in the next — Linux
//    frees a lifted contact's slot only after the report that lifts it.
//  - An interrupt IN transfer shorter than the report completes with kBabble (the report stays).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "devices/emulated/emulated_device.h"

namespace devices {

enum class HidInputFunction : uint8_t { kKeyboard = 0, kMouse = 1, kTouch = 2 };

struct HidTouchRange {
  int32_t min_x = 0, max_x = 32767, min_y = 0, max_y = 32767;
  // Physical size in tenths of a millimetre (0 = unknown): lets the host compute resolution.
  int32_t width_tenth_mm = 0, height_tenth_mm = 0;
};

struct HidInputOptions {
  std::set<HidInputFunction> functions = {HidInputFunction::kKeyboard};
  std::string manufacturer = "vusb";
  std::string product = "vusb Input";
  std::string serial = "0001";
  uint16_t product_id = 0x0002;
  uint8_t max_contacts = 5;  // touch: 1..10
  HidTouchRange touch;
};

class HidInputDevice : public EmulatedDevice {
 public:
  static constexpr uint16_t kVendorId = 0x1209;  // pid.codes
  static constexpr size_t kMaxQueued = 64;
  static constexpr uint8_t kMaxContacts = 10;
  // LED bits of the keyboard's output report (HID page 0x08 usages 1..5).
  static constexpr uint8_t kLedNumLock = 0x01, kLedCapsLock = 0x02, kLedScrollLock = 0x04,
                           kLedCompose = 0x08, kLedKana = 0x10;
  static constexpr uint8_t kTouchInputId = 1, kTouchFeatureId = 2;

  explicit HidInputDevice(HidInputOptions options = {}, usb::DeviceLocation location = {});
  ~HidInputDevice() override;

  // Options with their bounds applied (1..kMaxContacts contacts, non-empty ranges, a function).
  static HidInputOptions checked(HidInputOptions options);
  static SpeedDescriptors make_descriptors(const HidInputOptions& options);
  static std::vector<uint8_t> report_descriptor(HidInputFunction function,
                                                const HidInputOptions& options);

  // Keyboard: a key of the Keyboard/Keypad page (0x07) went down or up. Modifiers are usages
  // 0xe0..0xe7. Usages 0 and above 0xe7 are ignored.
  void key(uint8_t usage, bool down);
  // The host set the keyboard LEDs (kLed* bits).
  std::function<void(uint8_t)> on_leds;
  uint8_t leds() const { return leds_; }

  // Mouse: buttons (bit 0 left, 1 right, 2 middle, 3 side, 4 extra) and relative motion.
  void pointer(uint8_t buttons, int32_t dx, int32_t dy, int32_t wheel = 0, int32_t pan = 0);

  // Touch: the contacts now on the screen (a full frame; those missing from it were lifted).
  struct Contact {
    uint8_t id = 0;  // the source's contact identifier (0..255)
    int32_t x = 0, y = 0;
  };
  void touch(const std::vector<Contact>& contacts);

  // The reports waiting for the host's poll on a function's endpoint.
  size_t queued(HidInputFunction function) const;
  // The report the next poll of this function would get (its current state when none waits).
  std::vector<uint8_t> next_report(HidInputFunction function) const;
  uint8_t endpoint_of(HidInputFunction function) const;

 protected:
  ControlReply on_control_request(const usb::SetupPacket& setup, std::span<uint8_t> data) override;
  void on_transfer(usb::Transfer& transfer, const usb::EndpointDescriptor& endpoint) override;
  size_t on_transfer_aborted(usb::Transfer& transfer) override;
  void on_configuration_changed(uint8_t value) override;

 private:
  struct Checked {};  // options already through checked()
  HidInputDevice(HidInputOptions options, usb::DeviceLocation location, Checked);

  struct KeyboardState {
    uint8_t modifiers = 0;
    std::vector<uint8_t> keys;  // pressed, oldest first
    bool operator==(const KeyboardState&) const = default;
  };
  struct MouseReport {
    uint8_t buttons = 0;
    int32_t dx = 0, dy = 0, wheel = 0, pan = 0;
  };
  struct TouchFrame {
    std::vector<std::pair<Contact, bool>> contacts;  // (contact, tip down)
  };
  struct Interface {
    HidInputFunction function;
    uint8_t number;
    uint8_t endpoint;
    uint8_t idle = 0;
    uint8_t protocol = 1;  // report protocol
    std::vector<uint8_t> report_descriptor;
  };

  const Interface* interface_of(HidInputFunction function) const;
  std::vector<uint8_t> keyboard_report(const KeyboardState& state) const;
  std::vector<uint8_t> mouse_report(MouseReport& report, bool consume) const;
  std::vector<uint8_t> touch_report(const TouchFrame& frame) const;
  void deliver(HidInputFunction function);
  // The reports that take the host from contacts `from` to contacts `to`.
  std::vector<TouchFrame> touch_frames(const std::map<uint8_t, Contact>& from,
                                       const std::map<uint8_t, Contact>& to) const;

  HidInputOptions options_;
  std::vector<Interface> interfaces_;
  // Keyboard
  KeyboardState keyboard_;
  std::deque<KeyboardState> keyboard_queue_;
  uint8_t leds_ = 0;
  // Mouse
  uint8_t buttons_ = 0;
  std::deque<MouseReport> mouse_queue_;
  // Touch
  std::map<uint8_t, Contact> contacts_;         // down now (as queued), by id
  std::map<uint8_t, Contact> touch_delivered_;  // down as far as the host was told
  std::deque<TouchFrame> touch_queue_;
  std::array<bool, 3> delivering_{};  // per function: a deliver() loop is running
};

}  // namespace devices
