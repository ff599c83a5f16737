#include "usb/usbip/client_channel.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cstring>

#include "usb/core/byte_order.h"
#include "usb/net/connector.h"

namespace usb::usbip {

namespace asio = boost::asio;
namespace wire = usb::wire::usbip;
using boost::system::error_code;

ClientChannel::ClientChannel(std::unique_ptr<usb::net::Stream> stream, Options options)
    : stream_(std::move(stream)), options_(std::move(options)), peer_(stream_->peer().name) {}

ClientChannel::~ClientChannel() = default;

void ClientChannel::import(asio::io_context& io, const usb::net::Endpoint& server,
                           const std::string& busid, Options options, ImportCallback done) {
  const usb::net::ConnectOptions connect{options.tcp, options.tls};
  const auto timeout = options.connect_timeout;
  auto shared_done = std::make_shared<ImportCallback>(std::move(done));
  usb::net::async_connect(
      io, server, connect, timeout,
      [server, busid, options = std::move(options),
       shared_done](usb::Result<std::unique_ptr<usb::net::Stream>> stream) mutable {
        if (!stream) return (*shared_done)(std::unexpected(stream.error()));
        auto ch = std::make_shared<ClientChannel>(std::move(*stream), std::move(options));
        ch->peer_ = server.to_string();
        ch->start_import(busid, shared_done);
      });
}

void ClientChannel::import(std::unique_ptr<usb::net::Stream> stream, const std::string& busid,
                           Options options, ImportCallback done) {
  auto ch = std::make_shared<ClientChannel>(std::move(stream), std::move(options));
  ch->start_import(busid, std::make_shared<ImportCallback>(std::move(done)));
}

void ClientChannel::start_import(const std::string& busid,
                                 std::shared_ptr<ImportCallback> shared_done) {
  // The exchange has a deadline: on expiry the stream closes, the pending read fails, and the
  // import fails saying so.
  auto deadline = std::make_shared<asio::steady_timer>(stream_->get_executor());
  auto expired = std::make_shared<bool>(false);
  deadline->expires_after(options_.import_timeout);
  deadline->async_wait([weak = weak_from_this(), expired](error_code ec) {
    if (ec) return;
    *expired = true;
    if (auto self = weak.lock()) self->stream_->close();
  });
  const auto timeout_ms = options_.import_timeout.count();
  auto fail = [shared_done, deadline, expired, timeout_ms](usb::Error::Code code, std::string msg) {
    deadline->cancel();
    if (*expired) {
      code = usb::Error::Code::kIo;
      msg = fmt::format("no import reply within {} ms", timeout_ms);
    }
    (*shared_done)(usb::Error::make(code, std::move(msg)));
  };
  auto req = wire::encode_import_request(busid);
  if (!req) return (*shared_done)(std::unexpected(req.error()));
  auto out = std::make_shared<std::vector<uint8_t>>();
  auto h = wire::encode_op_header({wire::kVersion, wire::kOpReqImport, 0});
  out->insert(out->end(), h.begin(), h.end());
  out->insert(out->end(), req->begin(), req->end());
  auto self = shared_from_this();
  stream_->async_write(asio::buffer(*out), [=](error_code ec, size_t) {
    (void)out;
    if (ec) return fail(usb::Error::Code::kIo, "send import: " + ec.message());
    self->scratch_.resize(wire::kOpHeaderSize + wire::kDeviceRecordSize);
    self->stream_->async_read(
        asio::buffer(self->scratch_.data(), wire::kOpHeaderSize), [=](error_code ec, size_t) {
          if (ec) return fail(usb::Error::Code::kIo, "import reply: " + ec.message());
          auto oh =
              wire::decode_op_header(std::span(self->scratch_.data(), wire::kOpHeaderSize));
          if (!oh || oh->code != wire::kOpRepImport)
            return fail(usb::Error::Code::kMalformed, "bad import reply");
          if (oh->status != wire::kStOk)
            return fail(oh->status == wire::kStDevBusy       ? usb::Error::Code::kBusy
                        : oh->status == wire::kStNotAvailable ? usb::Error::Code::kDenied
                                                              : usb::Error::Code::kNotFound,
                        fmt::format("server refused import of {} (status {}{})", busid,
                                    oh->status,
                                    oh->status == wire::kStNotAvailable
                                        ? ": not available to this client, see the server's log"
                                        : ""));
          self->stream_->async_read(
              asio::buffer(self->scratch_.data(), wire::kDeviceRecordSize),
              [=](error_code ec, size_t) {
                if (ec) return fail(usb::Error::Code::kIo, "import record: " + ec.message());
                auto rec = wire::decode_device_record(
                    std::span(self->scratch_.data(), wire::kDeviceRecordSize));
                if (!rec) return fail(usb::Error::Code::kMalformed, rec.error().message);
                if (rec->busid != busid)
                  return fail(usb::Error::Code::kMalformed,
                              "import reply names bus id '" + rec->busid + "'");
                self->record_ = *rec;
                self->devid_ = wire::make_devid(rec->busnum, rec->devnum);
                deadline->cancel();
                self->connected_ = true;
                self->read_header();
                (*shared_done)(self);
              });
        });
  });
}

uint32_t ClientChannel::take_seqnum() {
  uint32_t s = next_seqnum_++;
  if (next_seqnum_ == 0) next_seqnum_ = 1;
  return s;
}

void ClientChannel::fail(const std::string& reason) {
  if (!connected_ && !stream_->is_open()) return;
  const bool was = connected_;
  connected_ = false;
  stream_->close();
  cache_.clear();
  // Every transfer still out there is lost with the connection.
  std::vector<usb::Transfer*> lost;
  for (auto& [_, p] : inflight_) lost.push_back(p.transfer);
  inflight_.clear();
  seq_of_.clear();
  unlinks_.clear();
  for (usb::Transfer* t : lost) t->complete(usb::Status::kNoDevice, 0);
  if (was) {
    spdlog::info("usbip client {}: disconnected: {}", peer_, reason);
    if (options_.on_disconnect) options_.on_disconnect(reason);
  }
}

void ClientChannel::queue(Out out) {
  cache_.push_back(std::move(out));
  if (!options_.batch) {
    if (!write_in_progress_) flush();
    return;
  }
  if (!flush_posted_) {
    flush_posted_ = true;
    asio::post(stream_->get_executor(), [self = shared_from_this()] {
      self->flush_posted_ = false;
      if (!self->write_in_progress_) self->flush();
    });
  }
}

void ClientChannel::flush() {
  if (cache_.empty() || !connected_) return;
  if (options_.batch) {
    writing_ = std::move(cache_);
    cache_.clear();
  } else {
    writing_.clear();
    writing_.push_back(std::move(cache_.front()));
    cache_.erase(cache_.begin());
  }
  buffers_.clear();
  for (Out& o : writing_) {
    buffers_.emplace_back(o.header.data(), o.header.size());
    if (o.length) buffers_.emplace_back(o.data, o.length);
    if (!o.iso.empty()) buffers_.emplace_back(o.iso.data(), o.iso.size());
  }
  write_in_progress_ = true;
  stream_->async_write(buffers_, [self = shared_from_this()](error_code ec, size_t) {
    self->write_in_progress_ = false;
    self->writing_.clear();
    if (ec) return self->fail("write: " + ec.message());
    if (!self->cache_.empty()) self->flush();
  });
}

void ClientChannel::read_header() {
  reader_.read(*stream_, header_, [self = shared_from_this()](error_code ec) {
    if (ec) return self->fail(ec == asio::error::eof ? "server hung up" : ec.message());
    self->on_header();
  });
}

void ClientChannel::discard(uint64_t bytes) {
  if (bytes == 0) return read_header();
  scratch_.resize(std::min<uint64_t>(bytes, 64 * 1024));
  const size_t n = scratch_.size();
  reader_.read(*stream_, scratch_, [self = shared_from_this(), bytes, n](error_code ec) {
    if (ec) return self->fail(ec.message());
    self->discard(bytes - n);
  });
}

void ClientChannel::on_header() {
  auto pdu = wire::decode_urb_header(header_, options_.limits);
  if (!pdu) return fail("malformed reply: " + pdu.error().message);
  if (auto* r = std::get_if<wire::RetUnlink>(&*pdu)) {
    auto u = unlinks_.find(r->seqnum);
    if (u != unlinks_.end()) {
      const uint32_t target = u->second;
      unlinks_.erase(u);
      // Status -ECONNRESET: the server dropped the URB and will never send its RET_SUBMIT.
      // Status 0: its RET_SUBMIT came (or comes) first and completed it.
      if (r->status != 0) complete(target, usb::Status::kCancelled, 0);
    }
    return read_header();
  }
  auto* r = std::get_if<wire::RetSubmit>(&*pdu);
  if (!r) return fail("server sent a command PDU");
  auto it = inflight_.find(r->seqnum);
  const uint64_t iso_bytes = wire::ret_submit_iso_length(*r);
  if (it == inflight_.end()) {
    // A reply for a transfer already given back (unlinked): read it and drop it.
    const uint64_t payload = r->actual_length > 0 ? uint64_t(r->actual_length) : 0;
    spdlog::debug("usbip client {}: dropping late RET_SUBMIT {}", peer_, r->seqnum);
    return discard(payload + iso_bytes);
  }
  Pending p = it->second;
  usb::Transfer& t = *p.transfer;
  const uint32_t payload = wire::ret_submit_payload_length(*r, p.direction);
  if (payload > t.length())
    return fail(fmt::format("RET_SUBMIT {} carries {} bytes for a {}-byte buffer", r->seqnum,
                            payload, t.length()));
  const bool iso = t.type() == usb::TransferType::kIsochronous;
  if (iso && r->number_of_packets == 0 && r->status != 0 && payload == 0) {
    // A server that refused the URB outright (vusb-stub: the endpoint left the active alt
    // setting; a device gone) answers without iso descriptors: the URB failed, nothing else did.
    for (usb::IsoPacket& pk : t.iso_packets) {
      pk.actual_length = 0;
      pk.status = usb::from_linux_errno(r->status);
    }
    complete(r->seqnum, usb::from_linux_errno(r->status), 0);
    return read_header();
  }
  if (iso && uint32_t(std::max(r->number_of_packets, 0)) != t.iso_packets.size())
    return fail(fmt::format("RET_SUBMIT {}: {} iso packets for {}", r->seqnum,
                            r->number_of_packets, t.iso_packets.size()));
  auto finish_read = [self = shared_from_this(), seqnum = r->seqnum, ret = *r, iso, payload]() {
    self->on_reply_data(seqnum, ret, iso, payload);
  };
  if (payload == 0) return finish_read();
  reader_.read(*stream_, std::span(t.buffer().data(), payload),
               [self = shared_from_this(), finish_read](error_code ec) {
                 if (ec) return self->fail(ec.message());
                 finish_read();
               });
}

void ClientChannel::on_reply_data(uint32_t seqnum, wire::RetSubmit ret, bool iso,
                                  uint32_t payload) {
  auto it = inflight_.find(seqnum);
  if (it == inflight_.end()) return fail("transfer vanished while reading its reply");
  usb::Transfer& t = *it->second.transfer;
  if (!iso) {
    complete(seqnum, usb::from_linux_errno(ret.status), uint32_t(std::max(ret.actual_length, 0)));
    return read_header();
  }
  scratch_.resize(t.iso_packets.size() * wire::kIsoDescriptorSize);
  reader_.read(*stream_, scratch_, [self = shared_from_this(), seqnum, ret, payload](error_code ec) {
    if (ec) return self->fail(ec.message());
    auto it = self->inflight_.find(seqnum);
    if (it == self->inflight_.end()) return self->fail("transfer vanished while reading its reply");
    usb::Transfer& t = *it->second.transfer;
    auto descs = wire::decode_iso_descriptors(self->scratch_, uint32_t(t.length()));
    if (!descs) return self->fail("bad iso descriptors: " + descs.error().message);
    uint64_t sum = 0;
    for (auto& d : *descs) sum += d.actual_length;
    if (it->second.direction == wire::kDirIn && sum != payload)
      return self->fail("iso actual lengths do not add up to the data sent");
    // Unpack: data arrived packed at the start of the buffer; move each packet to its offset,
    // last first, so nothing is overwritten before it moves.
    uint64_t pos = sum;
    for (size_t i = descs->size(); i-- > 0;) {
      const auto& d = (*descs)[i];
      usb::IsoPacket& p = t.iso_packets[i];
      p.actual_length = d.actual_length;
      p.status = usb::from_linux_errno(d.status);
      pos -= d.actual_length;
      if (it->second.direction == wire::kDirIn && d.actual_length && pos != p.offset)
        std::memmove(t.buffer().data() + p.offset, t.buffer().data() + pos, d.actual_length);
    }
    self->complete(seqnum, usb::from_linux_errno(ret.status),
                   uint32_t(std::max(ret.actual_length, 0)));
    self->read_header();
  });
}

void ClientChannel::complete(uint32_t seqnum, usb::Status status, size_t actual) {
  auto it = inflight_.find(seqnum);
  if (it == inflight_.end()) return;
  usb::Transfer* t = it->second.transfer;
  inflight_.erase(it);
  seq_of_.erase(t);
  t->complete(status, actual);
}

void ClientChannel::submit(usb::Transfer& t) {
  const uint32_t seq = take_seqnum();
  t.trace_id = seq;
  inflight_[seq] = {&t, t.direction() == usb::Direction::kIn ? wire::kDirIn : wire::kDirOut};
  seq_of_[&t] = seq;
  send_submit(t, seq);
}

void ClientChannel::send_submit(usb::Transfer& t, uint32_t seqnum) {
  wire::CmdSubmit c;
  c.seqnum = seqnum;
  c.devid = devid_;
  const bool in = t.direction() == usb::Direction::kIn;
  c.direction = in ? wire::kDirIn : wire::kDirOut;
  c.ep = usb::endpoint_number(t.endpoint());
  c.transfer_flags = (t.flags.short_not_ok ? wire::kUrbShortNotOk : 0) |
                     (t.flags.zero_packet ? wire::kUrbZeroPacket : 0) |
                     (in ? wire::kUrbDirIn : 0);
  c.transfer_buffer_length = int32_t(t.length());
  c.interval = int32_t(t.interval);
  Out out;
  if (t.type() == usb::TransferType::kControl) c.setup = t.setup.to_bytes();
  if (t.type() == usb::TransferType::kIsochronous) {
    c.start_frame = t.start_frame < 0 ? 0 : t.start_frame;
    c.number_of_packets = int32_t(t.iso_packets.size());
    c.transfer_flags |= wire::kUrbIsoAsap;
    std::vector<wire::IsoDescriptor> d;
    for (auto& p : t.iso_packets) d.push_back({p.offset, p.length, 0, 0});
    out.iso.resize(d.size() * wire::kIsoDescriptorSize);
    wire::encode_iso_descriptors(d, out.iso);
  } else {
    c.start_frame = t.type() == usb::TransferType::kInterrupt ? -1 : 0;
    c.number_of_packets = t.type() == usb::TransferType::kInterrupt ? -1 : 0;
  }
  out.header = wire::encode(c);
  if (!in && t.length()) {
    out.data = t.buffer().data();
    out.length = t.length();
  }
  out.seqnum = seqnum;
  queue(std::move(out));
}

void ClientChannel::cancel(usb::Transfer& t) {
  auto it = seq_of_.find(&t);
  if (it == seq_of_.end()) return;
  const uint32_t target = it->second;
  // Still in the write cache: it never left, so give it back without asking the server.
  for (auto c = cache_.begin(); c != cache_.end(); ++c) {
    if (c->seqnum == target) {
      cache_.erase(c);
      complete(target, usb::Status::kCancelled, 0);
      return;
    }
  }
  wire::CmdUnlink u;
  u.seqnum = take_seqnum();
  u.devid = devid_;
  u.unlink_seqnum = target;
  unlinks_[u.seqnum] = target;
  Out out;
  out.header = wire::encode(u);
  queue(std::move(out));
}

// ---------------------------------------------------------------- OP_REQ_DEVLIST

namespace {

constexpr uint32_t kMaxDevlistEntries = 4096;

// One asynchronous OP_REQ_DEVLIST exchange; owns its stream and deadline, finishes exactly once.
struct ListOp : std::enable_shared_from_this<ListOp> {
  ListOp(asio::io_context& io, usb::net::Endpoint server, ListCallback done,
         std::shared_ptr<const usb::net::TlsContext> tls)
      : io(io), deadline(io), server(std::move(server)), done(std::move(done)),
        tls(std::move(tls)) {}

