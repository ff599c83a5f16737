// The emulated UVC camera as uvcvideo drives it: descriptors it parses, probe/commit, controls,
// and the stream on simulated time — frames reassembled from payload headers the way uvcvideo
// does (FID toggles, EOF), their counters checked for drops and duplicates.
#include "devices/emulated/uvc_camera.h"

#include <gtest/gtest.h>
#include <jpeglib.h>

#include <cstdio>
#include <map>

#include "emulated_test_util.h"
#include "tests/unit/sim_time.h"
#include "tests/unit/uvc_receiver.h"
#include "usb/uvc/uvc_streaming.h"

namespace {

using namespace emutest;
using devices::TestPattern;
using devices::UvcCamera;
using devices::UvcCameraOptions;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
namespace uvc = usb::uvc;

using vusb::testing::SimTime;

Outcome class_request(usb::Device& dev, Direction d, uint8_t request, uint8_t selector,
                      uint16_t index, uint16_t length, const std::vector<uint8_t>& out = {}) {
  return control(dev,
                 setup(d, RequestType::kClass, Recipient::kInterface, request,
                       static_cast<uint16_t>(selector << 8), index, length),
                 out);
}

uvc::StreamingControl ask(uint8_t format, uint8_t frame, uint32_t interval) {
  uvc::StreamingControl c;
  c.hint = 1;
  c.format_index = format;
  c.frame_index = frame;
  c.frame_interval = interval;
  return c;
}

Outcome set_probe(UvcCamera& cam, uint8_t selector, const uvc::StreamingControl& c,
                  size_t size = uvc::probe::kSize11) {
  return class_request(cam, Direction::kOut, uvc::request::kSetCur, selector,
                       UvcCamera::kStreamingInterface, static_cast<uint16_t>(size), c.encode(size));
}

uvc::StreamingControl get_probe(UvcCamera& cam, uint8_t request, uint8_t selector) {
  auto o = class_request(cam, Direction::kIn, request, selector, UvcCamera::kStreamingInterface,
                         uvc::probe::kSize11);
  EXPECT_EQ(o.status, Status::kOk);
  auto c = uvc::StreamingControl::parse(o.data);
  EXPECT_TRUE(c.has_value());
  return c.value_or(uvc::StreamingControl{});
}

uint8_t error_code(UvcCamera& cam) {
  auto o = class_request(cam, Direction::kIn, uvc::request::kGetCur,
                         uvc::kVcRequestErrorCodeControl, UvcCamera::kControlInterface, 1);
  EXPECT_EQ(o.status, Status::kOk);
  return o.data.empty() ? 0xee : o.data[0];
}

// What uvcvideo does before streaming: configuration 1, probe, commit.
void commit(UvcCamera& cam, uint8_t format, uint8_t frame, uint32_t interval = 333'333) {
  ASSERT_EQ(set_configuration(cam, 1).status, Status::kOk);
  ASSERT_EQ(set_probe(cam, uvc::kVsProbeControl, ask(format, frame, interval)).status, Status::kOk);
  auto agreed = get_probe(cam, uvc::request::kGetCur, uvc::kVsProbeControl);
  ASSERT_EQ(set_probe(cam, uvc::kVsCommitControl, agreed).status, Status::kOk);
}

// Reassembles frames from payloads as uvcvideo does (uvc_video_decode_start/end): a FID change
// starts a new frame, EOF ends one.
using Receiver = vusb::testing::UvcReceiver;

// An isochronous IN URB as uvcvideo builds it: `packets` packets of `psize` bytes.
struct IsoUrb {
  std::unique_ptr<usb::Transfer> t;
  int completions = 0;
  Clock::time_point completed_at{};
};

std::unique_ptr<IsoUrb> iso_urb(size_t packets, size_t psize) {
  auto u = std::make_unique<IsoUrb>();
  u->t = std::make_unique<usb::Transfer>(UvcCamera::kEndpoint, usb::TransferType::kIsochronous,
                                         packets * psize);
  for (size_t i = 0; i < packets; ++i) {
    u->t->iso_packets.push_back(
        {.offset = static_cast<uint32_t>(i * psize), .length = static_cast<uint32_t>(psize)});
  }
  return u;
}

class Camera : public ::testing::Test {
 protected:
  explicit Camera(UvcCameraOptions o = {}) : cam(o, usb::DeviceLocation{1, 2, "1-2", ""}) {
    cam.set_clock([this](auto d, auto fn) { time.arm(d, std::move(fn)); },
                  [this] { return time.now(); });
  }
  // Streams with `depth` URBs always queued (uvcvideo resubmits each one as it completes) for
  // `duration`; payloads go to `rx`.
  void stream(Receiver& rx, milliseconds duration, size_t depth = 5, size_t packets = 32,
              size_t psize = 2048) {
    std::vector<std::unique_ptr<IsoUrb>> urbs;
    for (size_t i = 0; i < depth; ++i) {
      urbs.push_back(iso_urb(packets, psize));
      submit_iso(urbs.back().get(), rx);
    }
    time.advance(duration);
    resubmit = false;
    for (auto& u : urbs) cam.cancel(*u->t);
  }

