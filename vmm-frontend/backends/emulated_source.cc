#include "vmm-frontend/backends/emulated_source.h"

#include "usb/net/asio_timer.h"

namespace vusbd {

EmulatedSource::EmulatedSource(boost::asio::io_context& io, devices::EmulatedSpec spec,
                               OnChange on_change)
    : io_(io), spec_(std::move(spec)), on_change_(std::move(on_change)) {}

EmulatedSource::~EmulatedSource() = default;

usb::Result<void> EmulatedSource::start() {
  auto device = devices::make_emulated(spec_, usb::net::asio_timer(io_),
                                       [] { return std::chrono::steady_clock::now(); });
  if (!device) return std::unexpected(device.error());
  device_ = std::move(*device);
  on_change_(device_.get());
  return {};
}

}  // namespace vusbd
