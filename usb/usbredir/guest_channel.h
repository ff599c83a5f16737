// usbredir::GuestChannel: the "usb-guest" side of the usbredir protocol over a usb::net::Stream —
// what QEMU's hw/usb/redirect.c is — talking to a usb-host that owns a real device (Debian's
// `usbredirect --device VID:PID --as HOST:PORT`, spice-gtk, or our own HostChannel), with
// Debian's libusbredirparser in guest mode for the wire format. devices::UsbredirRemoteDevice is
// the usb::Device built on it (vusbd's usbredir:// source).
//
// It records what the host announces (interface_info, ep_info, then device_connect: speed and
// ids) and says so once with on_device_connect. Transfers go out as data packets under ids of our
// own (a 64-bit counter) and complete when the host answers that id: control (with
// SET/GET_CONFIGURATION and SET/GET_INTERFACE sent as the set_configuration / get_configuration /
// set_alt_setting / get_alt_setting packets usbredirhost expects, answered by
// configuration_status / alt_setting_status, whose values the channel keeps), bulk (32-bit
// lengths when both sides can), interrupt OUT. Interrupt IN is a stream: the first IN transfer
// on an endpoint starts it (start_interrupt_receiving); the packets the host sends are queued per
// endpoint (bounded, oldest dropped) and complete IN transfers in order. cancel() sends
// cancel_data_packet; the host answers the id once (cancelled, or its real outcome if that
// crossed). Isochronous transfers complete with kNotSupported (not needed yet). reset() has no
// reply in the protocol; the channel asks for the configuration after it.
//
// The host is untrusted: every length it sends is bounded by what was asked (longer is babble),
// transfers over 4 MiB are refused, unknown ids are dropped, and at most max_outstanding
// transfers are out at once. When the connection ends or the host disconnects the device, every
// pending transfer completes with kNoDevice.
//
// Created by whoever made the connection (UsbredirRemoteDevice::import); shared ownership because
// pending I/O holds it. Lives on the stream's loop; its callbacks and completions run there.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "usb/core/device.h"
#include "usb/core/transfer.h"
#include "usb/net/stream.h"
#include "usb/usbredir/parser_io.h"

struct usbredirparser;

namespace usb::usbredir {

class GuestChannel : public std::enable_shared_from_this<GuestChannel> {
 public:
  struct Options {
    std::string label = "usbredir guest";  // for log lines
    size_t max_outstanding = 1024;         // transfers and requests out at once; more → kBusy
    size_t interrupt_queue = 1000;  // interrupt IN packets kept per endpoint; more → oldest dropped
  };
  // device_connect.
  struct DeviceInfo {
    Speed speed = Speed::kUnknown;
    uint8_t device_class = 0, device_subclass = 0, device_protocol = 0;
    uint16_t vendor_id = 0, product_id = 0, bcd_device = 0;
  };
  // interface_info, one per interface of the active configuration.
  struct InterfaceInfo {
    uint8_t number = 0, interface_class = 0, interface_subclass = 0, interface_protocol = 0;
  };
  // ep_info, indexed as usbredir does: OUT endpoints 0-15, IN endpoints 16-31.
  struct EndpointInfo {
    uint8_t type = 0xff;  // usb::TransferType value; 0xff = no such endpoint now
    uint8_t interval = 0;
    uint8_t interface = 0;
    uint16_t max_packet_size = 0;
  };
  struct Stats {
    uint64_t packets_out = 0;  // data and request packets sent
    uint64_t packets_in = 0;   // answers and interrupt IN packets received
    uint64_t cancelled = 0;    // cancel_data_packet sent
    uint64_t unknown_ids = 0;  // answers to nothing pending: dropped
    uint64_t refused = 0;      // transfers completed without being sent (limits, iso, no device)
    uint64_t interrupt_dropped = 0;  // interrupt IN packets dropped from a full queue
  };
  using OnEvent = std::function<void(const std::string& what)>;

  static std::shared_ptr<GuestChannel> create(std::unique_ptr<usb::net::Stream> stream,
                                              Options options);
  ~GuestChannel();
  GuestChannel(const GuestChannel&) = delete;
  GuestChannel& operator=(const GuestChannel&) = delete;

  // Sends our hello and starts reading.
  void start();
  // Ends the connection; pending transfers complete with kNoDevice. Idempotent; on_closed is not
  // called for it.
  void close();

  // Called once the host announced a device (device_connect).
  void on_device_connect(std::function<void()> fn) { on_device_connect_ = std::move(fn); }
  // Called when the host says the device is gone (device_disconnect), after pending transfers
  // completed with kNoDevice.
  void on_device_disconnect(std::function<void()> fn) { on_device_disconnect_ = std::move(fn); }
  // Called once when the peer or the stream ends the connection ("peer closed", an error).
  void on_closed(OnEvent fn) { on_closed_ = std::move(fn); }

  bool open() const { return open_; }
  bool device_connected() const { return open_ && connected_; }
  const DeviceInfo& device_info() const { return device_; }
  const std::vector<InterfaceInfo>& interfaces() const { return interfaces_; }
  const std::array<EndpointInfo, 32>& endpoints() const { return endpoints_; }
  // The configuration the host last reported (configuration_status), 0 before it did.
  uint8_t configuration() const { return configuration_; }
  // The alternate setting the host last reported for `interface` (alt_setting_status), else 0.
  uint8_t alt_setting(uint8_t interface) const;
  const Stats& stats() const { return stats_; }

