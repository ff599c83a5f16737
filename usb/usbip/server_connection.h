// ServerConnection: one connection to a USB/IP server — vusb-stub's, a VM's in vusbd, a device
// process's — over any usb::net::Stream (TCP, a UNIX socket, a socketpair; TLS and RFCOMM are
// more streams), speaking the USB/IP protocol as the server (PROTOCOLS.md). Op phase: OP_REQ_DEVLIST or OP_REQ_IMPORT.
// After a successful import, the URB phase: CMD_SUBMIT becomes a usb::Transfer on the imported
// device, its completion becomes a RET_SUBMIT; CMD_UNLINK cancels. Payloads are read straight into
// the transfer buffer and each batch of replies leaves in one gathered write.
//
// Owned by itself through shared_ptr (Asio handlers and in-flight transfer completions hold a
// reference), created by Server (or a device process's host). Lives on the loop of its stream.
//
// Unlink races (Linux drivers/usb/usbip/stub_rx.c semantics, improved to keep data):
//  - UNLINK for a seqnum still in flight: the transfer is cancelled; if it then completes as
//    cancelled, only RET_UNLINK(-ECONNRESET) is sent, never its RET_SUBMIT. If it completed for
//    real while being cancelled, RET_SUBMIT (with its data) then RET_UNLINK(0).
//  - UNLINK for a seqnum already answered: RET_UNLINK(0); the client already has the RET_SUBMIT.
//  - UNLINK for a seqnum not submitted yet: Linux's vhci_tx sends its unlink list after its submit
//    list, so an URB queued and unlinked while the tx thread runs reaches us as UNLINK first,
//    SUBMIT second (usbtest case 24 hits this). Answering RET_UNLINK(0) there makes vhci give the
//    URB back and then drop the connection on the late RET_SUBMIT. A seqnum newer than every
//    SUBMIT seen is therefore remembered (bounded); when its SUBMIT arrives it is not run, and
//    only RET_UNLINK(-ECONNRESET) answers both.
#pragma once

#include <array>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "usb/core/buffer_pool.h"
#include "usb/core/loop_checker.h"
#include "usb/core/transfer.h"
#include "usb/net/stream.h"
#include "usb/net/stream_reader.h"
#include "usb/usbip/export_table.h"
#include "usb/wire/usbip_codec.h"

