#include "devices/emulated/uvc_camera.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "devices/emulated/device_options.h"
#include "usb/core/byte_order.h"

namespace devices {

namespace uvc = usb::uvc;
using std::chrono::microseconds;
using std::chrono::nanoseconds;
using usb::Status;
using usb::Transfer;

namespace {

constexpr uint32_t k30Fps = 333'333;  // dwFrameInterval, 100 ns units
constexpr uint32_t k15Fps = 666'666;
constexpr uint32_t k10Fps = 1'000'000;
constexpr uint32_t k5Fps = 2'000'000;
constexpr size_t kHeaderSize = 2;  // bHeaderLength + bmHeaderInfo: no PTS / SCR
constexpr size_t kMaxQueuedFrames = 2;
constexpr uint16_t kBulkMaxPacket = 512;

// Isochronous alternate settings 1..5 of the streaming interface: wMaxPacketSize (bits 12:11 =
// additional transactions per microframe) and bInterval (2^(bInterval-1) microframes).
struct IsoAlt {
  uint16_t max_packet_size;
  uint8_t interval;
};
constexpr IsoAlt kIsoAlts[] = {
    {512, 4}, {1024, 4}, {(1 << 11) | 1024, 4}, {(2 << 11) | 1000, 4}, {(2 << 11) | 1024, 1}};

size_t bytes_per_interval(uint16_t max_packet_size) {
  return size_t{max_packet_size & 0x7ffu} * (((max_packet_size >> 11) & 3u) + 1);
}

// Brightness and contrast (UVC 4.2.2.3.2/3): two-byte values; brightness signed.
constexpr int kBrightnessMin = -64, kBrightnessMax = 64, kBrightnessDef = 0;
constexpr int kContrastMin = 0, kContrastMax = 95, kContrastDef = 32;

uvc::FrameInfo frame(uint8_t index, uint16_t w, uint16_t h, uint32_t bytes,
                     std::vector<uint32_t> intervals) {
  uvc::FrameInfo f;
  f.index = index;
  f.width = w;
  f.height = h;
  f.max_frame_size = bytes;
  f.default_interval = intervals.front();
  const uint64_t slowest = 10'000'000ull / intervals.back();
  const uint64_t fastest = 10'000'000ull / intervals.front();
  f.min_bit_rate = static_cast<uint32_t>(std::min<uint64_t>(bytes * 8ull * slowest, UINT32_MAX));
  f.max_bit_rate = static_cast<uint32_t>(std::min<uint64_t>(bytes * 8ull * fastest, UINT32_MAX));
  f.intervals = std::move(intervals);
  return f;
}

std::vector<uint8_t> control_descriptors() {
  std::vector<uint8_t> out;
  auto put16 = [&](uint16_t v) {
    out.push_back(static_cast<uint8_t>(v));
    out.push_back(static_cast<uint8_t>(v >> 8));
  };
  // VC interface header (UVC 3.7.2): bcdUVC 1.1, one streaming interface in the collection.
  out.insert(out.end(), {13, uvc::kCsInterface, uvc::vc::kHeader});
  put16(0x0110);
  put16(0);  // wTotalLength, patched below
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<uint8_t>(UvcCamera::kClockFrequency >> (8 * i)));
  out.insert(out.end(), {1, UvcCamera::kStreamingInterface});
  // Camera terminal (3.7.2.3): no camera controls.
  out.insert(out.end(),
             {18, uvc::kCsInterface, uvc::vc::kInputTerminal, UvcCamera::kCameraTerminal});
  put16(uvc::kTerminalCamera);
  out.insert(out.end(), {0, 0});        // bAssocTerminal, iTerminal
  put16(0);                             // wObjectiveFocalLengthMin
  put16(0);                             // wObjectiveFocalLengthMax
  put16(0);                             // wOcularFocalLength
  out.insert(out.end(), {3, 0, 0, 0});  // bControlSize, bmControls
  // Processing unit (3.7.2.5, 1.1 layout with bmVideoStandards): brightness (bit 0), contrast
  // (bit 1).
  out.insert(out.end(), {12, uvc::kCsInterface, uvc::vc::kProcessingUnit,
                         UvcCamera::kProcessingUnit, UvcCamera::kCameraTerminal});
  put16(0);                                // wMaxMultiplier
  out.insert(out.end(), {2, 0x03, 0x00});  // bControlSize, bmControls
  out.insert(out.end(), {0, 0});           // iProcessing, bmVideoStandards
  // Output terminal (3.7.2.2): USB streaming, fed by the processing unit.
  out.insert(out.end(),
             {9, uvc::kCsInterface, uvc::vc::kOutputTerminal, UvcCamera::kOutputTerminal});
  put16(uvc::kTerminalStreaming);
  out.insert(out.end(), {0, UvcCamera::kProcessingUnit, 0});
  usb::store_le16(&out[5], static_cast<uint16_t>(out.size()));
  return out;
}

std::span<const uint8_t> as_bytes16(std::array<uint8_t, 2>& b, int v) {
  usb::store_le16(b.data(), static_cast<uint16_t>(static_cast<int16_t>(v)));
  return b;
}

}  // namespace