  // Submits `u`; its completion hands the payloads to `rx` and resubmits while `resubmit`.
  void submit_iso(IsoUrb* u, Receiver& rx) {
    u->t->set_completion([this, u, &rx](usb::Transfer& t) {
      ++u->completions;
      u->completed_at = time.now();
      if (t.status() == Status::kCancelled) return;  // the end of stream()
      EXPECT_EQ(t.status(), Status::kOk);
      for (const auto& p : t.iso_packets) rx.payload(t.buffer().subspan(p.offset, p.actual_length));
      completions.push_back(time.now());
      if (resubmit && t.rearm()) submit_iso(u, rx);
    });
    cam.submit(*u->t);
  }

  SimTime time;
  UvcCamera cam;
  std::vector<Clock::time_point> completions;
  bool resubmit = true;
};

// --- Descriptors ---

TEST_F(Camera, DescriptorsDescribeAUvc11CameraThatParsesBack) {
  const auto& d = cam.descriptors();
  EXPECT_EQ(d.device.vendor_id, 0x1d6b);
  EXPECT_EQ(d.device.product_id, 0x0102);
  EXPECT_EQ(d.device.device_class, 0xef);
  ASSERT_EQ(d.configurations.size(), 1u);
  const auto& config = d.configurations[0];
  // Round trip through the bytes a host reads.
  auto parsed = usb::ConfigurationDescriptor::parse(config.build());
  ASSERT_TRUE(parsed.has_value()) << parsed.error().message;
  EXPECT_EQ(*parsed, config);
  ASSERT_TRUE(config.interfaces[0].association.has_value());
  EXPECT_EQ(config.interfaces[0].association->function_subclass, uvc::kSubclassInterfaceCollection);
  EXPECT_EQ(config.alternate_count(UvcCamera::kStreamingInterface), 6u);

  auto vs = uvc::find_streaming_interfaces(*parsed);
  ASSERT_EQ(vs.size(), 1u);
  EXPECT_EQ(vs[0], UvcCamera::streaming_interface({}));
  EXPECT_EQ(vs[0].endpoint, UvcCamera::kEndpoint);
  ASSERT_EQ(vs[0].formats.size(), 2u);
  EXPECT_EQ(vs[0].formats[0].kind, uvc::FormatKind::kMjpeg);
  EXPECT_EQ(vs[0].formats[1].guid, uvc::kGuidYuy2);
  const auto* hd = vs[0].find_frame(UvcCamera::kMjpegFormat, 2);
  ASSERT_NE(hd, nullptr);
  EXPECT_EQ(hd->width, 1280);
  EXPECT_EQ(hd->height, 720);
  EXPECT_EQ(hd->intervals, (std::vector<uint32_t>{333'333, 666'666}));

  // The VC header's wTotalLength covers the terminals and the unit.
  const auto& vc = config.interfaces[0].extra;
  EXPECT_EQ(vc[5] | vc[6] << 8, static_cast<int>(vc.size()));
  EXPECT_EQ(vc[3] | vc[4] << 8, 0x0110);
}

TEST(CameraDescriptors, BulkVariantHasOneStreamingSettingWithABulkEndpoint) {
  UvcCameraOptions o;
  o.transport = UvcCameraOptions::Transport::kBulk;
  const auto sd = UvcCamera::make_descriptors(o);
  const auto& config = sd.high_speed->configurations[0];
  EXPECT_EQ(config.alternate_count(UvcCamera::kStreamingInterface), 1u);
  const auto* vs = config.find(UvcCamera::kStreamingInterface, 0);
  ASSERT_NE(vs, nullptr);
  ASSERT_EQ(vs->endpoints.size(), 1u);
  EXPECT_EQ(vs->endpoints[0].type(), usb::TransferType::kBulk);
}

TEST(CameraOptions, ParseAndRefuse) {
  auto o = devices::parse_uvc_camera_options("transport=bulk,serial=cam2");
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(o->transport, UvcCameraOptions::Transport::kBulk);
  EXPECT_EQ(o->serial, "cam2");
  EXPECT_FALSE(devices::parse_uvc_camera_options("transport=usb3").has_value());
  EXPECT_FALSE(devices::parse_uvc_camera_options("fps=60").has_value());
  EXPECT_FALSE(devices::parse_uvc_camera_options("bulk_payload=12").has_value());
}

// --- Test pattern ---

std::pair<int, int> jpeg_size(std::span<const uint8_t> jpeg) {
  jpeg_decompress_struct cinfo{};
  jpeg_error_mgr err{};
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, jpeg.data(), jpeg.size());
  std::pair<int, int> wh{-1, -1};
  if (jpeg_read_header(&cinfo, TRUE) == JPEG_HEADER_OK) {
    jpeg_start_decompress(&cinfo);
    std::vector<uint8_t> row(cinfo.output_width * cinfo.output_components);
    while (cinfo.output_scanline < cinfo.output_height) {
      JSAMPROW rows[1] = {row.data()};
      jpeg_read_scanlines(&cinfo, rows, 1);
    }
    jpeg_finish_decompress(&cinfo);
    wh = {static_cast<int>(cinfo.image_width), static_cast<int>(cinfo.image_height)};
  }
  jpeg_destroy_decompress(&cinfo);
  return wh;
}

