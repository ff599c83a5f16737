// UvcSharing: the camera rules of a shared device (the webcam in two VMs). A UVC camera streams one
// format at a time, set by the last VS_COMMIT it received; when VMs share it, the first VM to
// stream decides the format and every other VM must take the same stream (vusbd fans its
// isochronous IN packets out to all of them). So while another VM streams on a VideoStreaming
// interface, a VM's probe / commit requests to that interface never reach the camera:
//  - SET_CUR(PROBE) is accepted and remembered; GET_CUR(PROBE) answers the committed stream, so
//    uvcvideo adopts it (it takes the device's format and frame from the probe reply — the
//    guest's VIDIOC_S_FMT returns the streaming format, not the one asked for);
//  - SET_CUR(COMMIT) of that same stream (format, frame, interval) is accepted; any other commit
//    is refused with a stall (uvcvideo's VIDIOC_STREAMON then fails with EIO) and logged;
//  - a bulk camera's stream cannot be split between VMs: a second VM's commit is refused;
//  - GET_MIN / GET_MAX / GET_DEF / GET_RES / GET_LEN / GET_INFO go to the camera (they describe
//    what it can do, not what it does).
// When no other VM streams, requests go to the camera as they are, and a commit the camera
// accepted becomes the stream in force.
//
// Pure decisions and per-interface state; SharedDevice applies them. Owned by SharedDevice (one
// per backend with VideoStreaming interfaces); lives on vusbd's loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "usb/core/setup.h"
#include "usb/core/status.h"
#include "usb/uvc/uvc_streaming.h"

namespace vusbd {

class UvcSharing {
 public:
  struct Decision {
    enum class Kind { kForward, kAnswer, kRefuse };
    Kind kind = Kind::kForward;
    std::vector<uint8_t> reply;  // kAnswer: the IN data stage
    std::string log;             // a line for the log when the VM was steered or refused
  };

  explicit UvcSharing(std::vector<usb::uvc::StreamingInterface> interfaces);

  // The VideoStreaming interface a class request addresses (probe / commit only), if any.
  const usb::uvc::StreamingInterface* target(const usb::SetupPacket& setup) const;
  // Whether the interface streams over bulk (one alternate setting) rather than isochronous.
  bool bulk(uint8_t interface) const { return bulk_.contains(interface); }
  void set_bulk(uint8_t interface) { bulk_.insert(interface); }

  // What to do with `vm`'s probe / commit request (`data`: the OUT data stage), given who else
  // streams the interface now (`streamer`, empty when nobody).
  Decision decide(const std::string& vm, const usb::SetupPacket& setup,
                  std::span<const uint8_t> data, const std::string& streamer);
  // A forwarded request completed: a commit the camera accepted is the stream in force; for a
  // bulk camera the committing VM streams from now on.
  void on_forwarded(const std::string& vm, const usb::SetupPacket& setup,
                    std::span<const uint8_t> data, usb::Status status,
                    std::chrono::steady_clock::time_point now = {});
  // A VM whose commit the camera accepted less than kCommitGrace ago, other than `vm`: it is
  // about to select its alternate setting and counts as streaming already (so two VMs starting
  // at once cannot commit different formats between one's commit and its SET_INTERFACE).
  std::string recent_committer(uint8_t interface, const std::string& vm,
                               std::chrono::steady_clock::time_point now) const;
  static constexpr std::chrono::seconds kCommitGrace{2};

  // Bulk cameras: who streams (committed and has not stopped with CLEAR_FEATURE(HALT)).
  std::string bulk_streamer(uint8_t interface) const;
  // CLEAR_FEATURE(ENDPOINT_HALT) from `vm` on `endpoint`: stops its bulk stream there. True when
  // `vm` was streaming it (the camera must be told: that is how a bulk stream stops).
  bool stop_bulk_endpoint(const std::string& vm, uint8_t endpoint);
  // Whether `endpoint` carries one of the camera's streams.
  bool streams_on(uint8_t endpoint) const;
  // The VM released the device: the bulk stream endpoints it was streaming (to be stopped).
  std::vector<uint8_t> forget(const std::string& vm);

  std::optional<usb::uvc::StreamingControl> committed(uint8_t interface) const;
  uint64_t steered() const { return steered_; }
  uint64_t refused() const { return refused_; }

 private:
  struct State {
    std::optional<usb::uvc::StreamingControl> committed;
    std::map<std::string, usb::uvc::StreamingControl> asked;  // last SET_CUR(PROBE) per VM
    std::string bulk_streamer;
    std::string committer;  // the last VM whose commit the camera accepted, and when
    std::chrono::steady_clock::time_point committed_at{};
  };
  std::vector<usb::uvc::StreamingInterface> interfaces_;
  std::set<uint8_t> bulk_;
  std::map<uint8_t, State> state_;
  uint64_t steered_ = 0;
  uint64_t refused_ = 0;
};

}  // namespace vusbd