namespace usb::usbip {

struct ConnectionLimits {
  usb::wire::usbip::Limits wire;            // per-URB bounds (max URB size, iso packets)
  uint64_t max_inflight_bytes = 64u << 20;  // buffers held per connection (in flight + unsent)
  // URBs at the device per connection, zero-length ones included; beyond, -ENOMEM.
  size_t max_inflight_urbs = 4096;
  // Replies waiting for the client to read them: beyond, the connection stops reading commands
  // until half have gone (a client that never reads cannot make the server queue without end).
  size_t max_queued_replies = 8192;
  // A write the client does not take within this time closes the connection.
  std::chrono::milliseconds write_timeout{30000};
  // A client must send its op request (DEVLIST / IMPORT) within this time.
  std::chrono::milliseconds op_timeout{30000};
  // After the imported device vanished: keep answering the client's late URBs (-ESHUTDOWN) and
  // close once it has been quiet this long (and at the latest after drain_max).
  std::chrono::milliseconds drain_quiet{200};
  std::chrono::milliseconds drain_max{2000};
  // Prefix for this server's log lines, e.g. "vm vm1" in vusbd (the peer address follows).
  std::string label;
};

class ServerConnection : public std::enable_shared_from_this<ServerConnection>,
                         public ExportTable::Importer {
 public:
  // `stream`: connected, its peer already admitted by the listener; it names the peer in logs.
  ServerConnection(std::unique_ptr<usb::net::Stream> stream, ExportTable& exports,
                   ConnectionLimits limits);
  ~ServerConnection() override;

  void start();
  // Closes the socket, cancels every in-flight transfer and releases the import. Idempotent.
  void close(std::string_view reason);
  bool closed() const { return closed_; }
  const std::string& peer() const { return peer_; }

  // ExportTable::Importer
  void on_device_gone() override;

 private:
  struct InFlight {
    uint32_t seqnum = 0;
    uint32_t direction = 0;
    std::unique_ptr<usb::Transfer> transfer;
    std::optional<uint32_t> unlink_seqnum;  // set when a CMD_UNLINK asked for it
  };
  struct Reply {
    usb::wire::usbip::UrbHeaderBytes header;
    std::unique_ptr<usb::Transfer> transfer;  // keeps IN data alive until written
    size_t data_length = 0;                   // bytes of transfer->buffer() to send
    std::vector<uint8_t> iso;                 // encoded iso descriptors
  };

  // Op phase.
  void read_op_header();
  void on_op_header();
  void on_import_request();
  // URB phase.
  void read_urb_header();
  void on_urb_header();
  void on_submit(const usb::wire::usbip::CmdSubmit& cmd);
  void read_submit_iso(std::shared_ptr<InFlight> pending, uint32_t packets);
  void dispatch(std::unique_ptr<InFlight> in);
  void on_unlink(const usb::wire::usbip::CmdUnlink& cmd);
  // True if seqnum was submitted after `than` (serial-number arithmetic, seqnums wrap).
  static bool newer(uint32_t seqnum, uint32_t than) { return int32_t(seqnum - than) > 0; }
  void reject_submit(const usb::wire::usbip::CmdSubmit& cmd, usb::Status status,
                     std::string_view why);
  void drain_then(uint64_t bytes, std::function<void()> next);
  void on_complete(uint32_t seqnum);
  // Replies.
  void send_ret_submit(InFlight& in);
  void send_ret_unlink(uint32_t seqnum, int32_t status);
  void queue(Reply reply);
  void start_write();

  std::optional<usb::TransferType> endpoint_type(uint8_t address) const;
  void protocol_error(std::string_view why);
  void arm_drain_timer();
  // A transfer this connection is done with: its bytes leave the budget, its buffer the pool.
  void recycle(std::unique_ptr<usb::Transfer> transfer);

  std::unique_ptr<usb::net::Stream> stream_;
  boost::asio::steady_timer op_deadline_;  // the op-phase deadline, later the drain timer
  ExportTable& exports_;
  ConnectionLimits limits_;
  std::string peer_;
  usb::LoopChecker loop_;

  usb::net::StreamReader reader_;
  std::array<uint8_t, usb::wire::usbip::kUrbHeaderSize> header_{};
  std::vector<uint8_t> scratch_;  // import request, iso descriptors, drained payloads

  std::string busid_;              // imported bus id, empty in the op phase
  usb::Device* device_ = nullptr;  // imported device; null once gone
  uint32_t devid_ = 0;
  std::unordered_map<uint32_t, std::unique_ptr<InFlight>> inflight_;
  uint64_t held_bytes_ = 0;  // transfer buffers in flight or waiting to be written
  usb::BufferPool pool_;     // recycles URB buffers once their replies are written
  bool any_submit_ = false;
  uint32_t last_submit_seqnum_ = 0;                       // highest CMD_SUBMIT seqnum seen
  std::unordered_map<uint32_t, uint32_t> early_unlinks_;  // target seqnum → CMD_UNLINK seqnum
  static constexpr size_t kMaxEarlyUnlinks = 1024;

  std::deque<Reply> queued_;
  std::vector<Reply> writing_;
  std::vector<boost::asio::const_buffer> write_buffers_;
  bool write_in_progress_ = false;
  bool read_paused_ = false;  // too many replies waiting: commands wait in the socket
  uint64_t pauses_ = 0;       // how often, for the log throttle
  boost::asio::steady_timer write_deadline_;
  std::optional<std::chrono::steady_clock::time_point> draining_since_;
  bool closed_ = false;
  uint64_t rejected_for_memory_ = 0;
  uint64_t rejected_ = 0;  // URBs refused (reject_submit), for the log throttle
};

}  // namespace usb::usbip