TEST(TestPatternTest, MjpegFramesAreJpegsCarryingTheirCounter) {
  TestPattern p(TestPattern::Encoding::kMjpeg, 640, 480);
  size_t largest = 0;
  for (uint32_t n = 0; n < 2 * TestPattern::kPeriod; ++n) {
    auto f = p.frame(1000 + n);
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(devices::read_frame_counter(*f, TestPattern::Encoding::kMjpeg, 640), 1000 + n);
    largest = std::max(largest, f->size());
    if (n % 7 == 0) {
      EXPECT_EQ(jpeg_size(*f), std::make_pair(640, 480));
    }
  }
  // Encoded once per phase; a frame must fit what alternate setting 3 carries in a frame time
  // (2048 bytes per millisecond for 33 ms, minus the payload headers).
  EXPECT_EQ(p.encodes(), TestPattern::kPeriod);
  EXPECT_LT(largest, 33u * 2046u);
  // A picture control change re-encodes.
  p.set_controls(20, 40);
  ASSERT_TRUE(p.frame(7).has_value());
  EXPECT_EQ(p.encodes(), TestPattern::kPeriod + 1);
}

TEST(TestPatternTest, YuyvFramesCarryTheirCounterInTheFirstRow) {
  TestPattern p(TestPattern::Encoding::kYuyv, 640, 480);
  auto f = p.frame(0xdeadbeef);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->size(), 640u * 480 * 2);
  EXPECT_EQ(devices::read_frame_counter(*f, TestPattern::Encoding::kYuyv, 640), 0xdeadbeefu);
  // Corruption is noticed rather than misread.
  (*f)[0] = 235;  // the magic's first bit is 0
  EXPECT_EQ(devices::read_frame_counter(*f, TestPattern::Encoding::kYuyv, 640), std::nullopt);
  std::vector<uint8_t> junk(100, 0xff);
  EXPECT_EQ(devices::read_frame_counter(junk, TestPattern::Encoding::kMjpeg, 640), std::nullopt);
}

