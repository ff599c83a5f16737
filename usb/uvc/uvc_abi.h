// USB Video Class wire facts (UVC 1.1, "Universal Serial Bus Device Class Definition for Video
// Devices", revision 1.1, and its payload specifications): class codes, descriptor subtypes,
// request codes, control selectors, the probe/commit block layout and the payload header bits.
// Shared by the emulated camera (devices/emulated) and vusbd's camera sharing (vmm-frontend).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace usb::uvc {

// Class codes (A.1–A.3).
constexpr uint8_t kClassVideo = 0x0e;
constexpr uint8_t kSubclassVideoControl = 0x01;
constexpr uint8_t kSubclassVideoStreaming = 0x02;
constexpr uint8_t kSubclassInterfaceCollection = 0x03;

// Class-specific descriptor types (A.4) and subtypes (A.5, A.6).
constexpr uint8_t kCsInterface = 0x24;
constexpr uint8_t kCsEndpoint = 0x25;
namespace vc {
constexpr uint8_t kHeader = 0x01;
constexpr uint8_t kInputTerminal = 0x02;
constexpr uint8_t kOutputTerminal = 0x03;
constexpr uint8_t kSelectorUnit = 0x04;
constexpr uint8_t kProcessingUnit = 0x05;
constexpr uint8_t kExtensionUnit = 0x06;
}  // namespace vc
namespace vs {
constexpr uint8_t kInputHeader = 0x01;
constexpr uint8_t kOutputHeader = 0x02;
constexpr uint8_t kStillImageFrame = 0x03;
constexpr uint8_t kFormatUncompressed = 0x04;
constexpr uint8_t kFrameUncompressed = 0x05;
constexpr uint8_t kFormatMjpeg = 0x06;
constexpr uint8_t kFrameMjpeg = 0x07;
constexpr uint8_t kColorFormat = 0x0d;
}  // namespace vs

// Terminal types (B.1–B.3).
constexpr uint16_t kTerminalStreaming = 0x0101;
constexpr uint16_t kTerminalCamera = 0x0201;

// Class-specific requests (A.8).
namespace request {
constexpr uint8_t kSetCur = 0x01;
constexpr uint8_t kGetCur = 0x81;
constexpr uint8_t kGetMin = 0x82;
constexpr uint8_t kGetMax = 0x83;
constexpr uint8_t kGetRes = 0x84;
constexpr uint8_t kGetLen = 0x85;
constexpr uint8_t kGetInfo = 0x86;
constexpr uint8_t kGetDef = 0x87;
}  // namespace request

// GET_INFO bits (4.1.2 table 4-3).
constexpr uint8_t kInfoGet = 0x01;
constexpr uint8_t kInfoSet = 0x02;

// Control selectors: VideoControl interface (A.9.1), processing unit (A.9.5), VideoStreaming
// interface (A.9.7).
constexpr uint8_t kVcRequestErrorCodeControl = 0x02;
constexpr uint8_t kPuBrightnessControl = 0x02;
constexpr uint8_t kPuContrastControl = 0x03;
constexpr uint8_t kVsProbeControl = 0x01;
constexpr uint8_t kVsCommitControl = 0x02;

// bRequestErrorCode values (4.2.1.2).
namespace error_code {
constexpr uint8_t kNoError = 0x00;
constexpr uint8_t kNotReady = 0x01;
constexpr uint8_t kWrongState = 0x02;
constexpr uint8_t kOutOfRange = 0x04;
constexpr uint8_t kInvalidUnit = 0x05;
constexpr uint8_t kInvalidControl = 0x06;
constexpr uint8_t kInvalidRequest = 0x07;
constexpr uint8_t kUnknown = 0xff;
}  // namespace error_code

// Video probe and commit controls (4.3.1.1 table 4-47): 26 bytes in UVC 1.0, 34 in 1.1.
// Offsets of the fields, all little endian.
namespace probe {
constexpr size_t kHint = 0;                 // bmHint, 2
constexpr size_t kFormatIndex = 2;          // bFormatIndex
constexpr size_t kFrameIndex = 3;           // bFrameIndex
constexpr size_t kFrameInterval = 4;        // dwFrameInterval, 100 ns units
constexpr size_t kKeyFrameRate = 8;         // wKeyFrameRate
constexpr size_t kPFrameRate = 10;          // wPFrameRate
constexpr size_t kCompQuality = 12;         // wCompQuality
constexpr size_t kCompWindowSize = 14;      // wCompWindowSize
constexpr size_t kDelay = 16;               // wDelay, ms
constexpr size_t kMaxVideoFrameSize = 18;   // dwMaxVideoFrameSize
constexpr size_t kMaxPayloadTransfer = 22;  // dwMaxPayloadTransferSize
constexpr size_t kClockFrequency = 26;      // dwClockFrequency (1.1)
constexpr size_t kFramingInfo = 30;         // bmFramingInfo (1.1)
constexpr size_t kPreferredVersion = 31;    // bPreferedVersion (1.1)
constexpr size_t kMinVersion = 32;          // bMinVersion (1.1)
constexpr size_t kMaxVersion = 33;          // bMaxVersion (1.1)
constexpr size_t kSize10 = 26;
constexpr size_t kSize11 = 34;
}  // namespace probe
// bmFramingInfo bits: the payload headers carry FID (bit 0) and EOF (bit 1).
constexpr uint8_t kFramingFid = 0x01;
constexpr uint8_t kFramingEof = 0x02;

// Payload header (2.4.3.3, table 2-5): bHeaderLength then bmHeaderInfo.
namespace header {
constexpr uint8_t kFid = 0x01;  // frame id, toggles at every frame start
constexpr uint8_t kEof = 0x02;  // end of frame
constexpr uint8_t kPts = 0x04;  // a presentation time stamp follows (4 bytes)
constexpr uint8_t kScr = 0x08;  // a source clock reference follows (6 bytes)
constexpr uint8_t kRes = 0x10;
constexpr uint8_t kSti = 0x20;  // still image
constexpr uint8_t kErr = 0x40;  // the device could not deliver this payload properly
constexpr uint8_t kEoh = 0x80;  // end of header
}  // namespace header

// The YUY2 format GUID (32595559-0000-0010-8000-00AA00389B71; UVC payload "Uncompressed" 2.2).
constexpr std::array<uint8_t, 16> kGuidYuy2 = {'Y',  'U',  'Y',  '2',  0x00, 0x00, 0x10, 0x00,
                                               0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71};

}  // namespace usb::uvc
