#include "usb/net/listener.h"

#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <cerrno>
#include <cstring>

namespace usb::net {

namespace asio = boost::asio;
using boost::system::error_code;
using generic = asio::generic::stream_protocol;

namespace {

// A socket file at `path` that nobody answers on is a dead daemon's: remove it. One that answers
// is another daemon's: refuse. Anything else at the path is not ours to touch.
Result<void> clear_stale_socket(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return {};  // nothing there
  if (!S_ISSOCK(st.st_mode))
    return Error::make(Error::Code::kBusy, path + " exists and is not a socket");
  asio::io_context io;
  asio::local::stream_protocol::socket probe(io);
  error_code ec;
  probe.connect(asio::local::stream_protocol::endpoint(path), ec);
  if (!ec) return Error::make(Error::Code::kBusy, "another process listens on " + path);
  if (ec != asio::error::connection_refused)
    return Error::make(Error::Code::kIo, "cannot check " + path + ": " + ec.message());
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return Error::make(Error::Code::kIo,
                       "cannot remove stale socket " + path + ": " + std::strerror(errno));
  spdlog::info("removed stale socket {}", path);
  return {};
}

}  // namespace

Listener::Listener(asio::io_context& io, Options options)
    : io_(io), options_(std::move(options)), acceptor_(io), retry_(io) {}

Listener::~Listener() {
  stop();
}

Result<void> Listener::listen(const Endpoint& where) {
  loop_.check();
  if (where.tls && (!options_.tls || options_.tls->role() != TlsRole::kServer))
    return Error::make(Error::Code::kInvalidArgument,
                       "cannot listen on " + where.to_string() +
                           ": TLS needs a certificate or PSKs ([tls] cert/key/ca or psk)");
  error_code ec;
  generic::endpoint ep;
  if (where.is_unix()) {
    if (auto r = clear_stale_socket(where.path); !r) return r;
    ep = generic::endpoint(asio::local::stream_protocol::endpoint(where.path));
  } else {
    asio::ip::tcp::resolver resolver(io_);
    auto results = resolver.resolve(where.tcp.host, std::to_string(where.tcp.port),
                                    asio::ip::tcp::resolver::passive |
                                        asio::ip::tcp::resolver::numeric_service,
                                    ec);
    if (ec || results.empty())
      return Error::make(Error::Code::kInvalidArgument, "cannot resolve listen address " +
                                                            where.to_string() + ": " +
                                                            ec.message());
    ep = generic::endpoint(results.begin()->endpoint());
  }
  acceptor_.open(ep.protocol(), ec);
  if (!ec && !where.is_unix()) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec && where.is_unix() && ::chmod(where.path.c_str(), options_.unix_mode) != 0)
    ec = error_code(errno, boost::system::system_category());
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error_code ignored;
    acceptor_.close(ignored);
    return Error::make(Error::Code::kIo,
                       "cannot listen on " + where.to_string() + ": " + ec.message());
  }
  where_ = where;
  if (!where.is_unix() && !options_.authenticated && !where.tls) {
    const auto local = ip_endpoint(acceptor_.local_endpoint(ec));
    if (!ec && local && !local->address().is_loopback())
      spdlog::warn("{}: listening on {}, reachable from the network with no authentication: "
                   "whoever reaches it can use what it serves. Bind 127.0.0.1 or a UNIX socket, "
                   "or reach it through a TLS tunnel and a firewall.",
                   options_.label, local_endpoint().to_string());
  }
  return {};
}

// Holds one connection's place in the counts; the stream it rides on gives it back when the
// connection ends (whoever owns the stream then).
class Listener::Slot {
 public:
  Slot(std::shared_ptr<Counts> counts, std::string key)
      : counts_(std::move(counts)), key_(std::move(key)) {
    ++counts_->total;
    ++counts_->per_address[key_];
  }
  ~Slot() {
    --counts_->total;
    auto it = counts_->per_address.find(key_);
    if (--it->second == 0) counts_->per_address.erase(it);
  }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

 private:
  std::shared_ptr<Counts> counts_;
  std::string key_;
};

namespace {

// The accepted stream with its Slot: forwards everything, and frees the place when destroyed.
template <class Slot>
class CountedStream final : public Stream {
 public:
  CountedStream(std::unique_ptr<Stream> inner, std::unique_ptr<Slot> slot)
      : inner_(std::move(inner)), slot_(std::move(slot)) {}
  boost::asio::any_io_executor get_executor() override { return inner_->get_executor(); }
  void async_read_some(boost::asio::mutable_buffer b, Handler h) override {
    inner_->async_read_some(b, std::move(h));
  }
  void async_read(boost::asio::mutable_buffer b, Handler h) override {
    inner_->async_read(b, std::move(h));
  }
  void async_write_some(boost::asio::const_buffer b, Handler h) override {
    inner_->async_write_some(b, std::move(h));
  }
  void async_write(std::span<const boost::asio::const_buffer> b, Handler h) override {
    inner_->async_write(b, std::move(h));
  }
  using Stream::async_write;
  void close() override { inner_->close(); }
  bool is_open() const override { return inner_->is_open(); }
  const PeerInfo& peer() const override { return inner_->peer(); }

 private:
  std::unique_ptr<Stream> inner_;
  std::unique_ptr<Slot> slot_;
};

}  // namespace

