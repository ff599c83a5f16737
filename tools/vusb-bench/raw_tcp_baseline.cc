#include "tools/vusb-bench/raw_tcp_baseline.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstring>

#include "usb/core/byte_order.h"

namespace bench {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr size_t kHeader = 48;

// One server-side session: header → (payload) → reply, strictly in order, like a USB/IP server
// with an instant device.
class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(tcp::socket s) : socket_(std::move(s)) {
    socket_.set_option(tcp::no_delay(true));
  }
  void start() { read_header(); }

 private:
  void read_header() {
    asio::async_read(socket_, asio::buffer(header_),
                     [self = shared_from_this()](error_code ec, size_t) {
                       if (ec) return;
                       const bool in = self->header_[0] == 1;
                       const uint32_t len = usb::load_be32(&self->header_[4]);
                       if (len > (64u << 20)) return;
                       if (self->buffer_.size() < len) self->buffer_.resize(len);
                       if (in) return self->reply(len);
                       asio::async_read(self->socket_, asio::buffer(self->buffer_.data(), len),
                                        [self](error_code ec, size_t) {
                                          if (!ec) self->reply(0);
                                        });
                     });
  }
  void reply(uint32_t data) {
    bufs_[0] = asio::buffer(header_);
    bufs_[1] = asio::buffer(buffer_.data(), data);
    asio::async_write(socket_, bufs_, [self = shared_from_this()](error_code ec, size_t) {
      if (!ec) self->read_header();
    });
  }

  tcp::socket socket_;
  std::array<uint8_t, kHeader> header_{};
  std::vector<uint8_t> buffer_;
  std::array<asio::const_buffer, 2> bufs_;
};

// One direction of a relayed connection: read what is there, write it all, repeat.
class Pump : public std::enable_shared_from_this<Pump> {
 public:
  Pump(std::shared_ptr<tcp::socket> from, std::shared_ptr<tcp::socket> to)
      : from_(std::move(from)), to_(std::move(to)), buffer_(256 * 1024) {}
  void start() {
    from_->async_read_some(asio::buffer(buffer_),
                           [self = shared_from_this()](error_code ec, size_t n) {
                             if (ec) return self->stop();
                             asio::async_write(*self->to_, asio::buffer(self->buffer_.data(), n),
                                               [self](error_code ec2, size_t) {
                                                 if (ec2) return self->stop();
                                                 self->start();
                                               });
                           });
  }

 private:
  void stop() {
    error_code ec;
    from_->close(ec);
    to_->close(ec);
  }
  std::shared_ptr<tcp::socket> from_, to_;
  std::vector<uint8_t> buffer_;
};

// One direction with splice(2): socket -> pipe -> socket, the bytes stay in the kernel.
class SplicePump : public std::enable_shared_from_this<SplicePump> {
 public:
  SplicePump(std::shared_ptr<tcp::socket> from, std::shared_ptr<tcp::socket> to)
      : from_(std::move(from)), to_(std::move(to)) {
    if (::pipe2(pipe_, O_NONBLOCK | O_CLOEXEC) != 0)
      pipe_[0] = pipe_[1] = -1;
    else
      ::fcntl(pipe_[1], F_SETPIPE_SZ, 1 << 20);
    from_->non_blocking(true);
    to_->non_blocking(true);
  }
  ~SplicePump() {
    if (pipe_[0] >= 0) ::close(pipe_[0]), ::close(pipe_[1]);
  }
  void start() { fill(); }

 private:
  void fill() {
    for (;;) {
      const ssize_t n = ::splice(from_->native_handle(), nullptr, pipe_[1], nullptr, 1 << 20,
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        queued_ += size_t(n);
        return drain();
      }
      if (n == 0) return stop();
      if (errno != EAGAIN) return stop();
      return from_->async_wait(tcp::socket::wait_read, [self = shared_from_this()](error_code ec) {
        if (ec) return self->stop();
        self->fill();
      });
    }
  }
  void drain() {
    while (queued_ > 0) {
      const ssize_t n = ::splice(pipe_[0], nullptr, to_->native_handle(), nullptr, queued_,
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        queued_ -= size_t(n);
        continue;
      }
      if (n < 0 && errno == EAGAIN)
        return to_->async_wait(tcp::socket::wait_write, [self = shared_from_this()](error_code ec) {
          if (ec) return self->stop();
          self->drain();
        });
      return stop();
    }
    fill();
  }
  void stop() {
    error_code ec;
    from_->close(ec);
    to_->close(ec);
  }
  std::shared_ptr<tcp::socket> from_, to_;
  int pipe_[2] = {-1, -1};
  size_t queued_ = 0;
};

}  // namespace

