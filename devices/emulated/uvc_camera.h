// devices::UvcCamera: a USB Video Class 1.1 webcam emulated on the chapter-9 engine, streaming
// TestPattern frames (a frame counter in each) so a receiver can count drops and duplicates.
//
// Ownership and threading: as EmulatedDevice — owned by the exporting daemon, lives on its loop.
// Time comes from the injected Timer and Clock (set_clock); without them nothing streams.
//
// What a host sees (UVC 1.1 and its MJPEG / Uncompressed payload specifications):
//  - Identity 1d6b:0102 (the Linux UVC gadget's ids), class EF/02/01 with an interface
//    association (class 0e, subclass 03) over VideoControl interface 0 and VideoStreaming
//    interface 1. High speed.
//  - VideoControl: camera terminal 1 → processing unit 2 (brightness −64..64, contrast 0..95,
//    GET_CUR/MIN/MAX/RES/DEF/INFO/LEN and SET_CUR) → output terminal 3 (streaming). No status
//    interrupt endpoint. A refused request stalls and records its reason in the request error
//    code control (VC interface, selector 2).
//  - Formats: 1 = MJPEG 640x480 and 1280x720 at 30 or 15 fps; 2 = YUYV 640x480 at 30 or 15 fps and
//    1280x720 at 10 or 5 fps (1280x720 YUYV at 30 fps needs 55 MB/s, more than a high-speed
//    isochronous endpoint carries; real webcams offer it at 10 fps or less).
//  - Probe/commit: SET_CUR takes a 26- or 34-byte block; the camera answers GET_CUR with what it
//    will do (the format and frame asked for when they exist — else the default —, the nearest
//    interval it offers, its dwMaxVideoFrameSize and dwMaxPayloadTransferSize). A commit while
//    the stream runs is accepted when it changes nothing and refused (stall, "wrong state")
//    otherwise.
//  - Isochronous transport (default): interface 1 alternate settings 1–5 carry iso IN 0x81 with
//    rising bandwidth — 512 B, 1024 B, 2×1024 B and 3×1000 B per millisecond (bInterval 4) and
//    3×1024 B per microframe (bInterval 1). The camera asks for the smallest that carries the
//    committed stream: MJPEG 640x480 → alt 3, MJPEG 1280x720 → alt 4, YUYV → alt 5. Selecting an
//    alternate setting > 0 starts the stream, alternate 0 stops it.
//  - Bulk transport (options.transport = bulk): interface 1 has only alternate 0 with bulk IN
//    0x81, a byte stream of payloads of dwMaxPayloadTransferSize (header + frame data; a frame's
//    last payload is shorter and ends with a short packet or a zero-length packet) that
//    transfers cut where they end. The stream starts with the first transfer after a commit and
//    stops at CLEAR_FEATURE(ENDPOINT_HALT) or SET_INTERFACE.
//  - Timing: frame n of a stream exists at start + n × interval. Isochronous transfers complete
//    when the last of their service intervals has passed, each packet holding what the camera
//    sent in that interval: a 2-byte payload header (FID toggling per frame, EOF on a frame's last
//    payload, EOH) and up to the endpoint's bytes per interval, or nothing between frames. A
//    frame waits while the host has no transfer queued; when two frames wait the newest is
//    dropped (counted) — the counter still advances, so receivers see the gap.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/emulated/emulated_device.h"
#include "devices/emulated/test_pattern.h"
#include "usb/uvc/uvc_streaming.h"

namespace devices {

struct UvcCameraOptions {
  enum class Transport : uint8_t { kIsochronous, kBulk };
  Transport transport = Transport::kIsochronous;
  std::string manufacturer = "vusb";
  std::string product = "vusb Camera";
  std::string serial = "0001";
  uint32_t bulk_payload = 32 * 1024;  // dwMaxPayloadTransferSize of the bulk variant
};

// "key=value,..." (transport=iso|bulk, serial=...). Used by "emulated:uvc-camera?..." sources.
usb::Result<UvcCameraOptions> parse_uvc_camera_options(std::string_view text);

class UvcCamera : public EmulatedDevice {
 public:
  static constexpr uint16_t kVendorId = 0x1d6b;
  static constexpr uint16_t kProductId = 0x0102;
  static constexpr uint8_t kControlInterface = 0;
  static constexpr uint8_t kStreamingInterface = 1;
  static constexpr uint8_t kEndpoint = 0x81;
  static constexpr uint8_t kCameraTerminal = 1;
  static constexpr uint8_t kProcessingUnit = 2;
  static constexpr uint8_t kOutputTerminal = 3;
  static constexpr uint32_t kClockFrequency = 48'000'000;  // dwClockFrequency, Hz
  static constexpr uint8_t kMjpegFormat = 1;
  static constexpr uint8_t kYuyvFormat = 2;

