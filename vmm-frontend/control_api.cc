#include "vmm-frontend/control_api.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <deque>
#include <optional>

#include "usb/core/loop_checker.h"
#include "usb/core/printable.h"
#include "usb/net/beast_stream.h"
#include "usb/net/listener.h"
#include "vmm-frontend/control_routes.h"
#include "vmm-frontend/vusbd.h"

namespace vusbd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using usb::net::BeastStream;
using error_code = boost::system::error_code;

namespace {
constexpr size_t kMaxConnections = 64;  // HTTP connections
constexpr size_t kMaxSubscribers = 16;  // event streams, on top
constexpr size_t kHeaderLimit = 8 * 1024;
constexpr size_t kBodyLimit = 64 * 1024;
constexpr auto kRequestTimeout = std::chrono::seconds(30);
constexpr size_t kMaxQueuedEvents = 256;
constexpr auto kStatsInterval = std::chrono::seconds(1);

// JSON text for the wire. Names and bus ids can come from hostile peers (a request target, a
// server's device list): invalid UTF-8 is replaced, never thrown.
std::string to_text(const nlohmann::json& j, int indent = -1) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

// The host part of a Host header or an Origin's authority: "h", "h:p", "[v6]:p" → "h" / "[v6]".
std::string host_part(std::string_view authority) {
  if (authority.starts_with("[")) {
    const auto end = authority.find(']');
    return std::string(authority.substr(0, end == std::string_view::npos ? end : end + 1));
  }
  return std::string(authority.substr(0, authority.find(':')));
}

}  // namespace

class Connection {
 public:
  virtual ~Connection() = default;
  virtual void close() = 0;
  // Waiting for a complete request (an idle keep-alive connection, or a slow-loris peer
  // trickling one), and since when: the one waiting longest makes room for a new connection
  // when every place is taken.
  virtual bool waiting_for_request() const { return false; }
  std::chrono::steady_clock::time_point waiting_since = std::chrono::steady_clock::now();
};

class WsSession;

struct ControlApi::Impl {
  Impl(asio::io_context& io, Vusbd& daemon, ApiAccess access,
       std::shared_ptr<const usb::net::TlsContext> tls)
      : io(io), daemon(daemon), access(std::move(access)), tls(std::move(tls)), stats(io) {}

  // `refused`: the listener's reason to refuse this peer (answered 403 after its request).
  void on_accept(std::unique_ptr<usb::net::Stream> stream, std::string refused = {});
  void tick_stats();
  void on_stats_tick();
  void broadcast(const std::string& text);
  size_t live_connections() {
    std::erase_if(connections, [](const auto& w) { return w.expired(); });
    return connections.size();
  }

  asio::io_context& io;
  Vusbd& daemon;
  ApiAccess access;
  std::shared_ptr<const usb::net::TlsContext> tls;
  std::unique_ptr<usb::net::Listener> listener;
  asio::steady_timer stats;
  std::vector<std::weak_ptr<Connection>> connections;
  std::vector<std::weak_ptr<WsSession>> subscribers;
  std::weak_ptr<Impl> self_weak;  // sessions and pending handlers hold the API weakly
  std::string listen_host;        // as configured: a Host header naming it is this server
  bool stopped = false;
  uint64_t evicted = 0;  // connections closed to make room
  usb::LoopChecker loop;
};