RawTcpRelay::RawTcpRelay(asio::io_context& io, uint16_t upstream_port, bool splice)
    : io_(io),
      upstream_(upstream_port),
      splice_(splice),
      acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
  accept();
}

uint16_t RawTcpRelay::port() const {
  return acceptor_.local_endpoint().port();
}

void RawTcpRelay::stop() {
  error_code ec;
  acceptor_.close(ec);
}

void RawTcpRelay::accept() {
  acceptor_.async_accept([this](error_code ec, tcp::socket s) {
    if (ec) return;
    auto down = std::make_shared<tcp::socket>(std::move(s));
    auto up = std::make_shared<tcp::socket>(io_);
    error_code cec;
    up->connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), upstream_), cec);
    if (!cec) {
      down->set_option(tcp::no_delay(true));
      up->set_option(tcp::no_delay(true));
      if (splice_) {
        std::make_shared<SplicePump>(down, up)->start();
        std::make_shared<SplicePump>(up, down)->start();
      } else {
        std::make_shared<Pump>(down, up)->start();
        std::make_shared<Pump>(up, down)->start();
      }
    }
    accept();
  });
}

RawTcpServer::RawTcpServer(asio::io_context& io)
    : acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
  accept();
}

uint16_t RawTcpServer::port() const {
  return acceptor_.local_endpoint().port();
}

void RawTcpServer::stop() {
  error_code ec;
  acceptor_.close(ec);
}

void RawTcpServer::accept() {
  acceptor_.async_accept([this](error_code ec, tcp::socket s) {
    if (ec) return;
    std::make_shared<Session>(std::move(s))->start();
    accept();
  });
}

RawTcpClient::RawTcpClient(asio::io_context& io, uint16_t port) : io_(io), socket_(io) {
  socket_.connect({asio::ip::make_address("127.0.0.1"), port});
  socket_.set_option(tcp::no_delay(true));
}

void RawTcpClient::run(bool in, uint32_t length, int depth, uint64_t count) {
  // Pipelined like URBs: `depth` requests written, each reply triggers the next request.
  struct State {
    std::array<uint8_t, kHeader> req{};
    std::vector<uint8_t> out;
    std::array<uint8_t, kHeader> rep{};
    std::vector<uint8_t> in_buf;
    uint64_t sent = 0, done = 0;
  } st;
  st.req[0] = in ? 1 : 0;
  usb::store_be32(&st.req[4], length);
  st.out.assign(in ? 0 : length, 0x5a);
  st.in_buf.resize(in ? length : 0);
  std::function<void()> send_one, read_one;
  send_one = [&] {
    ++st.sent;
    std::array<asio::const_buffer, 2> b{asio::buffer(st.req), asio::buffer(st.out)};
    asio::write(socket_, b);  // blocking write: payloads are queued by the kernel
  };
  for (int i = 0; i < depth && st.sent < count; ++i) send_one();
  while (st.done < count) {
    asio::read(socket_, asio::buffer(st.rep));
    if (in) asio::read(socket_, asio::buffer(st.in_buf));
    ++st.done;
    if (st.sent < count) send_one();
  }
}

std::vector<uint64_t> RawTcpClient::ping(uint64_t count) {
  std::vector<uint64_t> rtt;
  rtt.reserve(count);
  std::array<uint8_t, kHeader> req{}, rep{};
  std::array<uint8_t, 8> data{};
  req[0] = 1;
  usb::store_be32(&req[4], 8);
  for (uint64_t i = 0; i < count; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    asio::write(socket_, asio::buffer(req));
    asio::read(socket_, asio::buffer(rep));
    asio::read(socket_, asio::buffer(data));
    rtt.push_back(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
            .count());
  }
  return rtt;
}

}  // namespace bench
