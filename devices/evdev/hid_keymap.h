// Linux input key codes (linux/input-event-codes.h) to USB HID Keyboard/Keypad page usages
// (HID Usage Tables, page 0x07) — the inverse of the table Linux's hid-input uses to turn a USB
// keyboard's usages into key codes, so a key pressed on the source machine arrives in the guest
// as the same key code. Codes with no Keyboard-page usage (media keys on the Consumer page,
// buttons) map to 0.
#pragma once

#include <cstdint>

namespace devices {

uint8_t hid_usage_for_key(unsigned code);

}  // namespace devices
