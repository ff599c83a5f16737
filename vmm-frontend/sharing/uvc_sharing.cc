#include "vmm-frontend/sharing/uvc_sharing.h"

#include <fmt/format.h>

namespace vusbd {

namespace uvc = usb::uvc;
using Kind = UvcSharing::Decision::Kind;

UvcSharing::UvcSharing(std::vector<uvc::StreamingInterface> interfaces)
    : interfaces_(std::move(interfaces)) {}

const uvc::StreamingInterface* UvcSharing::target(const usb::SetupPacket& s) const {
  if (s.type() != usb::RequestType::kClass || s.recipient() != usb::Recipient::kInterface)
    return nullptr;
  const uint8_t selector = static_cast<uint8_t>(s.value >> 8);
  if ((s.index >> 8) != 0 ||
      (selector != uvc::kVsProbeControl && selector != uvc::kVsCommitControl)) {
    return nullptr;
  }
  for (const auto& vs : interfaces_)
    if (vs.interface == (s.index & 0xff)) return &vs;
  return nullptr;
}

UvcSharing::Decision UvcSharing::decide(const std::string& vm, const usb::SetupPacket& s,
                                        std::span<const uint8_t> data,
                                        const std::string& streamer) {
  const uvc::StreamingInterface* vs = target(s);
  if (!vs || streamer.empty() || streamer == vm) return {};
  State& st = state_[vs->interface];
  if (!st.committed) return {};  // a stream vusbd did not see start: nothing to hold it to
  const uvc::StreamingControl& c = *st.committed;
  const bool probe = (s.value >> 8) == uvc::kVsProbeControl;
  Decision d;
  switch (s.request) {
    case uvc::request::kSetCur: {
      auto asked = uvc::StreamingControl::parse(data);
      if (!asked) {
        ++refused_;
        return {Kind::kRefuse, {}, fmt::format("{}: {}", vm, asked.error().message)};
      }
      if (probe) {
        st.asked[vm] = *asked;
        return {Kind::kAnswer, {}, {}};
      }
      if (bulk(vs->interface)) {
        ++refused_;
        return {Kind::kRefuse,
                {},
                fmt::format("{} may not stream: {} streams this bulk camera ({}), and a bulk "
                            "stream cannot be shared",
                            vm, streamer, uvc::describe(*vs, c))};
      }
      if (!asked->same_stream(c)) {
        ++refused_;
        return {Kind::kRefuse,
                {},
                fmt::format("{} may not stream {}: {} streams {} (both VMs must take the same "
                            "format; the probe offered it)",
                            vm, uvc::describe(*vs, *asked), streamer, uvc::describe(*vs, c))};
      }
      return {Kind::kAnswer, {}, {}};
    }
    case uvc::request::kGetCur: {
      d.kind = Kind::kAnswer;
      d.reply = c.encode(s.length);
      if (probe) {
        auto it = st.asked.find(vm);
        if (it != st.asked.end() && !it->second.same_stream(c)) {
          ++steered_;
          d.log = fmt::format("{} asked for {} while {} streams {}: steered to it", vm,
                              uvc::describe(*vs, it->second), streamer, uvc::describe(*vs, c));
          st.asked.erase(it);
        }
      }
      return d;
    }
    default:
      return {};  // GET_MIN / MAX / DEF / RES / LEN / INFO: what the camera can do
  }
}

void UvcSharing::on_forwarded(const std::string& vm, const usb::SetupPacket& s,
                              std::span<const uint8_t> data, usb::Status status,
                              std::chrono::steady_clock::time_point now) {
  const uvc::StreamingInterface* vs = target(s);
  if (!vs || status != usb::Status::kOk || s.request != uvc::request::kSetCur ||
      (s.value >> 8) != uvc::kVsCommitControl) {
    return;
  }
  auto c = uvc::StreamingControl::parse(data);
  if (!c) return;
  State& st = state_[vs->interface];
  st.committed = *c;
  st.committer = vm;
  st.committed_at = now;
  if (bulk(vs->interface)) st.bulk_streamer = vm;
}

std::string UvcSharing::recent_committer(uint8_t interface, const std::string& vm,
                                         std::chrono::steady_clock::time_point now) const {
  auto it = state_.find(interface);
  if (it == state_.end() || it->second.committer.empty() || it->second.committer == vm) return {};
  return now - it->second.committed_at < kCommitGrace ? it->second.committer : std::string();
}

std::string UvcSharing::bulk_streamer(uint8_t interface) const {
  auto it = state_.find(interface);
  return it == state_.end() ? std::string() : it->second.bulk_streamer;
}

bool UvcSharing::stop_bulk_endpoint(const std::string& vm, uint8_t endpoint) {
  bool was = false;
  for (const auto& vs : interfaces_) {
    if (vs.endpoint != endpoint) continue;
    auto it = state_.find(vs.interface);
    if (it != state_.end() && it->second.bulk_streamer == vm) {
      it->second.bulk_streamer.clear();
      was = true;
    }
  }
  return was;
}

bool UvcSharing::streams_on(uint8_t endpoint) const {
  for (const auto& vs : interfaces_)
    if (vs.endpoint == endpoint) return true;
  return false;
}

std::vector<uint8_t> UvcSharing::forget(const std::string& vm) {
  std::vector<uint8_t> endpoints;
  for (auto& [interface, st] : state_) {
    st.asked.erase(vm);
    if (st.committer == vm) st.committer.clear();
    if (st.bulk_streamer != vm) continue;
    st.bulk_streamer.clear();
    for (const auto& vs : interfaces_)
      if (vs.interface == interface) endpoints.push_back(vs.endpoint);
  }
  return endpoints;
}

std::optional<uvc::StreamingControl> UvcSharing::committed(uint8_t interface) const {
  auto it = state_.find(interface);
  return it == state_.end() ? std::nullopt : it->second.committed;
}

}  // namespace vusbd
