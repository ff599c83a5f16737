// ClientChannel: the client side of the USB/IP protocol over one usb::net::Stream. It imports a
// bus id (OP_REQ_IMPORT), then runs the URB phase: a submitted transfer becomes CMD_SUBMIT and
// its RET_SUBMIT completes it; submits made in one loop turn leave in one gathered write (a write
// cache flushed at the end of the turn); cancel() sends CMD_UNLINK, and a RET_SUBMIT that arrives
// for a transfer already given back is read and dropped (STYLE 2). list_devices() is the
// OP_REQ_DEVLIST exchange.
//
// devices/remote's UsbipRemoteDevice is the usb::Device built on it (vusbd's importer, vusb-probe).
// Shared by its user and its pending I/O handlers, so the user may go with I/O outstanding.
// Lives on the loop of its stream.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "usb/core/transfer.h"
#include "usb/net/endpoint.h"
#include "usb/net/socket_stream.h"
#include "usb/net/tls.h"
#include "usb/net/stream_reader.h"
#include "usb/wire/usbip_codec.h"

namespace usb::usbip {

class ClientChannel : public std::enable_shared_from_this<ClientChannel> {
 public:
  struct Options {
    usb::wire::usbip::Limits limits;
    // Submits made in one loop turn leave in one gathered write. false: one write per PDU
    // (for measuring what the batching gains).
    bool batch = true;
    // Called once when the connection ends (peer gone, protocol error, close()).
    std::function<void(const std::string& reason)> on_disconnect;
    usb::net::TcpOptions tcp;  // for connections import() makes
    // For a TLS server (its Endpoint's tls): the client context (CA or PSK, own certificate).
    std::shared_ptr<const usb::net::TlsContext> tls;
    std::chrono::milliseconds connect_timeout{30000};
    // From the connection to the import reply, and (UsbipRemoteDevice) to the descriptors read
    // over it: a server that accepts and then says nothing fails the import instead of hanging.
    std::chrono::milliseconds import_timeout{10000};
  };
  using ImportCallback = std::move_only_function<void(usb::Result<std::shared_ptr<ClientChannel>>)>;

  // Connects to `server`, imports `busid`, calls done on the loop.
  static void import(boost::asio::io_context& io, const usb::net::Endpoint& server,
                     const std::string& busid, Options options, ImportCallback done);
  // The same over a stream that is already connected (one end of a socketpair to a device
  // process).
  static void import(std::unique_ptr<usb::net::Stream> stream, const std::string& busid,
                     Options options, ImportCallback done);

  ClientChannel(std::unique_ptr<usb::net::Stream> stream, Options options);
  ~ClientChannel();

  // The IMPORT reply's device record.
  const usb::wire::usbip::DeviceRecord& record() const { return record_; }
  bool connected() const { return connected_; }
  const std::string& peer() const { return peer_; }
  const Options& options() const { return options_; }
  // The loop the connection lives on (for timers that belong with it).
  boost::asio::any_io_executor stream_executor() const { return stream_->get_executor(); }

  // URB phase. `t` must have begun (usb::Transfer::begin) and stay alive until it completes:
  // on its RET_SUBMIT, or with kNoDevice when the connection ends first.
  void submit(usb::Transfer& t);
  // Gives `t` back as kCancelled: at once if it has not left yet, else after CMD_UNLINK is
  // answered (or by its RET_SUBMIT, if that crosses the unlink).
  void cancel(usb::Transfer& t);
  // Ends the connection; in-flight transfers complete with kNoDevice. Idempotent.
  void close(const std::string& reason) { fail(reason); }

 private:
  struct Pending {
    usb::Transfer* transfer = nullptr;
    uint32_t direction = 0;
  };
  struct Out {
    usb::wire::usbip::UrbHeaderBytes header;
    const uint8_t* data = nullptr;
    size_t length = 0;
    std::vector<uint8_t> iso;
    uint32_t seqnum = 0;  // CMD_SUBMIT's seqnum, 0 for CMD_UNLINK
  };

  void start_import(const std::string& busid, std::shared_ptr<ImportCallback> done);
  uint32_t take_seqnum();
  void fail(const std::string& reason);
  void queue(Out out);
  void flush();
  void read_header();
  void discard(uint64_t bytes);
  void on_header();
  void on_reply_data(uint32_t seqnum, usb::wire::usbip::RetSubmit ret, bool iso, uint32_t payload);
  void complete(uint32_t seqnum, usb::Status status, size_t actual);
  void send_submit(usb::Transfer& t, uint32_t seqnum);

  std::unique_ptr<usb::net::Stream> stream_;
  Options options_;
  std::string peer_;
  usb::wire::usbip::DeviceRecord record_;
  bool connected_ = false;
  uint32_t devid_ = 0;
  uint32_t next_seqnum_ = 1;
  std::unordered_map<uint32_t, Pending> inflight_;  // seqnum → transfer
  std::unordered_map<const usb::Transfer*, uint32_t> seq_of_;
  std::unordered_map<uint32_t, uint32_t> unlinks_;  // CMD_UNLINK seqnum → target
  std::vector<Out> cache_;    // the write cache: flushed once at the end of the loop turn
  std::vector<Out> writing_;  // the batch being written
  std::vector<boost::asio::const_buffer> buffers_;
  bool flush_posted_ = false;
  bool write_in_progress_ = false;
  usb::net::StreamReader reader_;
  std::array<uint8_t, usb::wire::usbip::kUrbHeaderSize> header_{};
  std::vector<uint8_t> scratch_;
};

// OP_REQ_DEVLIST on the loop: connects, asks, reads the list (at most 4096 devices), hangs up,
// then calls done on the loop; fails (kIo, kMalformed, kTooLarge) if that takes over `timeout`.
using ListCallback =
    std::move_only_function<void(usb::Result<std::vector<usb::wire::usbip::DevlistEntry>>)>;
// A TLS server (server.tls) needs `tls`, a client context.
void list_devices(boost::asio::io_context& io, const usb::net::Endpoint& server,
                  std::chrono::milliseconds timeout, ListCallback done,
                  std::shared_ptr<const usb::net::TlsContext> tls = nullptr);

// OP_REQ_DEVLIST, blocking (on a loop of its own): for tools and tests, not for daemons' loops.
usb::Result<std::vector<usb::wire::usbip::DevlistEntry>> list_devices_blocking(
    const usb::net::Endpoint& server, std::shared_ptr<const usb::net::TlsContext> tls = nullptr,
    std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace usb::usbip