usb::Result<UvcCameraOptions> parse_uvc_camera_options(std::string_view text) {
  UvcCameraOptions o;
  auto bad = [](std::string msg) -> usb::Result<void> {
    return usb::Error::make(usb::Error::Code::kInvalidArgument, "uvc-camera: " + std::move(msg));
  };
  auto r =
      for_each_option(text, "uvc-camera", [&](const std::string& key, const std::string& value) {
        if (key == "transport") {
          if (value == "iso")
            o.transport = UvcCameraOptions::Transport::kIsochronous;
          else if (value == "bulk")
            o.transport = UvcCameraOptions::Transport::kBulk;
          else
            return bad("transport must be iso or bulk, not '" + value + "'");
        } else if (key == "serial") {
          if (value.empty() || value.size() > 64) return bad("serial must be 1..64 characters");
          o.serial = value;
        } else if (key == "bulk_payload") {
          const auto n = option_number(value);
          if (!n || *n < 512 || *n > 1 << 20)
            return bad("bulk_payload must be 512..1048576, not '" + value + "'");
          o.bulk_payload = static_cast<uint32_t>(*n);
        } else {
          return bad("unknown option '" + key + "' (known: transport, serial, bulk_payload)");
        }
        return usb::Result<void>{};
      });
  if (!r) return std::unexpected(r.error());
  return o;
}

uvc::StreamingInterface UvcCamera::streaming_interface(const UvcCameraOptions&) {
  uvc::StreamingInterface s;
  s.interface = kStreamingInterface;
  s.endpoint = kEndpoint;
  s.terminal_link = kOutputTerminal;
  uvc::FormatInfo mjpeg{.index = kMjpegFormat, .kind = uvc::FormatKind::kMjpeg, .frames = {}};
  mjpeg.frames = {frame(1, 640, 480, 640 * 480 * 2, {k30Fps, k15Fps}),
                  frame(2, 1280, 720, 1280 * 720 * 2, {k30Fps, k15Fps})};
  uvc::FormatInfo yuyv{.index = kYuyvFormat, .kind = uvc::FormatKind::kUncompressed, .frames = {}};
  yuyv.guid = uvc::kGuidYuy2;
  yuyv.bits_per_pixel = 16;
  yuyv.frames = {frame(1, 640, 480, 640 * 480 * 2, {k30Fps, k15Fps}),
                 frame(2, 1280, 720, 1280 * 720 * 2, {k10Fps, k5Fps})};
  s.formats = {std::move(mjpeg), std::move(yuyv)};
  return s;
}

