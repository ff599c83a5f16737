// usbredir::ParserIo: the bytes between a libusbredirparser and a usb::net::Stream, for both
// usbredir channels (HostChannel, GuestChannel). Reads with async_read_some and hands the parser
// what arrived (read() is its read_func: 0 = "would block" once the chunk is used up), so its
// packet callbacks run inside do_read; takes the whole packets the parser queues (write() is its
// write_func, with usbredirparser_fl_write_cb_owns_buffer) and writes them one at a time, freeing
// each after. A flush asked for inside do_read happens when do_read returns.
//
// Owns the parser (open() makes it, the destructor frees it and the packets never written).
// Owned by its channel (a member); the channel's shared_ptr, passed to start() and flush(), keeps
// the channel alive while a read or a write is pending. Lives on the stream's loop.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "usb/net/stream.h"

struct usbredirparser;

namespace usb::usbredir {

class ParserIo {
 public:
  // Called once when the stream ends (EOF: "peer closed", or the error's message).
  using OnEnd = std::function<void(const std::string& why)>;

  ParserIo(usb::net::Stream& stream, std::string label);
  ~ParserIo();
  ParserIo(const ParserIo&) = delete;
  ParserIo& operator=(const ParserIo&) = delete;

  // A new parser: `priv` for its callbacks, which `install` sets (every one: the parser does not
  // check), then usbredirparser_init with `caps` and `flags` (which queues our hello). nullptr
  // when out of memory (logged).
  usbredirparser* open(void* priv, void (*install)(usbredirparser*), std::initializer_list<int> caps,
                       int flags);
  // Writes the hello open() queued and starts reading.
  void start(std::shared_ptr<void> owner, OnEnd on_end);
  // Writes what the parser queued (after do_read returns, when called inside it).
  void flush(std::shared_ptr<void> owner);
  // No more reading, writing or parsing; the stream is closed. Idempotent.
  void close();

  // The parser's read_func, write_func and log_func.
  int read(uint8_t* data, int count);
  int write(uint8_t* data, int count);
  void log(int level, const char* message) const;

  bool open() const { return open_; }
  bool in_read() const { return in_read_; }
  size_t unsent_bytes() const { return tx_bytes_; }

 private:
  void read_more(std::shared_ptr<void> owner);
  void write_next(std::shared_ptr<void> owner);
  void end(const std::string& why);

  usb::net::Stream& stream_;
  std::string label_;
  usbredirparser* parser_ = nullptr;
  OnEnd on_end_;
  std::vector<uint8_t> rx_buffer_;
  std::span<const uint8_t> rx_;                // what read() still has to hand the parser
  std::deque<std::pair<uint8_t*, int>> tx_;    // whole packets from the parser (ours)
  size_t tx_bytes_ = 0;
  bool open_ = false;
  bool writing_ = false;
  bool in_read_ = false;
};

}  // namespace usb::usbredir
