// RawTcpBaseline: the yardstick for vusb-bench — the same request/response shapes as USB/IP
// (a 48-byte header, then the payload) over plain loopback TCP with no USB logic at all.
// Relay: RawTcpRelay (below) adds the second hop a proxy such as vusbd adds.
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

// A byte relay between a client and a RawTcpServer (client → relay → server), the two-hop
// yardstick for vusbd: what any proxy between a VM and a stub costs on this machine's loopback,
// with no parsing at all. Each accepted connection gets its own upstream connection; bytes are
// pumped both ways through a 256 KiB buffer per direction. Lives on the loop it is created on.
class RawTcpRelay {
 public:
  // `splice`: move the bytes with splice(2) through a pipe instead of recv/send through a user
  // buffer (the payload then never enters user space on the relay).
  RawTcpRelay(boost::asio::io_context& io, uint16_t upstream_port, bool splice = false);
  uint16_t port() const;
  void stop();

 private:
  void accept();
  boost::asio::io_context& io_;
  uint16_t upstream_;
  bool splice_;
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