SpeedDescriptors UvcCamera::make_descriptors(const UvcCameraOptions& options) {
  usb::DescriptorSet set = usb2_descriptor_set(kVendorId, kProductId, options.manufacturer,
                                               options.product, options.serial);
  set.device.device_class = 0xef;  // miscellaneous: interface association (IAD ECN)
  set.device.device_subclass = 0x02;
  set.device.device_protocol = 0x01;

  usb::ConfigurationDescriptor config;
  config.value = 1;
  config.num_interfaces = 2;
  config.attributes = usb::kConfigAttrOne;
  config.max_power = 250;  // 500 mA

  usb::InterfaceDescriptor vc;
  vc.number = kControlInterface;
  vc.interface_class = uvc::kClassVideo;
  vc.interface_subclass = uvc::kSubclassVideoControl;
  vc.string_index = 2;
  vc.association = usb::InterfaceAssociation{.first_interface = kControlInterface,
                                             .interface_count = 2,
                                             .function_class = uvc::kClassVideo,
                                             .function_subclass = uvc::kSubclassInterfaceCollection,
                                             .function_protocol = 0,
                                             .function_index = 2};
  vc.extra = control_descriptors();
  config.interfaces.push_back(std::move(vc));

  usb::InterfaceDescriptor vs;
  vs.number = kStreamingInterface;
  vs.interface_class = uvc::kClassVideo;
  vs.interface_subclass = uvc::kSubclassVideoStreaming;
  vs.extra = streaming_interface(options).build();
  if (options.transport == UvcCameraOptions::Transport::kBulk) {
    vs.endpoints.push_back({.address = kEndpoint,
                            .attributes = static_cast<uint8_t>(usb::TransferType::kBulk),
                            .max_packet_size = kBulkMaxPacket,
                            .interval = 0});
    config.interfaces.push_back(std::move(vs));
  } else {
    config.interfaces.push_back(vs);
    uint8_t alternate = 1;
    for (const IsoAlt& alt : kIsoAlts) {
      usb::InterfaceDescriptor a = vs;
      a.alternate = alternate++;
      a.extra.clear();
      // Isochronous, asynchronous (bits 3:2 = 01), data endpoint.
      a.endpoints.push_back({.address = kEndpoint,
                             .attributes = 0x05,
                             .max_packet_size = alt.max_packet_size,
                             .interval = alt.interval});
      config.interfaces.push_back(std::move(a));
    }
  }
  set.configurations.push_back(std::move(config));
  SpeedDescriptors sd;
  sd.high_speed = std::move(set);
  return sd;
}

UvcCamera::UvcCamera(UvcCameraOptions options, usb::DeviceLocation location)
    : EmulatedDevice(make_descriptors(options), usb::Speed::kHigh, std::move(location)),
      options_(std::move(options)),
      streaming_(streaming_interface(options_)) {
  probe_ = negotiate({});
  committed_ = probe_;
}

UvcCamera::~UvcCamera() {
  *alive_ = false;
  // Pending transfers complete in ~EmulatedDevice; nothing here may be touched after this.
  stream_.reset();
}

void UvcCamera::set_clock(Timer timer, Clock clock) {
  timer_ = std::move(timer);
  clock_ = std::move(clock);
}

// --- Negotiation ---

uint32_t UvcCamera::payload_size(uint8_t format, const uvc::FrameInfo& frame, uint32_t) const {
  if (options_.transport == UvcCameraOptions::Transport::kBulk) return options_.bulk_payload;
  // The alternate setting the host should pick is the smallest that carries this much per
  // service interval (see the class comment).
  if (format == kMjpegFormat) {
    return frame.width * frame.height <= 640 * 480
               ? bytes_per_interval(kIsoAlts[2].max_packet_size)
               : bytes_per_interval(kIsoAlts[3].max_packet_size);
  }
  return bytes_per_interval(kIsoAlts[4].max_packet_size);
}

uvc::StreamingControl UvcCamera::negotiate(const uvc::StreamingControl& asked) const {
  const uvc::FormatInfo* fmt = streaming_.find_format(asked.format_index);
  if (!fmt) fmt = streaming_.find_format(probe_.format_index);
  if (!fmt) fmt = &streaming_.formats.front();
  const uvc::FrameInfo* fr = fmt->find_frame(asked.frame_index);
  if (!fr) fr = fmt->find_frame(fmt->default_frame);
  if (!fr) fr = &fmt->frames.front();
  uvc::StreamingControl c;
  c.hint = asked.hint;
  c.format_index = fmt->index;
  c.frame_index = fr->index;
  c.frame_interval =
      asked.frame_interval ? fr->nearest(asked.frame_interval) : fr->default_interval;
  c.comp_quality = fmt->kind == uvc::FormatKind::kMjpeg ? 7500 : 0;
  c.max_video_frame_size = fr->max_frame_size;
  c.max_payload_transfer_size = payload_size(fmt->index, *fr, c.frame_interval);
  c.clock_frequency = kClockFrequency;
  c.framing_info = uvc::kFramingFid | uvc::kFramingEof;
  c.preferred_version = 1;
  c.min_version = 1;
  c.max_version = 1;
  return c;
}

// --- Control requests ---

