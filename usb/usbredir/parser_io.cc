#include "usb/usbredir/parser_io.h"

#include <spdlog/spdlog.h>
#include <usbredirparser.h>

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <cstring>

#include "usb/core/printable.h"

namespace usb::usbredir {

namespace {
constexpr size_t kReadChunk = 64 * 1024;
}  // namespace

ParserIo::ParserIo(usb::net::Stream& stream, std::string label)
    : stream_(stream), label_(std::move(label)), rx_buffer_(kReadChunk) {}

ParserIo::~ParserIo() {
  if (!parser_) return;
  for (auto& [data, len] : tx_) usbredirparser_free_write_buffer(parser_, data);
  usbredirparser_destroy(parser_);
}

usbredirparser* ParserIo::open(void* priv, void (*install)(usbredirparser*),
                               std::initializer_list<int> caps, int flags) {
  parser_ = usbredirparser_create();
  if (!parser_) {
    spdlog::error("{}: usbredir: out of memory", label_);
    return nullptr;
  }
  parser_->priv = priv;
  install(parser_);
  uint32_t bits[USB_REDIR_CAPS_SIZE] = {};
  for (int cap : caps) usbredirparser_caps_set_cap(bits, cap);
  static char version[] = "vusb";
  usbredirparser_init(parser_, version, bits, USB_REDIR_CAPS_SIZE, flags);
  return parser_;
}

void ParserIo::start(std::shared_ptr<void> owner, OnEnd on_end) {
  on_end_ = std::move(on_end);
  open_ = true;
  flush(owner);  // the hello usbredirparser_init queued
  read_more(std::move(owner));
}

void ParserIo::close() {
  if (!open_) return;
  open_ = false;
  stream_.close();
}

int ParserIo::read(uint8_t* data, int count) {
  // Closed by a packet callback: the rest of this chunk is not parsed.
  if (!open_) return 0;
  const size_t n = std::min(rx_.size(), static_cast<size_t>(count));
  if (n == 0) return 0;  // all we had: "would block"
  std::memcpy(data, rx_.data(), n);
  rx_ = rx_.subspan(n);
  return static_cast<int>(n);
}

int ParserIo::write(uint8_t* data, int count) {
  // fl_write_cb_owns_buffer: one whole packet, ours until written.
  tx_.emplace_back(data, count);
  tx_bytes_ += static_cast<size_t>(count);
  return count;
}

void ParserIo::log(int level, const char* message) const {
  // The parser's messages quote the peer (its version string in the hello).
  if (level <= usbredirparser_error)
    spdlog::warn("{}: usbredir: {}", label_, usb::printable(message));
  else if (level <= usbredirparser_info)
    spdlog::debug("{}: usbredir: {}", label_, usb::printable(message));
}

void ParserIo::read_more(std::shared_ptr<void> owner) {
  if (!open_) return;
  stream_.async_read_some(
      boost::asio::buffer(rx_buffer_),
      [this, owner = std::move(owner)](boost::system::error_code ec, size_t n) mutable {
        if (!open_) return;
        if (ec) return end(ec == boost::asio::error::eof ? "peer closed" : ec.message());
        rx_ = std::span<const uint8_t>(rx_buffer_.data(), n);
        in_read_ = true;
        const int r = usbredirparser_do_read(parser_);
        in_read_ = false;
        if (r == usbredirparser_read_parse_error)
          spdlog::warn("{}: usbredir: a malformed packet was skipped", label_);
        flush(owner);
        read_more(std::move(owner));
      });
}

void ParserIo::flush(std::shared_ptr<void> owner) {
  if (!parser_ || in_read_) return;  // after do_read returns
  if (usbredirparser_has_data_to_write(parser_)) usbredirparser_do_write(parser_);
  write_next(std::move(owner));
}

void ParserIo::write_next(std::shared_ptr<void> owner) {
  if (writing_ || tx_.empty() || !open_) return;
  writing_ = true;
  auto [data, len] = tx_.front();
  stream_.async_write(
      boost::asio::const_buffer(data, static_cast<size_t>(len)),
      [this, owner = std::move(owner)](boost::system::error_code ec, size_t) mutable {
        auto [d, l] = tx_.front();
        tx_.pop_front();
        tx_bytes_ -= static_cast<size_t>(l);
        usbredirparser_free_write_buffer(parser_, d);
        writing_ = false;
        if (ec) {
          if (open_) end(ec.message());
          return;
        }
        write_next(std::move(owner));
      });
}

void ParserIo::end(const std::string& why) {
  if (!open_) return;
  // The owner closes itself (and us) in on_end; close here too in case it does not.
  OnEnd on_end = on_end_;
  if (on_end) on_end(why);
  close();
}

}  // namespace usb::usbredir
