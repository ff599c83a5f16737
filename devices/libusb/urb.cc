#include "devices/libusb/urb.h"

#include <algorithm>
#include <climits>
#include <cstring>

namespace devices {
namespace {

constexpr size_t kSetupSize = LIBUSB_CONTROL_SETUP_SIZE;
static_assert(kSetupSize == 8);

}  // namespace

std::expected<std::unique_ptr<Urb>, usb::Status> Urb::prepare(usb::Transfer& t,
                                                              libusb_device_handle* handle,
                                                              libusb_transfer_cb_fn callback) {
  std::unique_ptr<Urb> urb(new Urb(t));
  const size_t length = t.length();
  if (length > static_cast<size_t>(INT_MAX) - kSetupSize)
    return std::unexpected(usb::Status::kInvalid);
  const bool in = t.direction() == usb::Direction::kIn;

  if (t.type() == usb::TransferType::kIsochronous) {
    const size_t n = t.iso_packets.size();
    if (n == 0 || n > static_cast<size_t>(INT_MAX)) return std::unexpected(usb::Status::kInvalid);
    bool back_to_back = true;
    size_t total = 0;
    for (const usb::IsoPacket& p : t.iso_packets) {
      if (p.offset > length || p.length > length - p.offset)
        return std::unexpected(usb::Status::kInvalid);
      if (p.offset != total) back_to_back = false;
      total += p.length;
    }
    // Overlapping packets are meaningless; refusing them also bounds the bounce buffer.
    if (total > length) return std::unexpected(usb::Status::kInvalid);
    uint8_t* data = t.buffer().data();
    if (!back_to_back) {
      urb->bounce_size_ = total;
      urb->bounce_ = std::make_unique_for_overwrite<uint8_t[]>(total ? total : 1);
      data = urb->bounce_.get();
      if (!in) {  // copy: gather OUT packets into libusb's back-to-back layout
        size_t at = 0;
        for (const usb::IsoPacket& p : t.iso_packets) {
          if (p.length) std::memcpy(data + at, t.buffer().data() + p.offset, p.length);
          at += p.length;
        }
      }
    }
    urb->xfer_.reset(libusb_alloc_transfer(static_cast<int>(n)));
    if (!urb->xfer_) return std::unexpected(usb::Status::kNoMemory);
    libusb_fill_iso_transfer(urb->xfer_.get(), handle, t.endpoint(), data, static_cast<int>(total),
                             static_cast<int>(n), callback, urb.get(), 0);
    for (size_t i = 0; i < n; ++i) {
      urb->xfer_->iso_packet_desc[i].length = t.iso_packets[i].length;
    }
    return urb;
  }

  urb->xfer_.reset(libusb_alloc_transfer(0));
  if (!urb->xfer_) return std::unexpected(usb::Status::kNoMemory);
  libusb_transfer* x = urb->xfer_.get();
  switch (t.type()) {
    case usb::TransferType::kControl: {
      if (usb::endpoint_number(t.endpoint()) != 0)
        return std::unexpected(usb::Status::kNotSupported);
      // The data stage is wLength bytes; the buffer must hold them.
      const size_t stage = t.setup.length;
      if (stage > length) return std::unexpected(usb::Status::kInvalid);
      // copy: libusb needs the setup packet in front of the data stage.
      urb->bounce_size_ = kSetupSize + stage;
      urb->bounce_ = std::make_unique_for_overwrite<uint8_t[]>(urb->bounce_size_);
      uint8_t* b = urb->bounce_.get();
      libusb_fill_control_setup(b, t.setup.request_type, t.setup.request, t.setup.value,
                                t.setup.index, t.setup.length);
      if (!in && stage) std::memcpy(b + kSetupSize, t.buffer().data(), stage);
      libusb_fill_control_transfer(x, handle, b, callback, urb.get(), 0);
      break;
    }
    case usb::TransferType::kBulk:
      libusb_fill_bulk_transfer(x, handle, t.endpoint(), t.buffer().data(),
                                static_cast<int>(length), callback, urb.get(), 0);
      break;
    case usb::TransferType::kInterrupt:
      libusb_fill_interrupt_transfer(x, handle, t.endpoint(), t.buffer().data(),
                                     static_cast<int>(length), callback, urb.get(), 0);
      break;
    case usb::TransferType::kIsochronous:
      break;  // handled above
  }
  if (t.flags.short_not_ok && in) x->flags |= LIBUSB_TRANSFER_SHORT_NOT_OK;
  if (t.flags.zero_packet && !in && t.type() == usb::TransferType::kBulk)
    x->flags |= LIBUSB_TRANSFER_ADD_ZERO_PACKET;
  return urb;
}

Urb::Outcome Urb::finish() {
  usb::Transfer& t = *transfer_;
  libusb_transfer* x = xfer_.get();
  const bool in = t.direction() == usb::Direction::kIn;
  Outcome out;
  out.status = usb::from_libusb_transfer_status(x->status);

  if (t.type() == usb::TransferType::kIsochronous) {
    size_t at = 0;  // packet offset inside the bounce buffer
    for (size_t i = 0; i < t.iso_packets.size(); ++i) {
      usb::IsoPacket& p = t.iso_packets[i];
      const libusb_iso_packet_descriptor& d = x->iso_packet_desc[i];
      p.actual_length = std::min<uint32_t>(d.actual_length, p.length);
      p.status = usb::from_libusb_transfer_status(d.status);
      if (bounce_ && in && p.actual_length)  // copy: scatter back to the caller's layout
        std::memcpy(t.buffer().data() + p.offset, bounce_.get() + at, p.actual_length);
      at += p.length;
      out.actual_length += p.actual_length;
    }
    return out;
  }

  const size_t actual = x->actual_length > 0 ? static_cast<size_t>(x->actual_length) : 0;
  out.actual_length = std::min(actual, t.length());
  if (t.type() == usb::TransferType::kControl && in && out.actual_length)
    std::memcpy(t.buffer().data(), bounce_.get() + kSetupSize, out.actual_length);  // copy back
  if (t.flags.short_not_ok && in && x->status == LIBUSB_TRANSFER_ERROR &&
      out.actual_length < t.length())
    out.status = usb::Status::kShortPacket;
  return out;
}

}  // namespace devices