// One WebSocket subscriber: events out, nothing but pings and close in.
class WsSession : public Connection, public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(BeastStream stream, std::string peer, std::weak_ptr<ControlApi::Impl> api)
      : peer_(std::move(peer)), ws_(std::move(stream)), api_(std::move(api)) {}

  void run(http::request<http::string_body> req) {
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.read_message_max(4096);  // subscribers have nothing to say
    ws_.async_accept(req, [self = shared_from_this()](error_code ec) {
      if (ec)
        return spdlog::warn("control {}: websocket handshake failed: {}", self->peer_,
                            ec.message());
      auto api = self->api_.lock();
      if (!api || api->stopped) return self->close();
      api->subscribers.push_back(self);
      spdlog::info("control {}: event stream subscribed", self->peer_);
      self->send(
          to_text(nlohmann::json{{"event", "hello"}, {"devices", api->daemon.devices_json()}}));
      self->read();
    });
  }

  void send(std::string text) {
    if (closed_) return;
    if (queue_.size() >= kMaxQueuedEvents) {
      spdlog::warn("control {}: event subscriber is {} messages behind; dropping it", peer_,
                   queue_.size());
      return close();
    }
    queue_.push_back(std::move(text));
    if (!writing_) write_next();
  }

  void close() override {
    if (closed_) return;
    closed_ = true;
    ws_.next_layer().close();
  }

 private:
  void read() {
    ws_.async_read(buffer_, [self = shared_from_this()](error_code ec, size_t) {
      self->buffer_.consume(self->buffer_.size());
      if (ec) {
        if (ec != websocket::error::closed && !self->closed_)
          spdlog::info("control {}: event stream ended: {}", self->peer_, ec.message());
        return self->close();
      }
      self->read();  // anything a subscriber sends is ignored
    });
  }

  void write_next() {
    if (queue_.empty() || closed_) return;
    writing_ = true;
    ws_.text(true);
    ws_.async_write(asio::buffer(queue_.front()),
                    [self = shared_from_this()](error_code ec, size_t) {
                      self->writing_ = false;
                      self->queue_.pop_front();
                      if (ec) return self->close();
                      self->write_next();
                    });
  }

  std::string peer_;
  websocket::stream<BeastStream> ws_;
  std::weak_ptr<ControlApi::Impl> api_;
  beast::flat_buffer buffer_;
  std::deque<std::string> queue_;
  bool writing_ = false;
  bool closed_ = false;
};

// One HTTP connection: requests in order, keep-alive, or an upgrade to the event stream.
class HttpSession : public Connection, public std::enable_shared_from_this<HttpSession> {
 public:
  // A session with a `refused` reason answers its request 403 with it, then hangs up (a peer
  // the listener's check refused: told why rather than cut off, and the request read first,
  // as closing before it arrives would break the client's send).
  HttpSession(std::unique_ptr<usb::net::Stream> stream, std::weak_ptr<ControlApi::Impl> api,
              std::string refused = {})
      : peer_(stream->peer().name), stream_(std::move(stream)), timer_(stream_.get_executor()),
        api_(std::move(api)), refused_(std::move(refused)) {}

