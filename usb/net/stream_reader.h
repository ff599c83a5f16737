// StreamReader: buffered exact-length reads from a usb::net::Stream. Small reads (PDU headers,
// small payloads) are served from one staging buffer filled by a single read, so a burst of
// small PDUs costs one system call instead of one per PDU; the part of a large read that is not
// buffered yet goes straight into the caller's destination (no copy through the staging buffer).
// Owned by the connection that owns the stream; lives on that connection's loop. One read at a
// time.
#pragma once

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <boost/system/error_code.hpp>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <vector>

#include "usb/net/stream.h"

namespace usb::net {

class StreamReader {
 public:
  using Handler = std::move_only_function<void(boost::system::error_code)>;

  explicit StreamReader(size_t capacity = 4096) : buffer_(capacity) {}

  // Bytes already received and not yet consumed.
  size_t buffered() const { return end_ - begin_; }

  // Fills dst completely, then calls done (possibly before read() returns when the bytes are
  // already buffered — callers must tolerate that, or use a loop turn boundary of their own).
  void read(Stream& stream, std::span<uint8_t> dst, Handler done) {
    const size_t take = std::min(dst.size(), buffered());
    std::memcpy(dst.data(), buffer_.data() + begin_, take);
    begin_ += take;
    if (begin_ == end_) begin_ = end_ = 0;
    std::span<uint8_t> rest = dst.subspan(take);
    if (rest.empty()) return done({});
    if (rest.size() >= buffer_.size() / 2) {
      // Large remainder: read it directly into the destination.
      stream.async_read(boost::asio::buffer(rest.data(), rest.size()),
                        [done = std::move(done)](boost::system::error_code ec, size_t) mutable {
                          done(ec);
                        });
      return;
    }
    // Small remainder: one read into the staging buffer, as much as the stream has. (The buffer
    // is empty here: begin_ == end_ == 0 after the copy above.)
    stream.async_read_some(
        boost::asio::buffer(buffer_.data() + end_, buffer_.size() - end_),
        [this, &stream, rest, done = std::move(done)](boost::system::error_code ec,
                                                       size_t n) mutable {
          if (ec) return done(ec);
          end_ += n;
          read(stream, rest, std::move(done));
        });
  }

 private:
  std::vector<uint8_t> buffer_;
  size_t begin_ = 0;  // buffer_[begin_, end_) holds unconsumed bytes; empty buffers restart at 0
  size_t end_ = 0;
};

}  // namespace usb::net