  void start(std::chrono::milliseconds timeout) {
    deadline.expires_after(timeout);
    deadline.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec)
        self->fail(usb::Error::Code::kIo,
                   "devlist from " + self->server.to_string() + ": no answer in time");
    });
    usb::net::async_connect(io, server, {{}, tls}, timeout,
                            [self = shared_from_this()](
                                usb::Result<std::unique_ptr<usb::net::Stream>> stream) {
                              if (!stream)
                                return self->fail(stream.error().code, stream.error().message);
                              if (!self->done) return;  // timed out meanwhile
                              self->stream = std::move(*stream);
                              self->send();
                            });
  }
  void send() {
    request = wire::encode_op_header({wire::kVersion, wire::kOpReqDevlist, 0});
    stream->async_write(
        asio::buffer(request), [self = shared_from_this()](error_code ec, size_t) {
          if (ec) return self->fail(usb::Error::Code::kIo, "devlist: " + ec.message());
          self->stream->async_read(asio::buffer(self->head), [self](error_code ec2, size_t) {
            if (ec2) return self->fail(usb::Error::Code::kIo, "devlist: " + ec2.message());
            auto oh = wire::decode_op_header(std::span(self->head.data(), wire::kOpHeaderSize));
            if (!oh || oh->code != wire::kOpRepDevlist || oh->status != wire::kStOk)
              return self->fail(usb::Error::Code::kMalformed, "bad devlist reply");
            self->remaining = usb::load_be32(self->head.data() + wire::kOpHeaderSize);
            if (self->remaining > kMaxDevlistEntries)
              return self->fail(usb::Error::Code::kTooLarge,
                                "devlist claims " + std::to_string(self->remaining) + " devices");
            self->next_record();
          });
        });
  }
  void next_record() {
    if (remaining == 0) return finish();
    --remaining;
    record.resize(wire::kDeviceRecordSize);
    stream->async_read(
        asio::buffer(record), [self = shared_from_this()](error_code ec, size_t) {
          if (ec) return self->fail(usb::Error::Code::kIo, "devlist record: " + ec.message());
          auto d = wire::decode_device_record(self->record);
          if (!d) return self->fail(d.error().code, d.error().message);
          self->out.push_back({*d, {}});
          self->interfaces.resize(size_t{d->num_interfaces} * wire::kInterfaceRecordSize);
          if (self->interfaces.empty()) return self->next_record();
          self->stream->async_read(
              asio::buffer(self->interfaces), [self](error_code ec2, size_t) {
                if (ec2)
                  return self->fail(usb::Error::Code::kIo, "devlist interface: " + ec2.message());
                for (size_t k = 0; k < self->interfaces.size(); k += wire::kInterfaceRecordSize)
                  self->out.back().interfaces.push_back(wire::decode_interface_record(
                      std::span<const uint8_t, wire::kInterfaceRecordSize>(
                          self->interfaces.data() + k, wire::kInterfaceRecordSize)));
                self->next_record();
              });
        });
  }
  void finish() {
    if (!done) return;
    close();
    auto cb = std::move(done);
    cb(std::move(out));
  }
  void fail(usb::Error::Code code, std::string message) {
    if (!done) return;
    close();
    auto cb = std::move(done);
    cb(usb::Error::make(code, std::move(message)));
  }
  void close() {
    deadline.cancel();
    if (stream) stream->close();
  }

  asio::io_context& io;
  asio::steady_timer deadline;
  usb::net::Endpoint server;
  ListCallback done;
  std::shared_ptr<const usb::net::TlsContext> tls;
  std::unique_ptr<usb::net::Stream> stream;
  std::array<uint8_t, wire::kOpHeaderSize> request{};
  std::array<uint8_t, wire::kOpHeaderSize + 4> head{};
  std::vector<uint8_t> record, interfaces;
  uint32_t remaining = 0;
  std::vector<wire::DevlistEntry> out;
};

}  // namespace

void list_devices(asio::io_context& io, const usb::net::Endpoint& server,
                  std::chrono::milliseconds timeout, ListCallback done,
                  std::shared_ptr<const usb::net::TlsContext> tls) {
  std::make_shared<ListOp>(io, server, std::move(done), std::move(tls))->start(timeout);
}

usb::Result<std::vector<wire::DevlistEntry>> list_devices_blocking(
    const usb::net::Endpoint& server, std::shared_ptr<const usb::net::TlsContext> tls,
    std::chrono::milliseconds timeout) {
  asio::io_context io;
  usb::Result<std::vector<wire::DevlistEntry>> out =
      usb::Error::make(usb::Error::Code::kIo, "devlist: no answer");
  list_devices(
      io, server, timeout, [&](auto r) { out = std::move(r); }, std::move(tls));
  io.run();
  return out;
}

}  // namespace usb::usbip