  void read() {
    reading_ = true;
    waiting_since = std::chrono::steady_clock::now();
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(kBodyLimit);
    arm_timeout();
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](error_code ec, size_t) { self->on_read(ec); });
  }

  void close() override {
    timer_.cancel();
    stream_.close();
  }
  bool waiting_for_request() const override { return reading_ && !closed_by_evict_; }
  void evict() {
    closed_by_evict_ = true;
    close();
  }

 private:
  // The request (or the response's delivery) must finish within kRequestTimeout; past it the
  // stream is closed, which ends the outstanding read or write with operation_aborted.
  void arm_timeout() {
    timed_out_ = false;
    timer_.expires_after(kRequestTimeout);
    timer_.async_wait([weak = weak_from_this()](error_code ec) {
      auto self = weak.lock();
      if (ec || !self) return;
      self->timed_out_ = true;
      self->stream_.close();
    });
  }

  void on_read(error_code ec) {
    timer_.cancel();
    if (timed_out_) {
      spdlog::info("control {}: no complete request in {} s; closing", peer_,
                   kRequestTimeout.count());
      return close();
    }
    if (ec == http::error::end_of_stream || ec == asio::error::operation_aborted ||
        ec == asio::error::connection_reset || ec == asio::error::eof)
      return close();
    if (ec) {
      // A malformed or oversized request: answer once, then hang up.
      spdlog::warn("control {}: bad request: {}", peer_, ec.message());
      const unsigned status =
          (ec == http::error::body_limit || ec == http::error::header_limit) ? 413 : 400;
      return respond(status, to_text(nlohmann::json{{"error", "bad request: " + ec.message()}}),
                     "application/json", 11, false);
    }
    auto req = parser_->release();
    reading_ = false;
    auto api = api_.lock();
    if (!api || api->stopped) return close();
    if (!refused_.empty())
      return respond(403, to_text(nlohmann::json{{"error", refused_}}), "application/json",
                     req.version(), false);
    if (auto why = refuse_cross_site(*api, req); !why.empty()) {
      spdlog::warn("control {}: refused: {}", peer_, why);
      return respond(403, to_text(nlohmann::json{{"error", why}}), "application/json",
                     req.version(), false);
    }
    const std::string_view target(req.target().data(), req.target().size());
    const std::string_view method(req.method_string().data(), req.method_string().size());
    const auto auth = req[http::field::authorization];
    const ApiCaller caller =
        api->access.identify(stream_.peer(), std::string_view(auth.data(), auth.size()));
    if (auto v = ApiAccess::check(caller, method, target); v.status) {
      spdlog::warn("control {}: {} {} refused ({}): {}", peer_, usb::printable(method),
                   usb::printable(target), v.status, v.why);
      // Refused: answered, then hung up (a refused peer does not keep a place).
      return respond(v.status, to_text(nlohmann::json{{"error", v.why}}), "application/json",
                     req.version(), false, v.status == 401);
    }
    if (websocket::is_upgrade(req)) {
      if (req.target() != "/api/v1/events")
        return respond(404, R"({"error":"websockets live at /api/v1/events"})", "application/json",
                       req.version(), false);
      std::erase_if(api->subscribers, [](const auto& w) { return w.expired(); });
      if (api->subscribers.size() >= kMaxSubscribers) {
        spdlog::warn("control {}: {} event streams open; refusing another", peer_,
                     kMaxSubscribers);
        return respond(503, R"({"error":"too many event streams"})", "application/json",
                       req.version(), false);
      }
      timer_.cancel();
      auto ws = std::make_shared<WsSession>(std::move(stream_), peer_, api_);
      api->connections.push_back(ws);
      return ws->run(std::move(req));
    }
    if (req.method() == http::verb::get && (target == "/" || target == "/index.html"))
      return respond(200, std::string(dashboard_html()), "text/html; charset=utf-8", req.version(),
                     req.keep_alive());
    RouteResult r;
    try {
      r = route(api->daemon, method, target, req.body());
      if (r.status < 400 && !ApiAccess::filter(caller, target, r.body)) r.status = 404;
    } catch (const std::exception& e) {
      // A bug, not an input error: answer it and keep serving everyone else.
      spdlog::error("control {}: {} failed: {}", peer_, method, e.what());
      r = {500, nlohmann::json{{"error", std::string("internal error: ") + e.what()}}};
    }
    respond(r.status, to_text(r.body, 2) + "\n", "application/json", req.version(),
            req.keep_alive());
  }

  // Browsers let any web page send simple requests to 127.0.0.1 (CSRF) and resolve a hostile
  // name to it (DNS rebinding). Refused: an Origin other than this server, a Host that is not a
  // loopback name or the address the API listens on, a POST whose body is not declared JSON (a
  // page cannot send application/json cross-site without a preflight we never answer).
  std::string refuse_cross_site(const ControlApi::Impl& api,
                                const http::request<http::string_body>& req) const {
    const std::string host = host_part(std::string_view(req[http::field::host]));
    const bool local_host = host == "127.0.0.1" || host == "localhost" || host == "[::1]" ||
                            host == api.listen_host || host.empty();
    if (!local_host) return "Host '" + host + "' is not this server";
    if (auto origin = req[http::field::origin]; !origin.empty()) {
      std::string_view o(origin.data(), origin.size());
      const auto scheme = o.find("://");
      const std::string ohost =
          scheme == std::string_view::npos ? std::string(o) : host_part(o.substr(scheme + 3));
      if (ohost != host) return "Origin '" + std::string(o) + "' is another site";
    }
    if (req.method() == http::verb::post) {
      const auto type = req[http::field::content_type];
      if (std::string_view(type.data(), type.size()).find("application/json") ==
          std::string_view::npos)
        return "POST bodies must be Content-Type: application/json";
    }
    return {};
  }

  void respond(unsigned status, std::string body, std::string_view type, unsigned version,
               bool keep_alive, bool ask_for_token = false) {
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(status), version);
    res->set(http::field::server, "vusbd");
    if (ask_for_token) res->set(http::field::www_authenticate, "Bearer realm=\"vusbd\"");
    res->set(http::field::content_type, beast::string_view(type.data(), type.size()));
    res->keep_alive(keep_alive);
    res->body() = std::move(body);
    res->prepare_payload();
    arm_timeout();
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, keep_alive](error_code ec, size_t) {
                        self->timer_.cancel();
                        if (ec || !keep_alive) return self->close();
                        self->read();
                      });
  }

  std::string peer_;
  BeastStream stream_;
  asio::steady_timer timer_;
  bool timed_out_ = false;
  std::weak_ptr<ControlApi::Impl> api_;
  std::string refused_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool reading_ = false;          // waiting for (the rest of) a request
  bool closed_by_evict_ = false;  // made room for a newer connection
};