// --- Probe / commit ---

TEST_F(Camera, ProbeAnswersWhatTheCameraWillStream) {
  ASSERT_EQ(set_configuration(cam, 1).status, Status::kOk);
  ASSERT_EQ(set_probe(cam, uvc::kVsProbeControl, ask(1, 1, 333'333)).status, Status::kOk);
  auto c = get_probe(cam, uvc::request::kGetCur, uvc::kVsProbeControl);
  EXPECT_EQ(c.format_index, 1);
  EXPECT_EQ(c.frame_index, 1);
  EXPECT_EQ(c.frame_interval, 333'333u);
  EXPECT_EQ(c.max_video_frame_size, 640u * 480 * 2);
  EXPECT_EQ(c.max_payload_transfer_size, 2048u);  // alternate setting 3
  EXPECT_EQ(c.clock_frequency, UvcCamera::kClockFrequency);
  EXPECT_EQ(c.framing_info, uvc::kFramingFid | uvc::kFramingEof);

  // An interval it does not offer becomes the nearest it does; a frame it lacks the default.
  ASSERT_EQ(set_probe(cam, uvc::kVsProbeControl, ask(2, 2, 1'200'000)).status, Status::kOk);
  c = get_probe(cam, uvc::request::kGetCur, uvc::kVsProbeControl);
  EXPECT_EQ(c.frame_interval, 1'000'000u);  // YUYV 1280x720 offers 10 and 5 fps
  EXPECT_EQ(c.max_payload_transfer_size, 3072u);
  ASSERT_EQ(set_probe(cam, uvc::kVsProbeControl, ask(2, 9, 0)).status, Status::kOk);
  c = get_probe(cam, uvc::request::kGetCur, uvc::kVsProbeControl);
  EXPECT_EQ(c.frame_index, 1);
  EXPECT_EQ(c.frame_interval, 333'333u);

  // UVC 1.0 hosts send 26 bytes.
  ASSERT_EQ(set_probe(cam, uvc::kVsProbeControl, ask(1, 2, 666'666), 26).status, Status::kOk);
  c = get_probe(cam, uvc::request::kGetCur, uvc::kVsProbeControl);
  EXPECT_EQ(c.frame_index, 2);
  EXPECT_EQ(c.max_payload_transfer_size, 3000u);  // alternate setting 4

  // GET_MIN / GET_MAX / GET_DEF / GET_LEN / GET_INFO.
  EXPECT_EQ(get_probe(cam, uvc::request::kGetMin, uvc::kVsProbeControl).format_index, 1);
  EXPECT_EQ(get_probe(cam, uvc::request::kGetMax, uvc::kVsProbeControl).format_index, 2);
  EXPECT_EQ(get_probe(cam, uvc::request::kGetDef, uvc::kVsProbeControl).frame_interval, 333'333u);
  auto len = class_request(cam, Direction::kIn, uvc::request::kGetLen, uvc::kVsProbeControl,
                           UvcCamera::kStreamingInterface, 2);
  EXPECT_EQ(len.data, (std::vector<uint8_t>{34, 0}));
}

TEST_F(Camera, BadProbesAndCommitsStallWithAReason) {
  ASSERT_EQ(set_configuration(cam, 1).status, Status::kOk);
  // A block of the wrong size.
  EXPECT_EQ(set_probe(cam, uvc::kVsProbeControl, ask(1, 1, 0), 20).status, Status::kStall);
  EXPECT_EQ(error_code(cam), uvc::error_code::kInvalidRequest);
  // A commit naming a frame the camera does not have.
  EXPECT_EQ(set_probe(cam, uvc::kVsCommitControl, ask(3, 1, 333'333)).status, Status::kStall);
  EXPECT_EQ(error_code(cam), uvc::error_code::kOutOfRange);
  // An unknown selector.
  auto o = class_request(cam, Direction::kIn, uvc::request::kGetCur, 9,
                         UvcCamera::kStreamingInterface, 34);
  EXPECT_EQ(o.status, Status::kStall);
  EXPECT_EQ(error_code(cam), uvc::error_code::kInvalidControl);
  // A success clears the code.
  EXPECT_EQ(set_probe(cam, uvc::kVsProbeControl, ask(1, 1, 0)).status, Status::kOk);
  EXPECT_EQ(error_code(cam), uvc::error_code::kNoError);
}

TEST_F(Camera, ProcessingUnitControls) {
  ASSERT_EQ(set_configuration(cam, 1).status, Status::kOk);
  const uint16_t pu = UvcCamera::kProcessingUnit << 8 | UvcCamera::kControlInterface;
  auto get = [&](uint8_t req, uint8_t sel) {
    auto o = class_request(cam, Direction::kIn, req, sel, pu, 2);
    EXPECT_EQ(o.status, Status::kOk);
    return static_cast<int16_t>(o.data.size() == 2 ? o.data[0] | o.data[1] << 8 : 0x7fff);
  };
  EXPECT_EQ(get(uvc::request::kGetMin, uvc::kPuBrightnessControl), -64);
  EXPECT_EQ(get(uvc::request::kGetMax, uvc::kPuBrightnessControl), 64);
  EXPECT_EQ(get(uvc::request::kGetDef, uvc::kPuContrastControl), 32);
  EXPECT_EQ(get(uvc::request::kGetRes, uvc::kPuContrastControl), 1);
  auto info =
      class_request(cam, Direction::kIn, uvc::request::kGetInfo, uvc::kPuBrightnessControl, pu, 1);
  EXPECT_EQ(info.data, (std::vector<uint8_t>{uvc::kInfoGet | uvc::kInfoSet}));
  auto set = [&](uint8_t sel, int16_t v) {
    return class_request(cam, Direction::kOut, uvc::request::kSetCur, sel, pu, 2,
                         {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8)});
  };
  EXPECT_EQ(set(uvc::kPuBrightnessControl, -20).status, Status::kOk);
  EXPECT_EQ(get(uvc::request::kGetCur, uvc::kPuBrightnessControl), -20);
  EXPECT_EQ(cam.brightness(), -20);
  EXPECT_EQ(set(uvc::kPuContrastControl, 200).status, Status::kStall);
  EXPECT_EQ(error_code(cam), uvc::error_code::kOutOfRange);
  EXPECT_EQ(cam.contrast(), 32);
  // Controls the camera does not have.
  auto hue = class_request(cam, Direction::kIn, uvc::request::kGetCur, 0x06, pu, 2);
  EXPECT_EQ(hue.status, Status::kStall);
  auto ct = class_request(cam, Direction::kIn, uvc::request::kGetCur, 0x02,
                          UvcCamera::kCameraTerminal << 8, 2);
  EXPECT_EQ(ct.status, Status::kStall);
}

// --- Streaming ---

TEST_F(Camera, IsochronousStreamDeliversEveryFrameOnTime) {
  commit(cam, UvcCamera::kMjpegFormat, 1);
  ASSERT_EQ(set_interface(cam, UvcCamera::kStreamingInterface, 3).status, Status::kOk);
  EXPECT_TRUE(cam.streaming());
  const auto start = time.now();
  Receiver rx;
  stream(rx, milliseconds(3000));
  // 3 s at 30 fps: frames 0..89 (the 91st is due at 3.0 s and may still be in flight).
  const auto counters = rx.counters();
  ASSERT_GE(counters.size(), 89u);
  for (size_t i = 0; i < counters.size(); ++i) EXPECT_EQ(counters[i], i) << "frame " << i;
  EXPECT_EQ(rx.bad_headers, 0);
  EXPECT_EQ(cam.stats().frames_dropped, 0u);
  for (const auto& f : rx.frames) {
    ASSERT_GE(f.size(), 2u);
    EXPECT_EQ(f[f.size() - 2], 0xff);
    EXPECT_EQ(f[f.size() - 1], 0xd9);  // EOI: the whole JPEG arrived
  }
  // Each URB of 32 packets at bInterval 4 (1 ms) completes 32 ms after the previous one.
  ASSERT_GE(completions.size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(completions[i] - start, milliseconds(32) * (i + 1)) << "URB " << i;
  }
}

TEST_F(Camera, AHostThatStopsReadingSeesDroppedFramesNotCorruptOnes) {
  commit(cam, UvcCamera::kMjpegFormat, 1);
  ASSERT_EQ(set_interface(cam, UvcCamera::kStreamingInterface, 3).status, Status::kOk);
  Receiver rx;
  stream(rx, milliseconds(500));
  time.advance(milliseconds(1000));  // nothing queued for a second
  resubmit = true;
  stream(rx, milliseconds(500));
  const auto counters = rx.counters();
  ASSERT_GT(counters.size(), 20u);
  size_t gaps = 0;
  for (size_t i = 1; i < counters.size(); ++i) {
    ASSERT_NE(counters[i], 0xffffffffu) << "frame " << i << " corrupt";
    ASSERT_GT(counters[i], counters[i - 1]) << "duplicate or reordered frame " << i;
    if (counters[i] != counters[i - 1] + 1) ++gaps;
  }
  EXPECT_EQ(gaps, 1u);
  EXPECT_GT(cam.stats().frames_dropped, 20u);
}

TEST_F(Camera, YuyvAtAlternateSetting5) {
  commit(cam, UvcCamera::kYuyvFormat, 1);
  ASSERT_EQ(set_interface(cam, UvcCamera::kStreamingInterface, 5).status, Status::kOk);
  Receiver rx;
  rx.encoding = TestPattern::Encoding::kYuyv;
  stream(rx, milliseconds(500), 5, 32, 3072);
  const auto counters = rx.counters();
  ASSERT_GE(counters.size(), 14u);
  for (size_t i = 0; i < counters.size(); ++i) EXPECT_EQ(counters[i], i);
  for (const auto& f : rx.frames) EXPECT_EQ(f.size(), 640u * 480 * 2);
}

TEST_F(Camera, AlternateSettingZeroStopsTheStreamAndCommitsWhileStreamingMustAgree) {
  commit(cam, UvcCamera::kMjpegFormat, 1);
  ASSERT_EQ(set_interface(cam, UvcCamera::kStreamingInterface, 3).status, Status::kOk);
  // The same commit again is fine (a second host joining the stream); another is refused.
  EXPECT_EQ(set_probe(cam, uvc::kVsCommitControl, cam.committed()).status, Status::kOk);
  EXPECT_EQ(set_probe(cam, uvc::kVsCommitControl, ask(2, 1, 333'333)).status, Status::kStall);
  EXPECT_EQ(error_code(cam), uvc::error_code::kWrongState);
  auto urb = iso_urb(32, 2048);
  Status status = Status::kIoError;
  urb->t->set_completion([&](usb::Transfer& t) { status = t.status(); });
  cam.submit(*urb->t);
  ASSERT_EQ(set_interface(cam, UvcCamera::kStreamingInterface, 0).status, Status::kOk);
  EXPECT_FALSE(cam.streaming());
  EXPECT_EQ(status, Status::kNoDevice);  // the endpoint went away (-ESHUTDOWN)
  time.advance(milliseconds(100));       // the stale timer does nothing
  EXPECT_EQ(set_probe(cam, uvc::kVsCommitControl, ask(2, 1, 333'333)).status, Status::kOk);
}

TEST_F(Camera, CancellingTheUrbBeingFilledLetsTheNextOneRun) {
  commit(cam, UvcCamera::kMjpegFormat, 1);
  ASSERT_EQ(set_interface(cam, UvcCamera::kStreamingInterface, 3).status, Status::kOk);
  auto a = iso_urb(32, 2048), b = iso_urb(32, 2048);
  std::vector<std::pair<char, Status>> done;
  a->t->set_completion([&](usb::Transfer& t) { done.push_back({'a', t.status()}); });
  b->t->set_completion([&](usb::Transfer& t) { done.push_back({'b', t.status()}); });
  cam.submit(*a->t);
  cam.submit(*b->t);
  time.advance(milliseconds(10));
  cam.cancel(*a->t);
  time.advance(milliseconds(100));
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0], std::make_pair('a', Status::kCancelled));
  EXPECT_EQ(done[1], std::make_pair('b', Status::kOk));
}

// uvcvideo's bulk reassembly (uvc_video_decode_bulk): the header starts a payload; a payload ends
// with a short transfer or when it reaches dwMaxPayloadTransferSize.
struct BulkReceiver {
  Receiver& rx;
  size_t max_payload;
  std::vector<uint8_t> payload;
  void transfer(std::span<const uint8_t> data, size_t length) {
    payload.insert(payload.end(), data.begin(), data.end());
    if (data.size() < length || payload.size() >= max_payload) {
      rx.payload(payload);
      payload.clear();
    }
  }
};

class BulkCamera : public Camera {
 protected:
  static UvcCameraOptions bulk() {
    UvcCameraOptions o;
    o.transport = UvcCameraOptions::Transport::kBulk;
    return o;
  }
  BulkCamera() : Camera(bulk()) {}
  std::optional<BulkReceiver> bulk_rx;
  void submit_bulk(usb::Transfer& t, Receiver& rx) {
    t.set_completion([this, &rx](usb::Transfer& done) {
      if (done.status() == Status::kCancelled) return;
      EXPECT_EQ(done.status(), Status::kOk);
      if (!bulk_rx)
        bulk_rx.emplace(BulkReceiver{rx, cam.committed().max_payload_transfer_size, {}});
      bulk_rx->transfer(done.data(), done.length());
      if (resubmit && done.rearm()) submit_bulk(done, rx);
    });
    cam.submit(t);
  }
};

TEST_F(BulkCamera, PayloadsSpanTransfersAsUvcvideoReadsThem) {
  commit(cam, UvcCamera::kMjpegFormat, 1);
  Receiver rx;
  std::vector<std::unique_ptr<usb::Transfer>> urbs;
  for (int i = 0; i < 5; ++i) {
    // uvcvideo: 512 × min(ceil(dwMaxPayloadTransferSize / 512), 32) = 16 KiB.
    urbs.push_back(
        std::make_unique<usb::Transfer>(UvcCamera::kEndpoint, usb::TransferType::kBulk, 16 * 1024));
    submit_bulk(*urbs.back(), rx);
  }
  EXPECT_TRUE(cam.streaming());
  time.advance(milliseconds(1000));
  const auto counters = rx.counters();
  ASSERT_GE(counters.size(), 30u);
  for (size_t i = 0; i < counters.size(); ++i) EXPECT_EQ(counters[i], i);
  // CLEAR_FEATURE(ENDPOINT_HALT) stops it.
  resubmit = false;
  ASSERT_EQ(
      feature(cam, false, Recipient::kEndpoint, usb::feature::kEndpointHalt, UvcCamera::kEndpoint)
          .status,
      Status::kOk);
  EXPECT_FALSE(cam.streaming());
  for (auto& u : urbs) cam.cancel(*u);
}

}  // namespace

namespace {

TEST_F(BulkCamera, TensOfThousandsOfTinyTransfersDoNotGrowTheStack) {
  // A hostile host queues 50000 one-byte bulk IN transfers between two frames: each takes one
  // byte of a payload; serving them must not recurse once per transfer.
  commit(cam, UvcCamera::kMjpegFormat, 1);
  std::vector<std::unique_ptr<usb::Transfer>> urbs;
  size_t done = 0;
  for (int i = 0; i < 50000; ++i) {
    urbs.push_back(
        std::make_unique<usb::Transfer>(UvcCamera::kEndpoint, usb::TransferType::kBulk, 1));
    urbs.back()->set_completion([&](usb::Transfer&) { ++done; });
    cam.submit(*urbs.back());
  }
  time.advance(milliseconds(1000));  // 30 frames: more bytes than transfers
  EXPECT_EQ(done, 50000u);
  for (auto& u : urbs) cam.cancel(*u);
}

}  // namespace