EmulatedDevice::ControlReply UvcCamera::on_control_request(const usb::SetupPacket& setup,
                                                           std::span<uint8_t> data) {
  if (setup.type() != usb::RequestType::kClass || setup.recipient() != usb::Recipient::kInterface) {
    return stall();
  }
  ControlReply reply = control_request(setup, data);
  // The error code control reports the last request's outcome (4.2.1.2); reading it is not one.
  const bool reads_error = (setup.index & 0xff) == kControlInterface && (setup.index >> 8) == 0;
  if (reply.status == Status::kOk && !reads_error) error_code_ = uvc::error_code::kNoError;
  return reply;
}

EmulatedDevice::ControlReply UvcCamera::refuse(uint8_t code) {
  error_code_ = code;
  return stall();
}

EmulatedDevice::ControlReply UvcCamera::control_request(const usb::SetupPacket& setup,
                                                        std::span<uint8_t> data) {
  if (!active_config()) return refuse(uvc::error_code::kWrongState);
  const uint8_t interface = static_cast<uint8_t>(setup.index);
  const uint8_t entity = static_cast<uint8_t>(setup.index >> 8);
  if (interface == kStreamingInterface && entity == 0) return streaming_control(setup, data);
  if (interface != kControlInterface) return refuse(uvc::error_code::kInvalidUnit);
  if (entity == kProcessingUnit) return processing_unit(setup, data);
  if (entity == 0) {
    // The interface's own control: the request error code (4.2.1.2).
    if ((setup.value >> 8) != uvc::kVcRequestErrorCodeControl || data.empty()) {
      return refuse(uvc::error_code::kInvalidControl);
    }
    if (setup.request == uvc::request::kGetCur) {
      data[0] = error_code_;
      return ok(1);
    }
    if (setup.request == uvc::request::kGetInfo) {
      data[0] = uvc::kInfoGet;
      return ok(1);
    }
    return refuse(uvc::error_code::kInvalidRequest);
  }
  if (entity == kCameraTerminal || entity == kOutputTerminal) {
    return refuse(uvc::error_code::kInvalidControl);
  }
  return refuse(uvc::error_code::kInvalidUnit);
}

EmulatedDevice::ControlReply UvcCamera::processing_unit(const usb::SetupPacket& setup,
                                                        std::span<uint8_t> data) {
  const uint8_t selector = static_cast<uint8_t>(setup.value >> 8);
  int* value = nullptr;
  int lo = 0, hi = 0, def = 0;
  if (selector == uvc::kPuBrightnessControl) {
    value = &brightness_;
    lo = kBrightnessMin, hi = kBrightnessMax, def = kBrightnessDef;
  } else if (selector == uvc::kPuContrastControl) {
    value = &contrast_;
    lo = kContrastMin, hi = kContrastMax, def = kContrastDef;
  } else {
    return refuse(uvc::error_code::kInvalidControl);
  }
  std::array<uint8_t, 2> b{};
  auto answer = [&](std::span<const uint8_t> bytes) {
    const size_t n = std::min(bytes.size(), data.size());
    std::copy_n(bytes.begin(), n, data.begin());
    return ok(n);
  };
  switch (setup.request) {
    case uvc::request::kSetCur: {
      if (data.size() != 2) return refuse(uvc::error_code::kInvalidRequest);
      const int v = selector == uvc::kPuBrightnessControl
                        ? static_cast<int16_t>(usb::load_le16(data.data()))
                        : usb::load_le16(data.data());
      if (v < lo || v > hi) return refuse(uvc::error_code::kOutOfRange);
      *value = v;
      return ok(2);
    }
    case uvc::request::kGetCur:
      return answer(as_bytes16(b, *value));
    case uvc::request::kGetMin:
      return answer(as_bytes16(b, lo));
    case uvc::request::kGetMax:
      return answer(as_bytes16(b, hi));
    case uvc::request::kGetRes:
      return answer(as_bytes16(b, 1));
    case uvc::request::kGetDef:
      return answer(as_bytes16(b, def));
    case uvc::request::kGetLen:
      return answer(as_bytes16(b, 2));
    case uvc::request::kGetInfo: {
      const uint8_t info = uvc::kInfoGet | uvc::kInfoSet;
      return answer(std::span<const uint8_t>(&info, 1));
    }
    default:
      return refuse(uvc::error_code::kInvalidRequest);
  }
}