void ControlApi::Impl::on_accept(std::unique_ptr<usb::net::Stream> stream, std::string refused) {
  if (stopped) return stream->close();
  std::erase_if(subscribers, [](const auto& w) { return w.expired(); });
  if (live_connections() - subscribers.size() >= kMaxConnections) {
    // Every place taken: the connection that has waited longest for a whole request goes
    // (peers that trickle headers, or sit idle, cannot lock out the ones that send a request).
    std::shared_ptr<HttpSession> oldest;
    for (auto& w : connections)
      if (auto c = std::dynamic_pointer_cast<HttpSession>(w.lock());
          c && c->waiting_for_request() && (!oldest || c->waiting_since < oldest->waiting_since))
        oldest = c;
    if (!oldest) {
      spdlog::warn("control: {} connections open; refusing another", kMaxConnections);
      return stream->close();
    }
    if (++evicted % 100 == 1)
      spdlog::warn("control: {} connections open; closing the oldest one without a request "
                   "({} so far)", kMaxConnections, evicted);
    oldest->evict();
    std::erase_if(connections, [&](const auto& w) { return w.lock() == oldest; });
  }
  auto session = std::make_shared<HttpSession>(std::move(stream), self_weak, std::move(refused));
  connections.push_back(session);
  session->read();
}

void ControlApi::Impl::tick_stats() {
  stats.expires_after(kStatsInterval);
  stats.async_wait([weak = self_weak](error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->stopped) return;
    self->on_stats_tick();
  });
}

void ControlApi::Impl::on_stats_tick() {
  std::erase_if(subscribers, [](const auto& w) { return w.expired(); });
  if (!subscribers.empty())
    broadcast(to_text(nlohmann::json{{"event", "stats"}, {"stats", daemon.stats()}}));
  tick_stats();
}

void ControlApi::Impl::broadcast(const std::string& text) {
  loop.check();
  std::erase_if(subscribers, [](const auto& w) { return w.expired(); });
  for (auto& w : std::vector(subscribers))
    if (auto s = w.lock()) s->send(text);
}

ControlApi::ControlApi(asio::io_context& io, Vusbd& daemon, ApiAccess access,
                       std::shared_ptr<const usb::net::TlsContext> tls)
    : impl_(std::make_shared<Impl>(io, daemon, std::move(access), std::move(tls))) {
  impl_->self_weak = impl_;
}

ControlApi::~ControlApi() {
  stop();
}

usb::Result<void> ControlApi::listen(const usb::net::Endpoint& at) {
  usb::net::Listener::Options options;
  options.label = "control";
  options.tls = impl_->tls;
  // Changes always need a token; reads too unless anonymous = "read".
  options.authenticated = !impl_->access.anonymous_reads();
  if (at.is_unix()) {
    // The socket file is open to every local user so that a refused one is told why (403);
    // only the daemon's own uid and root get past the peer check.
    options.unix_mode = 0666;
    options.check = usb::net::Listener::same_user_or_root(::getuid());
    options.refuse = [weak = impl_->self_weak](std::unique_ptr<usb::net::Stream> stream,
                                               const usb::Error& why) {
      if (auto self = weak.lock()) self->on_accept(std::move(stream), why.message);
    };
  }
  auto listener = std::make_unique<usb::net::Listener>(impl_->io, std::move(options));
  if (auto r = listener->listen(at); !r)
    return usb::Error::make(r.error().code, "control API: " + r.error().message);
  impl_->listen_host = at.is_unix() ? std::string("localhost")
                       : at.tcp.host.find(':') != std::string::npos ? "[" + at.tcp.host + "]"
                                                                      : at.tcp.host;
  listener->start([weak = impl_->self_weak](std::unique_ptr<usb::net::Stream> stream) {
    if (auto self = weak.lock()) self->on_accept(std::move(stream));
  });
  impl_->listener = std::move(listener);
  impl_->tick_stats();
  if (at.is_unix())
    spdlog::info("vusbd: control API on {} (vusbctl --socket {})", at.to_string(), at.path);
  else
    spdlog::info("vusbd: control API and dashboard on http://{}:{}/", at.tcp.host, local_port());
  return {};
}

uint16_t ControlApi::local_port() const {
  return impl_->listener ? impl_->listener->local_port() : 0;
}

void ControlApi::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  if (impl_->listener) impl_->listener->stop();
  impl_->stats.cancel();
  for (auto& w : impl_->connections)
    if (auto c = w.lock()) c->close();
  impl_->connections.clear();
  impl_->subscribers.clear();
}

void ControlApi::publish(const nlohmann::json& event) {
  if (impl_->stopped) return;
  impl_->broadcast(to_text(event));
}

}  // namespace vusbd