  struct Stats {
    uint64_t frames_sent = 0;     // frames whose last payload left
    uint64_t frames_dropped = 0;  // frames the host was too slow for
    uint64_t payloads = 0;
    uint64_t empty_packets = 0;  // iso packets with nothing to send
    uint64_t streams = 0;        // stream starts
  };

  explicit UvcCamera(UvcCameraOptions options = {}, usb::DeviceLocation location = {});
  ~UvcCamera() override;

  using Timer = std::function<void(std::chrono::microseconds, std::move_only_function<void()>)>;
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  void set_clock(Timer timer, Clock clock);

  static SpeedDescriptors make_descriptors(const UvcCameraOptions& options);
  // The VideoStreaming interface the camera offers (formats, frames, intervals).
  static usb::uvc::StreamingInterface streaming_interface(const UvcCameraOptions& options);

  const Stats& stats() const { return stats_; }
  bool streaming() const { return stream_.has_value(); }
  const usb::uvc::StreamingControl& committed() const { return committed_; }
  int brightness() const { return brightness_; }
  int contrast() const { return contrast_; }
  // The next frame counter the camera will produce (counters are per camera, never reused).
  uint32_t next_counter() const { return next_counter_; }

 protected:
  ControlReply on_control_request(const usb::SetupPacket& setup, std::span<uint8_t> data) override;
  void on_transfer(usb::Transfer& transfer, const usb::EndpointDescriptor& endpoint) override;
  size_t on_transfer_aborted(usb::Transfer& transfer) override;
  void on_configuration_changed(uint8_t value) override;
  void on_interface_changed(uint8_t interface, uint8_t alternate) override;
  void on_toggle_reset(uint8_t address) override;

 private:
  struct Frame {
    uint32_t counter = 0;
    std::vector<uint8_t> bytes;
    size_t sent = 0;
  };
  struct Stream {
    usb::uvc::StreamingControl control;
    std::chrono::steady_clock::time_point start;
    std::chrono::nanoseconds frame_interval;
    std::chrono::nanoseconds service_interval;  // iso: the endpoint's (micro)frame period
    size_t bytes_per_interval = 0;              // iso: what one packet may carry
    uint64_t next_slot = 0;                     // iso: the next service interval not yet used
    uint64_t frames_due = 0;                    // frames produced (or dropped) so far
    bool fid = false;
    std::deque<Frame> queue;
    std::unique_ptr<TestPattern> pattern;
    std::vector<uint8_t> bulk_payload;  // bulk: the payload being sent, and how far
    size_t bulk_pos = 0;
    bool bulk_zlp = false;  // bulk: a zero-length packet ends the last payload
    bool armed = false;     // a timer for the oldest pending transfer is running
    usb::Transfer* armed_for = nullptr;
    uint64_t armed_first_slot = 0;
    uint64_t generation = 0;
  };

  ControlReply control_request(const usb::SetupPacket& setup, std::span<uint8_t> data);
  ControlReply processing_unit(const usb::SetupPacket& setup, std::span<uint8_t> data);
  ControlReply streaming_control(const usb::SetupPacket& setup, std::span<uint8_t> data);
  ControlReply refuse(uint8_t code);
  // The camera's answer to a probe: what it would stream for `asked`.
  usb::uvc::StreamingControl negotiate(const usb::uvc::StreamingControl& asked) const;
  uint32_t payload_size(uint8_t format, const usb::uvc::FrameInfo& frame, uint32_t interval) const;

  void start_stream(size_t bytes_per_interval, std::chrono::nanoseconds service_interval);
  void stop_stream();
  // Produces the frames due by `t` (queues at most two; the rest are dropped).
  void produce(std::chrono::steady_clock::time_point t);
  // Fills `out` with the next payload (header + data) of at most `capacity` bytes; 0 when no frame
  // is waiting.
  size_t next_payload(std::span<uint8_t> out, size_t capacity);
  void serve();  // arms the timer for the oldest pending transfer
  void complete_iso(usb::Transfer& transfer, uint64_t first_slot);
  void complete_bulk(usb::Transfer& transfer);
  bool bulk_ready() const;

  UvcCameraOptions options_;
  usb::uvc::StreamingInterface streaming_;
  Timer timer_;
  Clock clock_;
  usb::uvc::StreamingControl probe_;
  usb::uvc::StreamingControl committed_;
  bool ever_committed_ = false;
  uint8_t error_code_ = usb::uvc::error_code::kNoError;
  int brightness_ = 0;
  int contrast_ = 32;
  uint32_t next_counter_ = 0;
  std::optional<Stream> stream_;
  bool serving_ = false;
  uint64_t generation_ = 0;
  Stats stats_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace devices
