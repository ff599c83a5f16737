// HostChannel::IsoStream (private to usb/usbredir): one isochronous endpoint the guest streams on
// (start_iso_stream). Owned by its HostChannel — in iso_ while running, in retired_iso_ after a
// stop until its last transfer is back. Lives on the channel's loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "usb/core/descriptors.h"
#include "usb/core/transfer.h"
#include "usb/usbredir/host_channel.h"

namespace usb::usbredir {

// usb::Status as a usbredir status (host_channel.cc).
uint8_t to_redir(Status s);
// What ep_info announces as an endpoint's max_packet_size and what one iso packet may carry: an
// isochronous endpoint's bytes per service interval (high-speed mult, SuperSpeed
// wBytesPerInterval), otherwise wMaxPacketSize.
uint32_t redir_max_packet(Speed speed, const EndpointDescriptor& e);

struct HostChannel::IsoStream {
  uint8_t endpoint = 0;
  bool in = false;
  uint8_t pkts_per_urb = 0;
  uint8_t no_urbs = 0;
  uint32_t max_packet = 0;                // bytes one packet may carry (high-speed mult included)
  std::chrono::nanoseconds urb_period{};  // pkts_per_urb service intervals
  std::chrono::steady_clock::time_point started{};
  uint64_t submitted = 0;  // IN: URBs given to the device since the start (pacing)
  std::vector<std::unique_ptr<Transfer>> transfers;  // IN: rearmed; OUT: those at the device
  size_t at_device = 0;    // transfers at the device or waiting to be submitted again
  uint64_t next_id = 0;    // ids of the packets sent to the guest (QEMU ignores them)
  bool stopping = false;
  bool error_reported = false;  // OUT: one unsolicited error status per stream
  // OUT: packets from the guest not yet in a URB; URBs start once half the buffer is full.
  std::deque<std::vector<uint8_t>> queued;
  bool out_started = false;

  size_t buffer_packets() const { return size_t{pkts_per_urb} * no_urbs; }
  size_t watermark_bytes() const { return 3 * buffer_packets() * max_packet; }
};

}  // namespace usb::usbredir
