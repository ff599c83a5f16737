#include "vmm-frontend/sharing/view_state.h"

namespace vusbd {

ViewState::Halt ViewState::halt(uint8_t endpoint) const {
  auto it = halts_.find(endpoint);
  return it == halts_.end() ? Halt::kNone : it->second;
}

void ViewState::device_stalled(uint8_t endpoint) {
  Halt& h = halts_[endpoint];
  if (h != Halt::kVirtual) h = Halt::kDevice;
}

ViewState::Halt ViewState::clear_halt(uint8_t endpoint) {
  const Halt h = halt(endpoint);
  halts_.erase(endpoint);
  return h;
}

std::optional<uint8_t> ViewState::alternate(uint8_t interface) const {
  auto it = alts_.find(interface);
  if (it == alts_.end()) return std::nullopt;
  return it->second;
}

}  // namespace vusbd
