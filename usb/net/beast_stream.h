// BeastStream: a usb::net::Stream seen as an Asio AsyncStream, so that Boost.Beast's HTTP and
// WebSocket code runs over whatever Stream a Listener accepted (TCP, a UNIX-domain socket, and
// later TLS) without knowing which. Header-only and included only by the translation units that
// already include Beast (vusbd's control API), to keep Beast's compile cost where it is.
//
// Timeouts are the user's: Beast's own basic_stream timer lives in a socket type we no longer
// name, so a session arms a steady_timer and close()s the stream, which aborts the outstanding
// operations. Owned by the session that reads and writes it; lives on that session's loop.
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/system/error_code.hpp>
#include <array>
#include <memory>
#include <span>
#include <utility>

#include "usb/net/stream.h"

namespace usb::net {

class BeastStream {
 public:
  using executor_type = boost::asio::any_io_executor;

  explicit BeastStream(std::unique_ptr<Stream> stream) : stream_(std::move(stream)) {}

  executor_type get_executor() { return stream_->get_executor(); }
  Stream& stream() { return *stream_; }
  const PeerInfo& peer() const { return stream_->peer(); }
  void close() {
    if (stream_) stream_->close();  // null once moved into a WebSocket
  }

  // Reads into the first non-empty buffer of the sequence (what read_some may do).
  template <class MutableBufferSequence, class ReadHandler>
  auto async_read_some(const MutableBufferSequence& buffers, ReadHandler&& handler) {
    return boost::asio::async_initiate<ReadHandler, void(boost::system::error_code, size_t)>(
        [this](auto h, const MutableBufferSequence& b) {
          boost::asio::mutable_buffer first;
          for (auto it = boost::asio::buffer_sequence_begin(b);
               it != boost::asio::buffer_sequence_end(b); ++it) {
            if (boost::asio::mutable_buffer(*it).size() != 0) {
              first = *it;
              break;
            }
          }
          if (first.size() == 0) return complete_now(std::move(h));
          stream_->async_read_some(first, [h = std::move(h)](boost::system::error_code ec,
                                                             size_t n) mutable {
            std::move(h)(ec, n);
          });
        },
        handler, buffers);
  }

  // Writes the whole sequence as one gathered write (write_some may write everything); at most
  // kMaxGather buffers per call, the rest is left for Beast's next write_some.
  template <class ConstBufferSequence, class WriteHandler>
  auto async_write_some(const ConstBufferSequence& buffers, WriteHandler&& handler) {
    return boost::asio::async_initiate<WriteHandler, void(boost::system::error_code, size_t)>(
        [this](auto h, const ConstBufferSequence& b) {
          gather_count_ = 0;
          for (auto it = boost::asio::buffer_sequence_begin(b);
               it != boost::asio::buffer_sequence_end(b) && gather_count_ < kMaxGather; ++it) {
            boost::asio::const_buffer one(*it);
            if (one.size() != 0) gather_[gather_count_++] = one;
          }
          if (gather_count_ == 0) return complete_now(std::move(h));
          stream_->async_write(
              std::span<const boost::asio::const_buffer>(gather_.data(), gather_count_),
              [h = std::move(h)](boost::system::error_code ec, size_t n) mutable {
                std::move(h)(ec, n);
              });
        },
        handler, buffers);
  }

 private:
  static constexpr size_t kMaxGather = 16;

  template <class Handler>
  void complete_now(Handler h) {
    boost::asio::post(stream_->get_executor(),
                      [h = std::move(h)]() mutable { std::move(h)(boost::system::error_code{}, 0); });
  }

  std::unique_ptr<Stream> stream_;
  std::array<boost::asio::const_buffer, kMaxGather> gather_;  // backs the outstanding write
  size_t gather_count_ = 0;
};

// Beast closes the next layer on a WebSocket timeout or a failed handshake (found by ADL).
inline void beast_close_socket(BeastStream& s) { s.close(); }

// Beast's WebSocket closing handshake ends with a teardown of the next layer (found by ADL).
inline void teardown(boost::beast::role_type, BeastStream& s, boost::system::error_code& ec) {
  s.close();
  ec = {};
}

template <class TeardownHandler>
void async_teardown(boost::beast::role_type, BeastStream& s, TeardownHandler&& handler) {
  s.close();
  boost::asio::post(s.get_executor(), [h = std::forward<TeardownHandler>(handler)]() mutable {
    std::move(h)(boost::system::error_code{});
  });
}

}  // namespace usb::net
