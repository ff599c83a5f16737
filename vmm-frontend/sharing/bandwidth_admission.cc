#include "vmm-frontend/sharing/bandwidth_admission.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>

#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd {

using usb::Status;

BandwidthAdmission::BandwidthAdmission(SharedDevice& shared) : shared_(shared) {}

void BandwidthAdmission::leave(const DeviceView& view) {
  if (book_) book_->leave(view.vm(), shared_.name());
}

void BandwidthAdmission::device_gone() {
  if (book_) book_->remove_device(shared_.name());
}

void BandwidthAdmission::readmit(DeviceView& view) {
  // What the VM uses now — its configuration's alternate 0s and its alternate settings — fitted
  // before, so it fits again (best effort: a failure is logged by admit_interface).
  usb::Device* be = shared_.backend();
  if (!book_ || !be) return;
  book_->leave(view.vm(), shared_.name());
  const auto* cfg = be->descriptors().find_configuration(view.active_configuration());
  if (!cfg) return;
  for (const auto& intf : cfg->interfaces)
    if (intf.alternate == view.alternate_setting(intf.number))
      (void)book_->use(view.vm(), bus_, shared_.name(), intf.number, intf.alternate, intf.endpoints,
                       be->speed());
}

Status BandwidthAdmission::admit_configuration(DeviceView& view, uint8_t value) {
  usb::Device* be = shared_.backend();
  if (!book_ || !be) return Status::kOk;
  book_->leave(view.vm(), shared_.name());
  const usb::ConfigurationDescriptor* cfg = be->descriptors().find_configuration(value);
  if (!cfg) return Status::kOk;  // unconfigured (or a value the device will refuse)
  for (const auto& intf : cfg->interfaces) {
    if (intf.alternate != 0) continue;
    if (auto r = book_->use(view.vm(), bus_, shared_.name(), intf.number, 0, intf.endpoints,
                            be->speed());
        !r) {
      readmit(view);  // refused: it keeps what it had
      ++view.stats_.refused;
      spdlog::warn("vusbd: {}: {} asked for configuration {}, refused (-ENOSPC): {}",
                   shared_.name(), view.vm(), value, r.error().message);
      return Status::kNoBandwidth;
    }
  }
  return Status::kOk;
}

Status BandwidthAdmission::admit_endpoints(DeviceView& view,
                                           std::span<const usb::EndpointDescriptor> eps) {
  usb::Device* be = shared_.backend();
  if (!book_ || !be) return Status::kOk;
  auto periodic = [](const usb::EndpointDescriptor& e) {
    return e.type() == usb::TransferType::kIsochronous || e.type() == usb::TransferType::kInterrupt;
  };
  // Alternate settings reuse endpoint addresses with other packet sizes: an endpoint is the
  // same one when address, type and wMaxPacketSize (with the high-bandwidth bits) agree.
  auto same = [](const usb::EndpointDescriptor& a, const usb::EndpointDescriptor& b) {
    return a.address == b.address && a.type() == b.type() && a.max_packet_size == b.max_packet_size;
  };
  auto listed = [&](const usb::EndpointDescriptor& d) {
    return std::any_of(eps.begin(), eps.end(), [&](const auto& e) { return same(e, d); });
  };
  // The configuration whose interfaces cover the endpoints: for each interface, the alternate
  // setting whose endpoints are all listed (the one with the most, alt 0 when none is listed).
  for (const auto& cfg : be->descriptors().configurations) {
    std::map<uint8_t, std::pair<const usb::InterfaceDescriptor*, bool>> best;  // (alt, all listed)
    for (const auto& intf : cfg.interfaces) {
      const bool all = std::all_of(intf.endpoints.begin(), intf.endpoints.end(),
                                   [&](const auto& e) { return listed(e); });
      auto [it, fresh] = best.try_emplace(intf.number, &intf, all);
      auto& [b, b_all] = it->second;
      if (!fresh && all && (!b_all || intf.endpoints.size() > b->endpoints.size())) {
        b = &intf;
        b_all = true;
      }
    }
    std::map<uint8_t, const usb::InterfaceDescriptor*> chosen;
    for (auto& [n, b] : best) chosen[n] = b.first;
    size_t covered = 0;
    for (const auto& e : eps)
      for (auto& [n, intf] : chosen)
        if (std::any_of(intf->endpoints.begin(), intf->endpoints.end(),
                        [&](const auto& x) { return same(x, e); })) {
          ++covered;
          break;
        }
    if (covered != eps.size()) continue;
    book_->leave(view.vm(), shared_.name());
    for (auto& [n, intf] : chosen) {
      if (!std::any_of(intf->endpoints.begin(), intf->endpoints.end(), periodic)) continue;
      if (auto r = book_->use(view.vm(), bus_, shared_.name(), intf->number, intf->alternate,
                              intf->endpoints, be->speed());
          !r) {
        readmit(view);
        ++view.stats_.refused;
        spdlog::warn(
            "vusbd: {}: {}'s controller asked for interface {} alternate {}, refused "
            "(Bandwidth Error): {}",
            shared_.name(), view.vm(), intf->number, intf->alternate, r.error().message);
        return Status::kNoBandwidth;
      }
    }
    return Status::kOk;
  }
  return Status::kOk;  // endpoints no configuration has: the device will refuse, not the bus
}

Status BandwidthAdmission::admit_interface(DeviceView& view, uint8_t interface, uint8_t alternate) {
  usb::Device* be = shared_.backend();
  if (!book_ || !be) return Status::kOk;
  if (auto r = book_->use(view.vm(), bus_, shared_.name(), interface, alternate,
                          shared_.endpoints(interface, alternate, view.active_configuration()),
                          be->speed());
      !r) {
    ++view.stats_.refused;
    spdlog::warn("vusbd: {}: {} asked for interface {} alternate {}, refused (-ENOSPC): {}",
                 shared_.name(), view.vm(), interface, alternate, r.error().message);
    return Status::kNoBandwidth;
  }
  return Status::kOk;
}

}  // namespace vusbd
