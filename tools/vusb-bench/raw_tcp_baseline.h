// RawTcpBaseline: the yardstick for vusb-bench — the same request/response shapes as USB/IP
// (a 48-byte header, then the payload) over plain loopback TCP with no USB logic at all.
// Server: for an "IN" request it answers a 48-byte header plus N bytes; for "OUT" it reads N
// bytes and answers a 48-byte header. Client: keeps `depth` requests in flight, like URBs.
// The server lives on the loop it is created on; the client drives its own io_context.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <memory>
#include <vector>

namespace bench {

class RawTcpServer {
 public:
  explicit RawTcpServer(boost::asio::io_context& io);
  uint16_t port() const;
  void stop();

 private:
  void accept();
  boost::asio::ip::tcp::acceptor acceptor_;
};

class RawTcpClient {
 public:
  RawTcpClient(boost::asio::io_context& io, uint16_t port);
  // Runs `count` requests of `length` bytes with `depth` in flight; returns when all answered.
  void run(bool in, uint32_t length, int depth, uint64_t count);
  // One 8-byte IN request at a time; returns the round-trip time of each in nanoseconds.
  std::vector<uint64_t> ping(uint64_t count);

 private:
  boost::asio::io_context& io_;
  boost::asio::ip::tcp::socket socket_;
};

}  // namespace bench