// The per-address count's key: an IPv4 address, an IPv6 /64 (one host has a whole /64 to pick
// source addresses from), or "unix" for every local peer.
std::string Listener::address_key(const PeerInfo& peer) {
  if (!peer.address) return "unix";
  if (peer.address->is_v6() && !peer.address->to_v6().is_v4_mapped()) {
    auto bytes = peer.address->to_v6().to_bytes();
    std::fill(bytes.begin() + 8, bytes.end(), 0);
    return boost::asio::ip::make_address_v6(bytes).to_string() + "/64";
  }
  return peer.address->to_string();
}

// Refusals come by the thousand from scanners and floods: the first ten are logged, then one in
// a hundred.
bool Listener::worth_logging(uint64_t count) { return count <= 10 || count % 100 == 0; }

void Listener::note_refusal(const std::string& peer, const std::string& why) {
  ++refused_;
  if (worth_logging(refused_))
    spdlog::warn("{}: refused {}: {} ({} refused so far)", options_.label, peer, why, refused_);
}

void Listener::start(AcceptHandler on_accept) {
  on_accept_ = std::move(on_accept);
  accept();
}

void Listener::accept() {
  acceptor_.async_accept(
      [this, alive = std::weak_ptr<bool>(alive_)](error_code ec, generic::socket socket) {
        if (alive.expired() || ec == asio::error::operation_aborted || !acceptor_.is_open())
          return;
        if (ec) {
          // Out of descriptors, typically: the connection stays queued and a new accept would
          // fail at once. Pause (10 ms doubling to 1 s) rather than spin.
          ++accept_errors_;
          backoff_ = std::min(backoff_.count() ? backoff_ * 2 : std::chrono::milliseconds(10),
                              std::chrono::milliseconds(1000));
          if (accept_errors_ % 100 == 1)
            spdlog::warn("{}: accept failed: {} ({} failures so far; retrying in {} ms)",
                         options_.label, ec.message(), accept_errors_, backoff_.count());
          retry_.expires_after(backoff_);
          retry_.async_wait([this, alive](error_code e) {
            if (!e && !alive.expired() && acceptor_.is_open()) accept();
          });
          return;
        }
        backoff_ = std::chrono::milliseconds(0);
        std::unique_ptr<SocketStream> stream;
        if (where_.is_unix())
          stream = std::make_unique<UnixStream>(std::move(socket));
        else
          stream = std::make_unique<TcpStream>(std::move(socket), options_.tcp);
        const PeerInfo& peer = stream->peer();
        const std::string key = address_key(peer);
        const auto it = counts_->per_address.find(key);
        const size_t from_here = it == counts_->per_address.end() ? 0 : it->second;
        if (options_.max_connections && counts_->total >= options_.max_connections) {
          note_refusal(peer.name, std::to_string(counts_->total) + " connections open");
          stream->close();
        } else if (options_.max_per_address && from_here >= options_.max_per_address) {
          note_refusal(peer.name,
                       std::to_string(from_here) + " connections open from " + key);
          stream->close();
        } else {
          auto slot = std::make_unique<Slot>(counts_, key);
          if (where_.tls)
            handshake(std::move(stream), std::move(slot));
          else
            on_accept(std::move(stream), std::move(slot));
        }
        accept();
      });
}

void Listener::handshake(std::unique_ptr<SocketStream> stream, std::unique_ptr<Slot> slot) {
  std::string name = stream->peer().name;
  options_.tls->upgrade(
      std::move(stream), [this, alive = std::weak_ptr<bool>(alive_), name = std::move(name),
                          slot = std::move(slot)](Result<std::unique_ptr<Stream>> tls) mutable {
        if (alive.expired()) return;
        if (!tls) {
          if (worth_logging(++handshake_failures_))
            spdlog::warn("{}: refused {}: {} ({} refused handshakes so far)", options_.label, name,
                         tls.error().message, handshake_failures_);
          return;
        }
        if (acceptor_.is_open()) on_accept(std::move(*tls), std::move(slot));
      });
}

void Listener::on_accept(std::unique_ptr<Stream> plain, std::unique_ptr<Slot> slot) {
  std::unique_ptr<Stream> stream =
      std::make_unique<CountedStream<Slot>>(std::move(plain), std::move(slot));
  if (options_.check) {
    if (auto ok = options_.check(stream->peer()); !ok) {
      note_refusal(stream->peer().name, ok.error().message);
      if (options_.refuse) return options_.refuse(std::move(stream), ok.error());
      stream->close();
      return;
    }
  }
  if (on_accept_) on_accept_(std::move(stream));
}

void Listener::stop() {
  retry_.cancel();
  if (!acceptor_.is_open()) return;
  error_code ec;
  acceptor_.close(ec);
  if (where_.is_unix()) ::unlink(where_.path.c_str());
}

uint16_t Listener::local_port() const {
  if (where_.is_unix() || !acceptor_.is_open()) return 0;
  error_code ec;
  const auto ep = ip_endpoint(acceptor_.local_endpoint(ec));
  return !ec && ep ? ep->port() : 0;
}

Endpoint Listener::local_endpoint() const {
  Endpoint e = where_;
  if (!e.is_unix()) e.tcp.port = local_port();
  return e;
}

Listener::PeerCheck Listener::same_user_or_root(uid_t uid) {
  return [uid](const PeerInfo& peer) -> Result<void> {
    if (!peer.uid)
      return Error::make(Error::Code::kDenied, "only local users on the UNIX socket may connect");
    if (*peer.uid == 0 || *peer.uid == uid) return {};
    return Error::make(Error::Code::kDenied,
                       "uid " + std::to_string(*peer.uid) + " is neither the socket's owner (uid " +
                           std::to_string(uid) + ") nor root");
  };
}

}  // namespace usb::net