  // Sends `t`, which must have begun (usb::Transfer::begin) and stay alive until it completes.
  // It may complete inline (refused).
  void submit(Transfer& t);
  // Asks the host to stop `t`; it completes once, when the host answers its id.
  void cancel(Transfer& t);
  // set_configuration / set_alt_setting / get_configuration packets; `done` gets the host's
  // status (kNoDevice if the connection ends first).
  void set_configuration(uint8_t value, StatusCallback done);
  void set_interface(uint8_t interface, uint8_t alternate, StatusCallback done);
  void get_configuration(StatusCallback done);
  // Sends reset (no reply in usbredir), then asks for the configuration; `done` runs with its
  // status.
  void reset(StatusCallback done);

 private:
  // A packet sent and not yet answered: a transfer's, or an operation's (set_configuration()).
  struct Pending {
    enum class Kind : uint8_t {
      kControl,
      kBulk,
      kInterrupt,  // OUT
      kSetConfiguration,
      kGetConfiguration,
      kSetAltSetting,
      kGetAltSetting,
    };
    Kind kind = Kind::kControl;
    Transfer* transfer = nullptr;  // completed by the answer, or
    StatusCallback done;           // called with its status
    uint8_t interface = 0;         // kSetAltSetting, kGetAltSetting
  };
  // An interrupt IN endpoint the host streams from once started: its packets, in order, and the
  // IN transfers waiting for them. An error status from the host ends the stream and is queued
  // like a packet, so the transfer that would have got the next packet gets it.
  struct InterruptIn {
    struct Packet {
      uint8_t status = 0;
      std::vector<uint8_t> data;
    };
    bool started = false;
    std::deque<Packet> queued;
    std::deque<Transfer*> waiting;
  };
  GuestChannel(std::unique_ptr<usb::net::Stream> stream, Options options);

  static void install_callbacks(usbredirparser* p);
  static GuestChannel& self(void* priv) { return *static_cast<GuestChannel*>(priv); }

  void flush();
  void closed_by_peer(const std::string& why);
  uint64_t take_id();
  size_t outstanding() const;
  // kNoDevice or kBusy when nothing can be sent now.
  std::optional<Status> refusal() const;
  bool refuse_unless_ready(Transfer& t);
  void send_control(Transfer& t);
  void send_bulk(Transfer& t);
  void send_interrupt_out(Transfer& t);
  void receive_interrupt(Transfer& t);
  // SET/GET_CONFIGURATION, SET/GET_INTERFACE as their own packets; false for other requests.
  bool send_standard_request(Transfer& t);
  // Sends the packet of a configuration / alt setting request (`value`: what to set) under a
  // fresh id and keeps `p` for its status.
  void send_operation(Pending p, uint8_t value);
  // Completes a request with the host's status (a GET_* control transfer gets `value`).
  void answer(Pending& p, uint8_t status, bool set, uint8_t value);
  // Interrupt IN streams of `interface` (all for -1) end: not started, queues cleared, waiting
  // transfers cancelled.
  void stop_interrupt_streams(int interface);
  void serve_interrupt(uint8_t endpoint);
  void fail_all(Status status);

  // Answers from the host.
  void on_hello();
  void on_device_connect_packet(const void* header);
  void on_device_disconnect_packet();
  void on_interface_info(const void* header);
  void on_ep_info(const void* header);
  void on_configuration_status(uint64_t id, uint8_t status, uint8_t configuration);
  void on_alt_setting_status(uint64_t id, uint8_t status, uint8_t interface, uint8_t alt);
  void on_interrupt_receiving_status(uint64_t id, uint8_t status, uint8_t endpoint);
  void on_control(uint64_t id, const void* header, uint8_t* data, int len);
  void on_bulk(uint64_t id, const void* header, uint8_t* data, int len);
  void on_interrupt(uint64_t id, const void* header, uint8_t* data, int len);
  // Takes the pending entry `id` if it is of one of `kinds`; an unknown id or an answer of the
  // wrong kind is logged and dropped (the entry then waits for its own answer).
  std::optional<Pending> take_pending(uint64_t id, std::initializer_list<Pending::Kind> kinds,
                                      const char* what);
  // Completes `t` with the host's answer: IN data copied, `length` bounded by what was asked.
  void complete_data(Transfer& t, uint8_t status, uint32_t length, const uint8_t* data, int len);

  std::unique_ptr<usb::net::Stream> stream_;
  Options options_;
  ParserIo io_;
  usbredirparser* parser_ = nullptr;  // io_ owns it
  bool open_ = false;
  bool hello_ = false;
  bool connected_ = false;  // device_connect in, no device_disconnect since
  uint64_t next_id_ = 1;
  DeviceInfo device_;
  std::vector<InterfaceInfo> interfaces_;
  std::array<EndpointInfo, 32> endpoints_{};
  uint8_t configuration_ = 0;
  std::map<uint8_t, uint8_t> alt_;               // interface → alternate setting
  std::map<uint64_t, Pending> pending_;          // by id: sent, not yet answered
  std::map<uint8_t, InterruptIn> interrupt_in_;  // by endpoint address
  bool iso_logged_ = false;
  Stats stats_;
  std::function<void()> on_device_connect_, on_device_disconnect_;
  OnEvent on_closed_;
};

// usbredir status / speed as usb:: values (unknown status → kIoError, unknown speed → kUnknown).
Status from_redir_status(uint8_t status);
Speed from_redir_speed(uint8_t speed);

}  // namespace usb::usbredir