EmulatedDevice::ControlReply UvcCamera::streaming_control(const usb::SetupPacket& setup,
                                                          std::span<uint8_t> data) {
  const uint8_t selector = static_cast<uint8_t>(setup.value >> 8);
  if (selector != uvc::kVsProbeControl && selector != uvc::kVsCommitControl) {
    return refuse(uvc::error_code::kInvalidControl);
  }
  const bool probe = selector == uvc::kVsProbeControl;
  auto answer = [&](const uvc::StreamingControl& c) {
    c.encode(data);
    return ok(data.size());
  };
  switch (setup.request) {
    case uvc::request::kSetCur: {
      if (data.size() != uvc::probe::kSize10 && data.size() != uvc::probe::kSize11) {
        return refuse(uvc::error_code::kInvalidRequest);
      }
      auto asked = uvc::StreamingControl::parse(data);
      if (!asked) return refuse(uvc::error_code::kInvalidRequest);
      if (probe) {
        probe_ = negotiate(*asked);
        return ok(data.size());
      }
      // A commit names a format and frame the camera has (4.3.1.1.1).
      if (!streaming_.find_frame(asked->format_index, asked->frame_index)) {
        return refuse(uvc::error_code::kOutOfRange);
      }
      const uvc::StreamingControl next = negotiate(*asked);
      if (stream_ && !next.same_stream(stream_->control)) {
        return refuse(uvc::error_code::kWrongState);
      }
      committed_ = next;
      ever_committed_ = true;
      return ok(data.size());
    }
    case uvc::request::kGetCur:
      return answer(probe ? probe_ : committed_);
    case uvc::request::kGetDef:
      return answer(negotiate({}));
    case uvc::request::kGetMin:
    case uvc::request::kGetMax: {
      if (!probe) return refuse(uvc::error_code::kInvalidRequest);
      // The range over every format and frame the camera offers (4.3.1.1: GET_MIN/GET_MAX on
      // probe): the first frame at its shortest interval, the last at its longest.
      const bool min = setup.request == uvc::request::kGetMin;
      const uvc::FormatInfo& fmt = min ? streaming_.formats.front() : streaming_.formats.back();
      const uvc::FrameInfo& fr = min ? fmt.frames.front() : fmt.frames.back();
      uvc::StreamingControl asked;
      asked.format_index = fmt.index;
      asked.frame_index = fr.index;
      asked.frame_interval = min ? fr.intervals.front() : fr.intervals.back();
      return answer(negotiate(asked));
    }
    case uvc::request::kGetRes:
      if (!probe) return refuse(uvc::error_code::kInvalidRequest);
      return answer(uvc::StreamingControl{});
    case uvc::request::kGetLen: {
      if (data.size() < 2) return refuse(uvc::error_code::kInvalidRequest);
      usb::store_le16(data.data(), static_cast<uint16_t>(uvc::probe::kSize11));
      return ok(2);
    }
    case uvc::request::kGetInfo:
      if (data.empty()) return refuse(uvc::error_code::kInvalidRequest);
      data[0] = uvc::kInfoGet | uvc::kInfoSet;
      return ok(1);
    default:
      return refuse(uvc::error_code::kInvalidRequest);
  }
}

// --- Streaming ---

void UvcCamera::on_configuration_changed(uint8_t) {
  stop_stream();
}

void UvcCamera::on_interface_changed(uint8_t interface, uint8_t alternate) {
  if (interface != kStreamingInterface) return;
  stop_stream();
  if (options_.transport != UvcCameraOptions::Transport::kIsochronous || alternate == 0) return;
  const usb::EndpointDescriptor* ep = find_endpoint(kEndpoint);
  if (!ep) return;
  const unsigned exponent = std::clamp<unsigned>(ep->interval, 1, 16) - 1;
  start_stream(bytes_per_interval(ep->max_packet_size), microseconds(125) * (1u << exponent));
}

void UvcCamera::on_toggle_reset(uint8_t address) {
  // Bulk: CLEAR_FEATURE(ENDPOINT_HALT) is how a host stops the stream (UVC 2.4.3.2.2).
  if (address == kEndpoint && options_.transport == UvcCameraOptions::Transport::kBulk) {
    stop_stream();
  }
}

