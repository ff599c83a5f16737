// One emulated UVC camera shared by two VMs through SharedDevice, on simulated time: the probe /
// commit rules of UvcSharing (steer, refuse, pass through) and the fanned-out stream, reassembled
// per VM the way uvcvideo does it.
#include <gtest/gtest.h>

#include <map>

#include "devices/emulated/test_pattern.h"
#include "devices/emulated/uvc_camera.h"
#include "tests/unit/sim_time.h"
#include "tests/unit/uvc_receiver.h"
#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd {
namespace {

namespace uvc = usb::uvc;
using devices::UvcCamera;
using std::chrono::milliseconds;
using usb::Status;
using usb::Transfer;
using Clock = std::chrono::steady_clock;

using vusb::testing::SimTime;

// One VM's side: its control requests complete inline or after time passes.
struct Request {
  std::unique_ptr<Transfer> t;
  bool done = false;
  Status status = Status::kIoError;
};

// uvcvideo's reassembly of one VM's stream (FID toggles start frames, EOF ends them).
using Frames = vusb::testing::UvcReceiver;
constexpr uint32_t kNoCounter = Frames::kNoCounter;

class CameraSharing : public ::testing::Test {
 protected:
  CameraSharing()
      : camera({}, usb::DeviceLocation{1, 2, "1-1", ""}),
        shared(
            "cam", SharedDevice::Mode::kShared,
            [this](milliseconds d, std::move_only_function<void()> fn) {
              time.arm(d, std::move(fn));
            },
            milliseconds(200), milliseconds(100), [this] { return time.now(); }),
        vm1(shared.view("vm1", {.busid = "1-1", .path = {}})),
        vm2(shared.view("vm2", {.busid = "1-1", .path = {}})) {
    camera.set_clock([this](auto d, auto fn) { time.arm(d, std::move(fn)); },
                     [this] { return time.now(); });
    camera.set_configuration(1, [](Status) {});
    shared.set_backend(&camera);
    EXPECT_TRUE(vm1.try_acquire());
    EXPECT_TRUE(vm2.try_acquire());
  }
  ~CameraSharing() override {
    // Unplug while every transfer and view still exists: their completions run now.
    streaming.clear();
    camera.disconnect();
    shared.set_backend(nullptr);
  }

  Status control(DeviceView& vm, const usb::SetupPacket& s, std::vector<uint8_t> out = {},
                 std::vector<uint8_t>* in = nullptr) {
    auto t = Transfer::control(s.direction() == usb::Direction::kIn ? 0x80 : 0x00, s);
    std::copy(out.begin(), out.end(), t->buffer().begin());
    bool done = false;
    Status status = Status::kIoError;
    t->set_completion([&](Transfer& x) {
      done = true;
      status = x.status();
      if (in) in->assign(x.data().begin(), x.data().end());
    });
    vm.submit(*t);
    for (int i = 0; i < 100 && !done; ++i) time.advance(milliseconds(10));
    EXPECT_TRUE(done);
    return status;
  }
  Status set_probe(DeviceView& vm, uint8_t selector, uint8_t format, uint8_t frame) {
    uvc::StreamingControl c;
    c.hint = 1;
    c.format_index = format;
    c.frame_index = frame;
    c.frame_interval = 333'333;
    return control(vm,
                   {0x21, uvc::request::kSetCur, static_cast<uint16_t>(selector << 8),
                    UvcCamera::kStreamingInterface, 34},
                   c.encode());
  }
  uvc::StreamingControl get_probe(DeviceView& vm) {
    std::vector<uint8_t> in;
    EXPECT_EQ(control(vm,
                      {0xa1, uvc::request::kGetCur, uvc::kVsProbeControl << 8,
                       UvcCamera::kStreamingInterface, 34},
                      {}, &in),
              Status::kOk);
    return uvc::StreamingControl::parse(in).value_or(uvc::StreamingControl{});
  }
  // What uvcvideo's S_FMT + STREAMON do: probe, commit the probe's answer, select the alternate
  // setting that carries it (3 for MJPEG 640x480).
  Status start(DeviceView& vm, uint8_t format, uint8_t frame, uint8_t alt = 3) {
    if (auto s = set_probe(vm, uvc::kVsProbeControl, format, frame); s != Status::kOk) return s;
    const auto agreed = get_probe(vm);
    if (auto s = set_probe(vm, uvc::kVsCommitControl, agreed.format_index, agreed.frame_index);
        s != Status::kOk) {
      return s;
    }
    return control(vm, {0x01, usb::request::kSetInterface, alt, UvcCamera::kStreamingInterface, 0});
  }
  // Keeps five 32-packet URBs queued on `vm` (as uvcvideo does) while `streaming[vm]`.
  void stream(DeviceView& vm, Frames& frames) {
    for (int i = 0; i < 5; ++i) {
      auto t = std::make_unique<Transfer>(UvcCamera::kEndpoint, usb::TransferType::kIsochronous,
                                          32 * 2048);
      for (uint32_t p = 0; p < 32; ++p)
        t->iso_packets.push_back({.offset = p * 2048, .length = 2048});
      submit_iso(vm, *t, frames);
      by_vm[&vm].push_back(t.get());
      urbs.push_back(std::move(t));
    }
  }
  void submit_iso(DeviceView& vm, Transfer& t, Frames& frames) {
    t.set_completion([this, &vm, &frames](Transfer& x) {
      if (x.status() != Status::kOk) return;
      for (const auto& p : x.iso_packets)
        frames.payload(x.buffer().subspan(p.offset, p.actual_length));
      if (streaming[&vm] && x.rearm()) submit_iso(vm, x, frames);
    });
    vm.submit(t);
  }

