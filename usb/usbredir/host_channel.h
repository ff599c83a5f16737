// usbredir::HostChannel: serves one usb::Device to one usbredir guest — QEMU's `-device usb-redir`
// — over a usb::net::Stream: the "usb-host" side of the usbredir protocol (spice usbredir), with
// Debian's libusbredirparser for the wire format. A channel is one connection; it may carry no
// device, announce one (interface_info, ep_info, device_connect once the guest's hello is in),
// serve it, and disconnect it again (device_disconnect, then the guest's ack) to announce another.
//
// What the guest sends maps onto the device as vusb-stub's USB/IP server maps a CMD_SUBMIT:
// control packets through usb::submit_or_perform (so a DeviceView keeps standard requests in
// order with its other ep0 traffic), set_configuration / set_alt_setting as device operations
// followed by fresh interface and endpoint info, bulk and interrupt OUT packets as transfers
// answered with the same id, interrupt IN as a stream the channel keeps polling
// (start_interrupt_receiving), isochronous endpoints as streams (start_iso_stream: IN URBs kept at
// the device and each packet sent on; OUT packets buffered into URBs, half the buffer first). A
// cancelled packet is answered once, at once, with "cancelled"; its transfer's later completion
// is dropped. Bulk streams are refused (inval) and logged: not implemented.
//
// Iso IN is paced as a bus paces it: URB k of a stream is not given to the device before
// (k - no_urbs + 1) URB periods after the start, so a device that completes at once (an emulated
// one) streams at the endpoint's rate instead of as fast as the loop turns, and a device that
// paces itself always has no_urbs URBs queued. Iso data is dropped, not queued without bound,
// while the connection's unsent bytes exceed three stream buffers (QEMU paused, a slow link).
//
// Created by whoever accepted or made the connection (vusbd's usbredir VM adapter); shared
// ownership because pending I/O and transfer completions hold it. Lives on the stream's loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "usb/core/device.h"
#include "usb/core/transfer.h"
#include "usb/net/stream.h"
#include "usb/usbredir/parser_io.h"

struct usbredirparser;

namespace usb::usbredir {

class HostChannel : public std::enable_shared_from_this<HostChannel> {
 public:
  struct Options {
    std::string label = "usbredir";  // for log lines: "vm1 usbredir 127.0.0.1:40312"
    size_t interrupt_transfers = 5;  // interrupt IN transfers kept at the device per endpoint
    // What a guest may have at the device at once (control, bulk, interrupt OUT packets and
    // their buffers); beyond it a packet is answered ioerror, logged once per episode.
    size_t max_packets = 4096;
    size_t max_bytes = 64 * 1024 * 1024;
    // Time for iso pacing; empty = the steady clock and an asio timer on the stream's loop.
    std::function<std::chrono::steady_clock::time_point()> clock;
    std::function<void(std::chrono::nanoseconds, std::move_only_function<void()>)> timer;
  };
  struct Stats {
    uint64_t packets_in = 0;   // data packets from the guest
    uint64_t packets_out = 0;  // data packets to the guest
    uint64_t cancelled = 0;
    uint64_t refused = 0;  // requests answered inval/stall because the channel cannot do them
    uint64_t iso_packets_in = 0;   // iso OUT packets from the guest
    uint64_t iso_packets_out = 0;  // iso IN packets to the guest
    uint64_t iso_dropped = 0;      // iso packets dropped (buffer overflow, backlog, bad size)
  };
  // Why the channel ended or the guest refused the device ("peer closed", "guest rejected the
  // device (filter or speed)").
  using OnEvent = std::function<void(const std::string& what)>;

  static std::shared_ptr<HostChannel> create(std::unique_ptr<usb::net::Stream> stream,
                                             Options options);
  ~HostChannel();
  HostChannel(const HostChannel&) = delete;
  HostChannel& operator=(const HostChannel&) = delete;

  // Sends our hello and starts reading.
  void start();
  // The device the guest gets from now on (announced once the guest's hello is in and any
  // earlier device's disconnect was acknowledged). It must outlive detach() / close().
  void attach(usb::Device& device);
  // The device goes: its transfers are cancelled, the guest is told (device_disconnect).
  void detach();
  // Ends the connection; transfers are cancelled. Idempotent.
  void close();