void UvcCamera::start_stream(size_t bpi, nanoseconds service_interval) {
  if (!clock_ || !timer_) return;
  Stream s;
  s.control = committed_;
  s.start = clock_();
  s.frame_interval = nanoseconds(uint64_t{committed_.frame_interval} * 100);
  s.service_interval = service_interval;
  s.bytes_per_interval = bpi;
  s.generation = ++generation_;
  const uvc::FormatInfo* fmt = streaming_.find_format(committed_.format_index);
  const uvc::FrameInfo* fr = streaming_.find_frame(committed_.format_index, committed_.frame_index);
  if (!fmt || !fr || s.frame_interval.count() <= 0) return;
  s.pattern = std::make_unique<TestPattern>(fmt->kind == uvc::FormatKind::kMjpeg
                                                ? TestPattern::Encoding::kMjpeg
                                                : TestPattern::Encoding::kYuyv,
                                            fr->width, fr->height);
  s.pattern->set_controls(brightness_, contrast_);
  stream_ = std::move(s);
  ++stats_.streams;
  serve();
}

void UvcCamera::stop_stream() {
  if (!stream_) return;
  stream_.reset();
  ++generation_;
}

void UvcCamera::produce(std::chrono::steady_clock::time_point t) {
  Stream& s = *stream_;
  if (t < s.start) return;
  const uint64_t due = static_cast<uint64_t>((t - s.start) / s.frame_interval) + 1;
  if (due <= s.frames_due) return;
  s.pattern->set_controls(brightness_, contrast_);
  // Frames due while two already wait are dropped; their counters are used up all the same.
  const uint64_t backlog = due - s.frames_due;
  const uint64_t room = kMaxQueuedFrames - std::min(kMaxQueuedFrames, s.queue.size());
  if (backlog > room) {
    const uint64_t dropped = backlog - room;
    stats_.frames_dropped += dropped;
    next_counter_ += static_cast<uint32_t>(dropped);
    s.frames_due += dropped;
  }
  for (; s.frames_due < due; ++s.frames_due) {
    auto bytes = s.pattern->frame(next_counter_);
    const uint32_t counter = next_counter_++;
    if (!bytes) {
      ++stats_.frames_dropped;
      continue;
    }
    s.queue.push_back({counter, std::move(*bytes), 0});
  }
}

size_t UvcCamera::next_payload(std::span<uint8_t> out, size_t capacity) {
  Stream& s = *stream_;
  capacity = std::min({capacity, out.size(), size_t{s.control.max_payload_transfer_size}});
  if (s.queue.empty() || capacity <= kHeaderSize) return 0;
  Frame& f = s.queue.front();
  if (f.sent == 0) s.fid = !s.fid;  // a new frame: the frame id toggles (2.4.3.3)
  const size_t n = std::min(capacity - kHeaderSize, f.bytes.size() - f.sent);
  std::copy_n(f.bytes.begin() + static_cast<std::ptrdiff_t>(f.sent), n, out.begin() + kHeaderSize);
  f.sent += n;
  const bool last = f.sent == f.bytes.size();
  out[0] = kHeaderSize;
  out[1] = static_cast<uint8_t>(uvc::header::kEoh | (s.fid ? uvc::header::kFid : 0) |
                                (last ? uvc::header::kEof : 0));
  ++stats_.payloads;
  if (last) {
    s.queue.pop_front();
    ++stats_.frames_sent;
  }
  return kHeaderSize + n;
}

void UvcCamera::on_transfer(Transfer& transfer, const usb::EndpointDescriptor& endpoint) {
  if (endpoint.direction() != usb::Direction::kIn) {
    finish(transfer, Status::kStall, 0);
    return;
  }
  if (transfer.type() == usb::TransferType::kIsochronous && transfer.iso_packets.empty()) {
    finish(transfer, Status::kInvalid, 0);
    return;
  }
  if (!stream_ && options_.transport == UvcCameraOptions::Transport::kBulk && ever_committed_) {
    start_stream(0, nanoseconds(0));
  }
  serve();
}

size_t UvcCamera::on_transfer_aborted(Transfer& transfer) {
  // The transfer being filled went away: its service intervals are free again and the next
  // transfer (the engine already removed this one) takes them.
  if (stream_ && stream_->armed && stream_->armed_for == &transfer) {
    stream_->armed = false;
    stream_->armed_for = nullptr;
    stream_->next_slot = stream_->armed_first_slot;
    stream_->generation = ++generation_;
    serve();
  }
  return 0;
}