  // What uvcvideo's STREAMOFF does first: kill the VM's URBs, wherever the camera is in a frame
  // (the payloads in them are lost).
  void kill_urbs(DeviceView& vm) {
    streaming[&vm] = false;
    for (Transfer* t : by_vm[&vm])
      if (t->in_flight()) t->cancel();
    by_vm[&vm].clear();
  }

  SimTime time;
  std::vector<std::unique_ptr<Transfer>> urbs;  // outlive the camera that may hold them
  std::map<DeviceView*, std::vector<Transfer*>> by_vm;
  std::map<DeviceView*, bool> streaming;
  UvcCamera camera;
  SharedDevice shared;
  DeviceView& vm1;
  DeviceView& vm2;
};

TEST_F(CameraSharing, AloneAVmTalksToTheCamera) {
  ASSERT_NE(shared.uvc(), nullptr);
  ASSERT_EQ(start(vm2, UvcCamera::kYuyvFormat, 1, 5), Status::kOk);
  EXPECT_EQ(camera.committed().format_index, UvcCamera::kYuyvFormat);
  EXPECT_TRUE(camera.streaming());
  ASSERT_TRUE(shared.uvc()->committed(UvcCamera::kStreamingInterface).has_value());
  EXPECT_EQ(shared.uvc()->steered(), 0u);
}

TEST_F(CameraSharing, ASecondVmIsSteeredToTheStreamInForceOrRefused) {
  ASSERT_EQ(start(vm1, UvcCamera::kMjpegFormat, 1), Status::kOk);
  streaming[&vm1] = true;
  Frames f1;
  stream(vm1, f1);
  time.advance(milliseconds(200));

  // vm2 asks for YUYV: the probe answers MJPEG 640x480, the stream in force.
  ASSERT_EQ(set_probe(vm2, uvc::kVsProbeControl, UvcCamera::kYuyvFormat, 1), Status::kOk);
  const auto offered = get_probe(vm2);
  EXPECT_EQ(offered.format_index, UvcCamera::kMjpegFormat);
  EXPECT_EQ(offered.frame_index, 1);
  EXPECT_EQ(shared.uvc()->steered(), 1u);
  // A commit of something else is refused; the camera never sees it.
  EXPECT_EQ(set_probe(vm2, uvc::kVsCommitControl, UvcCamera::kYuyvFormat, 1), Status::kStall);
  EXPECT_EQ(shared.uvc()->refused(), 1u);
  EXPECT_EQ(vm2.stats().refused, 1u);
  EXPECT_EQ(camera.committed().format_index, UvcCamera::kMjpegFormat);
  // The stream in force is accepted, and vm2 joins it.
  ASSERT_EQ(set_probe(vm2, uvc::kVsCommitControl, UvcCamera::kMjpegFormat, 1), Status::kOk);
  ASSERT_EQ(control(vm2, {0x01, usb::request::kSetInterface, 3, UvcCamera::kStreamingInterface, 0}),
            Status::kOk);
  EXPECT_EQ(camera.stats().streams, 1u) << "vm2's requests did not restart the camera";
}

TEST_F(CameraSharing, BothVmsReceiveEveryFrameAndTheLateOneStartsAtAFrame) {
  ASSERT_EQ(start(vm1, UvcCamera::kMjpegFormat, 1), Status::kOk);
  streaming[&vm1] = true;
  Frames f1, f2;
  stream(vm1, f1);
  // vm2 joins in the middle of a frame's payloads (frames take a few ms of each 33 ms).
  time.advance(milliseconds(1000) + milliseconds(35));
  ASSERT_EQ(start(vm2, UvcCamera::kMjpegFormat, 1), Status::kOk);
  streaming[&vm2] = true;
  stream(vm2, f2);
  time.advance(milliseconds(2000));

  auto check = [](const Frames& f, const char* vm) {
    const auto counters = f.counters();
    ASSERT_GT(counters.size(), 50u) << vm;
    for (size_t i = 0; i < counters.size(); ++i) {
      ASSERT_NE(counters[i], kNoCounter) << vm << " frame " << i << " is not a whole frame";
      if (i) {
        EXPECT_EQ(counters[i], counters[i - 1] + 1) << vm << " frame " << i;
      }
    }
  };
  check(f1, "vm1");
  check(f2, "vm2");
  const auto c1 = f1.counters(), c2 = f2.counters();
  EXPECT_EQ(c1.front(), 0u);
  EXPECT_GE(c2.front(), 29u);
  // Same stream; the follower may be one URB (32 ms, a frame) behind.
  EXPECT_LE(c1.back() - c2.back(), 1u);
  EXPECT_EQ(shared.fanout_stats(vm2).dropped_packets, 0u);
  EXPECT_EQ(camera.stats().frames_dropped, 0u);

  // vm1 stops (alternate setting 0): the camera keeps streaming for vm2, which now leads.
  streaming[&vm1] = false;
  ASSERT_EQ(control(vm1, {0x01, usb::request::kSetInterface, 0, UvcCamera::kStreamingInterface, 0}),
            Status::kOk);
  const size_t before = f2.frames.size();
  time.advance(milliseconds(1000));
  EXPECT_TRUE(camera.streaming());
  const auto after = f2.counters();
  EXPECT_GE(after.size(), before + 28);
  for (size_t i = before; i < after.size(); ++i) {
    ASSERT_NE(after[i], kNoCounter);
    EXPECT_EQ(after[i], after[i - 1] + 1);
  }
  // Once nobody streams, a VM may choose another format again.
  streaming[&vm2] = false;
  time.advance(milliseconds(200));
  ASSERT_EQ(control(vm2, {0x01, usb::request::kSetInterface, 0, UvcCamera::kStreamingInterface, 0}),
            Status::kOk);
  EXPECT_FALSE(camera.streaming());
  ASSERT_EQ(start(vm1, UvcCamera::kYuyvFormat, 1, 5), Status::kOk);
  EXPECT_EQ(camera.committed().format_index, UvcCamera::kYuyvFormat);
}

TEST(UvcSharingRules, BulkCamerasStreamToOneVmAtATime) {
  uvc::StreamingInterface vs = UvcCamera::streaming_interface({});
  UvcSharing rules({vs});
  rules.set_bulk(vs.interface);
  uvc::StreamingControl c;
  c.format_index = 1;
  c.frame_index = 1;
  c.frame_interval = 333'333;
  const auto bytes = c.encode();
  const usb::SetupPacket commit{0x21, uvc::request::kSetCur, uvc::kVsCommitControl << 8,
                                vs.interface, 34};
  // Nobody streams: the commit goes to the camera, and vm1 streams once it is accepted.
  EXPECT_EQ(rules.decide("vm1", commit, bytes, "").kind, UvcSharing::Decision::Kind::kForward);
  rules.on_forwarded("vm1", commit, bytes, Status::kOk);
  EXPECT_EQ(rules.bulk_streamer(vs.interface), "vm1");
  // vm2 cannot split the stream, even with the same format.
  auto d = rules.decide("vm2", commit, bytes, rules.bulk_streamer(vs.interface));
  EXPECT_EQ(d.kind, UvcSharing::Decision::Kind::kRefuse);
  EXPECT_NE(d.log.find("bulk"), std::string::npos);
  // CLEAR_FEATURE(HALT) on its endpoint ends vm1's stream.
  rules.stop_bulk_endpoint("vm1", vs.endpoint);
  EXPECT_EQ(rules.bulk_streamer(vs.interface), "");
  // Requests for other interfaces or selectors are not the rules' business.
  EXPECT_EQ(rules.target({0x21, uvc::request::kSetCur, 0x0200, 0, 1}), nullptr);
  EXPECT_EQ(rules.target({0x21, uvc::request::kSetCur, 0x0300, vs.interface, 1}), nullptr);
  // A malformed block from a guest is refused, not parsed past its end.
  const std::vector<uint8_t> shorty(10, 0);
  EXPECT_EQ(rules.decide("vm2", commit, shorty, "vm1").kind, UvcSharing::Decision::Kind::kRefuse);
}

// The CI failure this pins down: vm2 led and killed its URBs in the middle of a frame (those
// payloads are gone), then vm1 — which had stopped earlier — streamed again while vm2 still held
// the alternate setting, so the camera was not restarted and went on with the rest of that frame.
// vm1 leads now, and must start at the next frame, not with a torn one.
TEST_F(CameraSharing, ALeaderThatTakesOverARunningStreamStartsAtAFrame) {
  ASSERT_EQ(start(vm1, UvcCamera::kMjpegFormat, 1), Status::kOk);
  streaming[&vm1] = true;
  Frames f1, f2, again;
  stream(vm1, f1);
  time.advance(milliseconds(500));
  ASSERT_EQ(start(vm2, UvcCamera::kMjpegFormat, 1), Status::kOk);
  streaming[&vm2] = true;
  stream(vm2, f2);
  time.advance(milliseconds(500));

  kill_urbs(vm1);
  ASSERT_EQ(control(vm1, {0x01, usb::request::kSetInterface, 0, UvcCamera::kStreamingInterface, 0}),
            Status::kOk);
  time.advance(milliseconds(1000) + milliseconds(35));  // vm2 leads; now inside a frame
  kill_urbs(vm2);
  ASSERT_EQ(control(vm1, {0x01, usb::request::kSetInterface, 3, UvcCamera::kStreamingInterface, 0}),
            Status::kOk);
  EXPECT_EQ(camera.stats().streams, 1u) << "the camera was not restarted";
  streaming[&vm1] = true;
  stream(vm1, again);
  time.advance(milliseconds(1000));

  const auto counters = again.counters();
  ASSERT_GT(counters.size(), 25u);
  for (size_t i = 0; i < counters.size(); ++i) {
    ASSERT_NE(counters[i], kNoCounter) << "frame " << i << " is not a whole frame";
    if (i) {
      EXPECT_EQ(counters[i], counters[i - 1] + 1) << "frame " << i;
    }
  }
  EXPECT_GT(shared.fanout_stats(vm1).skipped_packets, 0u);
}

// A leader whose own SET_INTERFACE restarted the camera loses nothing: the stream's first payload
// starts a frame even when its FID equals the last one seen before the restart.
TEST_F(CameraSharing, ARestartedStreamLosesNoFrame) {
  ASSERT_EQ(start(vm1, UvcCamera::kMjpegFormat, 1), Status::kOk);
  streaming[&vm1] = true;
  Frames f1, again;
  stream(vm1, f1);
  time.advance(milliseconds(1000) + milliseconds(35));
  kill_urbs(vm1);
  ASSERT_EQ(control(vm1, {0x01, usb::request::kSetInterface, 0, UvcCamera::kStreamingInterface, 0}),
            Status::kOk);
  ASSERT_EQ(control(vm1, {0x01, usb::request::kSetInterface, 3, UvcCamera::kStreamingInterface, 0}),
            Status::kOk);
  EXPECT_EQ(camera.stats().streams, 2u);
  const uint64_t skipped = shared.fanout_stats(vm1).skipped_packets;
  streaming[&vm1] = true;
  stream(vm1, again);
  time.advance(milliseconds(500));
  const auto counters = again.counters();
  ASSERT_GT(counters.size(), 10u);
  for (uint32_t c : counters) ASSERT_NE(c, kNoCounter);
  EXPECT_EQ(shared.fanout_stats(vm1).skipped_packets, skipped) << "no packet was withheld";
}

}  // namespace
}  // namespace vusbd