  void on_closed(OnEvent fn) { on_closed_ = std::move(fn); }
  void on_rejected(OnEvent fn) { on_rejected_ = std::move(fn); }
  bool open() const { return open_; }
  bool announced() const { return announced_; }
  const Stats& stats() const { return stats_; }

 private:
  struct InFlight;
  struct InterruptStream;
  struct IsoStream;
  HostChannel(std::unique_ptr<usb::net::Stream> stream, Options options);

  // The parser's callbacks (priv = this).
  static void install_callbacks(usbredirparser* p);
  static HostChannel& self(void* priv) { return *static_cast<HostChannel*>(priv); }

  void flush();
  void announce();
  void send_device_info();
  void on_hello();
  void on_control(uint64_t id, const void* header, uint8_t* data, int len);
  void on_bulk(uint64_t id, const void* header, uint8_t* data, int len);
  void on_interrupt(uint64_t id, const void* header, uint8_t* data, int len);
  void on_set_configuration(uint64_t id, uint8_t value);
  void on_get_configuration(uint64_t id);
  void on_set_alt_setting(uint64_t id, uint8_t interface, uint8_t alt);
  void on_get_alt_setting(uint64_t id, uint8_t interface);
  void on_start_interrupt_receiving(uint64_t id, uint8_t endpoint);
  void on_stop_interrupt_receiving(uint64_t id, uint8_t endpoint);
  void on_start_iso_stream(uint64_t id, uint8_t endpoint, uint8_t pkts_per_urb, uint8_t no_urbs);
  void on_stop_iso_stream(uint64_t id, uint8_t endpoint);
  void on_iso_packet(uint8_t endpoint, uint8_t* data, int len);
  void on_cancel(uint64_t id);
  void on_reset();
  void on_disconnect_ack();
  void on_filter_reject();
  // Starts `t` (registered under `id`) on the device; its completion answers the guest.
  void submit(uint64_t id, std::unique_ptr<InFlight> f);
  // Room for one more packet of `bytes` (checked before its buffer is allocated).
  bool admit(size_t bytes);
  void complete(uint64_t id, usb::Transfer& t);
  void reply(uint64_t id, InFlight& f, uint8_t status, std::span<const uint8_t> data);
  void poll_interrupt(InterruptStream& stream, usb::Transfer& t);
  void arm_interrupt(InterruptStream& stream, usb::Transfer& t);
  // Iso streams (host_channel_iso.cc).
  void iso_in_next(IsoStream& stream, Transfer& t);
  void iso_in_submit(IsoStream& stream, Transfer& t);
  void iso_in_completed(IsoStream& stream, Transfer& t);
  void iso_out_fill(IsoStream& stream);
  void iso_stream_failed(IsoStream& stream, Status status);
  void retire_iso(uint8_t endpoint);
  // The current alt setting's endpoint `address` of `type`, if the device has it now.
  const EndpointDescriptor* active_endpoint(uint8_t address, TransferType type) const;
  size_t unsent_bytes() const { return io_.unsent_bytes(); }
  // The stream stops: its transfers are cancelled; it is kept until the last one completes.
  void retire(uint8_t endpoint);
  void stop_streams();
  void cancel_all();

  std::unique_ptr<usb::net::Stream> stream_;
  Options options_;
  ParserIo io_;
  usbredirparser* parser_ = nullptr;  // io_ owns it
  bool open_ = false;
  bool hello_ = false;              // the guest's hello is in
  bool announced_ = false;          // device_connect sent
  bool awaiting_ack_ = false;       // device_disconnect sent, ack not yet in
  usb::Device* device_ = nullptr;   // what the guest gets (announced or pending)
  size_t inflight_bytes_ = 0;  // buffers of inflight_ and cancelled_ (before them: outlives them)
  bool over_limit_ = false;
  std::map<uint64_t, std::unique_ptr<InFlight>> inflight_;      // by id, not yet answered
  std::vector<std::unique_ptr<InFlight>> cancelled_;             // answered, still at the device
  std::map<uint8_t, std::unique_ptr<InterruptStream>> interrupt_in_;  // by endpoint
  std::vector<std::unique_ptr<InterruptStream>> retired_;  // stopped, transfers still out
  std::map<uint8_t, std::unique_ptr<IsoStream>> iso_;           // by endpoint
  std::vector<std::unique_ptr<IsoStream>> retired_iso_;         // stopped, transfers still out
  Stats stats_;
  OnEvent on_closed_, on_rejected_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace usb::usbredir