void UvcCamera::serve() {
  // Iterative: a completion that resubmits re-enters here and returns; this loop serves it. So
  // the stack stays flat however many transfers a host queues.
  if (serving_) return;
  serving_ = true;
  while (stream_ && !stream_->armed) {
    const auto& queue = pending(kEndpoint);
    if (queue.empty()) break;
    Stream& s = *stream_;
    Transfer* t = queue.front();
    const auto now = clock_();
    std::chrono::steady_clock::time_point due;
    uint64_t first_slot = 0;
    if (t->type() == usb::TransferType::kIsochronous) {
      const uint64_t now_slot =
          now > s.start ? static_cast<uint64_t>((now - s.start) / s.service_interval) : 0;
      first_slot = std::max(s.next_slot, now_slot);
      s.next_slot = first_slot + t->iso_packets.size();
      due = s.start + s.service_interval * static_cast<int64_t>(s.next_slot);
    } else {
      produce(now);
      if (bulk_ready()) {
        complete_bulk(*t);
        continue;
      }
      // The next frame's moment.
      due = s.start + s.frame_interval * static_cast<int64_t>(s.frames_due);
    }
    s.armed = true;
    s.armed_for = t;
    s.armed_first_slot = first_slot;
    const uint64_t generation = s.generation;
    const auto delay = std::chrono::ceil<microseconds>(std::max(due - now, nanoseconds(0)));
    timer_(delay, [this, alive = alive_, generation, t, first_slot] {
      if (!*alive || !stream_ || stream_->generation != generation) return;
      stream_->armed = false;
      stream_->armed_for = nullptr;
      const auto& q = pending(kEndpoint);
      if (!q.empty() && q.front() == t && t->type() == usb::TransferType::kIsochronous) {
        complete_iso(*t, first_slot);
      }
      serve();  // bulk: the frame that is due now goes out from serve()'s loop
    });
    break;
  }
  serving_ = false;
}

bool UvcCamera::bulk_ready() const {
  const Stream& s = *stream_;
  return s.bulk_zlp || s.bulk_pos < s.bulk_payload.size() || !s.queue.empty();
}

void UvcCamera::complete_iso(Transfer& t, uint64_t first_slot) {
  Stream& s = *stream_;
  auto buffer = t.buffer();
  size_t total = 0;
  uint64_t slot = first_slot;
  for (auto& packet : t.iso_packets) {
    // The peer sets offsets: a packet outside the buffer fails alone.
    if (packet.offset > buffer.size() || packet.length > buffer.size() - packet.offset) {
      packet.actual_length = 0;
      packet.status = Status::kInvalid;
      ++slot;
      continue;
    }
    produce(s.start + s.service_interval * static_cast<int64_t>(slot++));
    const size_t n =
        next_payload(buffer.subspan(packet.offset, packet.length), s.bytes_per_interval);
    if (n == 0) ++stats_.empty_packets;
    packet.actual_length = static_cast<uint32_t>(n);
    packet.status = Status::kOk;
    total += n;
  }
  finish(t, Status::kOk, total);
}

void UvcCamera::complete_bulk(Transfer& t) {
  // The bulk endpoint is a byte stream of payloads (UVC 2.4.3.2.2): a transfer takes what fits of
  // the current payload, and one payload may span transfers. A payload shorter than
  // dwMaxPayloadTransferSize that ends exactly where a transfer ends is terminated by a
  // zero-length packet, which the next transfer receives.
  Stream& s = *stream_;
  if (s.bulk_zlp) {
    s.bulk_zlp = false;
    finish(t, Status::kOk, 0);
    return;
  }
  if (s.bulk_pos == s.bulk_payload.size()) {
    s.bulk_payload.resize(s.control.max_payload_transfer_size);
    s.bulk_payload.resize(next_payload(s.bulk_payload, s.bulk_payload.size()));
    s.bulk_pos = 0;
  }
  const size_t n = std::min(t.length(), s.bulk_payload.size() - s.bulk_pos);
  std::copy_n(s.bulk_payload.begin() + static_cast<std::ptrdiff_t>(s.bulk_pos), n,
              t.buffer().begin());
  s.bulk_pos += n;
  if (s.bulk_pos == s.bulk_payload.size() && n == t.length() &&
      s.bulk_payload.size() < s.control.max_payload_transfer_size) {
    s.bulk_zlp = true;
  }
  finish(t, Status::kOk, n);
}

}  // namespace devices
