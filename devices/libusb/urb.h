// Urb: the libusb side of one usb::Transfer in flight — the libusb_transfer and, where libusb
// needs a different memory layout, a bounce buffer. Owned by the LibusbDevice that submitted it
// (its in-flight map), on that device's loop; between libusb_submit_transfer() and libusb's
// callback, libusb (the event thread) uses the libusb_transfer and the buffer it points at.
//
// Copies (everything else is zero-copy: libusb reads and writes the usb::Transfer's buffer):
//  - control: libusb wants the 8-byte setup packet in front of the data stage in one buffer, so
//    the data stage is copied in (OUT) or out (IN). At most 64 KiB, usually a few bytes.
//  - isochronous whose packets are not laid out back to back from offset 0 (libusb's layout):
//    gathered into / scattered from a bounce buffer. USB/IP and xHCI layouts are back to back.
#pragma once

#include <libusb.h>

#include <cstddef>
#include <expected>
#include <memory>

#include "usb/core/status.h"
#include "usb/core/transfer.h"

namespace devices {

struct UrbSink;  // defined by LibusbDevice: where the event-thread callback posts to

class Urb {
 public:
  // Builds, but does not submit, the libusb_transfer for `transfer` on `handle` (null is fine
  // for tests). libusb's user_data is this Urb. A transfer libusb cannot express returns the
  // status to complete it with: kInvalid (lengths, iso packets outside the buffer), kNoMemory,
  // kNotSupported (control transfers to an endpoint other than 0).
  static std::expected<std::unique_ptr<Urb>, usb::Status> prepare(usb::Transfer& transfer,
                                                                  libusb_device_handle* handle,
                                                                  libusb_transfer_cb_fn callback);

  Urb(const Urb&) = delete;
  Urb& operator=(const Urb&) = delete;

  libusb_transfer* libusb() const { return xfer_.get(); }
  usb::Transfer& transfer() const { return *transfer_; }
  bool bounced() const { return bounce_ != nullptr; }

  struct Outcome {
    usb::Status status = usb::Status::kOk;
    size_t actual_length = 0;
  };
  // Reads libusb's result once libusb has given the transfer back: copies bounced IN data into
  // the usb::Transfer's buffer, fills iso packets' actual_length and status, and returns what
  // to pass to Transfer::complete (isochronous actual_length is the sum over packets, as Linux
  // URBs report it). Statuses come from the one table in usb/core/status.cc; the only
  // interpretation added is short-not-ok: libusb reports a short IN as TRANSFER_ERROR, usb::
  // Transfer wants kShortPacket.
  Outcome finish();

  // Set by the LibusbDevice before submitting; read by its libusb callback.
  std::shared_ptr<UrbSink> sink;

 private:
  struct FreeTransfer {
    void operator()(libusb_transfer* t) const { libusb_free_transfer(t); }
  };

  explicit Urb(usb::Transfer& transfer) : transfer_(&transfer) {}

  usb::Transfer* transfer_;
  std::unique_ptr<libusb_transfer, FreeTransfer> xfer_;
  std::unique_ptr<uint8_t[]> bounce_;  // control: setup + data stage; iso: packed packets
  size_t bounce_size_ = 0;
};

}  // namespace devices
