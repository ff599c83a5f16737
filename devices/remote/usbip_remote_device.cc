#include "devices/remote/usbip_remote_device.h"

#include <spdlog/spdlog.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <unordered_map>

#include "usb/core/byte_order.h"
#include "usb/net/stream_reader.h"

namespace devices {

namespace asio = boost::asio;
namespace wire = usb::wire::usbip;
using asio::ip::tcp;
using boost::system::error_code;

struct UsbipRemoteDevice::Channel : std::enable_shared_from_this<Channel> {
  Channel(asio::io_context& io_, Options options_)
      : io(io_), socket(io_), options(std::move(options_)) {}

  struct Pending {
    usb::Transfer* transfer = nullptr;
    uint32_t direction = wire::kDirOut;
  };
  struct Out {
    wire::UrbHeaderBytes header;
    const uint8_t* data = nullptr;
    size_t length = 0;
    std::vector<uint8_t> iso;
    uint32_t seqnum = 0;  // CMD_SUBMIT's seqnum, 0 for CMD_UNLINK
  };

  asio::io_context& io;
  // TCP to a server, or one end of a socketpair to a device process (import_connected).
  asio::generic::stream_protocol::socket socket;
  Options options;
  std::string peer;
  wire::DeviceRecord record;
  usb::DescriptorSet descriptors;
  usb::DeviceLocation location;
  uint8_t active_config = 0;
  std::vector<uint8_t> alt;
  bool connected = false;
  uint32_t devid = 0;
  uint32_t next_seqnum = 1;
  std::unordered_map<uint32_t, Pending> inflight;  // seqnum → transfer
  std::unordered_map<const usb::Transfer*, uint32_t> seq_of;
  std::unordered_map<uint32_t, uint32_t> unlinks;  // CMD_UNLINK seqnum → target
  std::vector<Out> cache;    // the write cache: flushed once at the end of the loop turn
  std::vector<Out> writing;  // the batch being written
  std::vector<asio::const_buffer> buffers;
  bool flush_posted = false;
  bool write_in_progress = false;
  usb::net::StreamReader reader;
  std::array<uint8_t, wire::kUrbHeaderSize> header{};
  std::vector<uint8_t> scratch;

  uint32_t take_seqnum() {
    uint32_t s = next_seqnum++;
    if (next_seqnum == 0) next_seqnum = 1;
    return s;
  }

  void fail(const std::string& reason) {
    if (!connected && !socket.is_open()) return;
    const bool was = connected;
    connected = false;
    error_code ec;
    socket.close(ec);
    cache.clear();
    // Every transfer still out there is lost with the connection.
    std::vector<usb::Transfer*> lost;
    for (auto& [_, p] : inflight) lost.push_back(p.transfer);
    inflight.clear();
    seq_of.clear();
    unlinks.clear();
    for (usb::Transfer* t : lost) t->complete(usb::Status::kNoDevice, 0);
    if (was) {
      spdlog::info("usbip client {}: disconnected: {}", peer, reason);
      if (options.on_disconnect) options.on_disconnect(reason);
    }
  }

  void queue(Out out) {
    cache.push_back(std::move(out));
    if (!options.batch) {
      if (!write_in_progress) flush();
      return;
    }
    if (!flush_posted) {
      flush_posted = true;
      asio::post(io, [self = shared_from_this()] {
        self->flush_posted = false;
        if (!self->write_in_progress) self->flush();
      });
    }
  }

  void flush() {
    if (cache.empty() || !connected) return;
    if (options.batch) {
      writing = std::move(cache);
      cache.clear();
    } else {
      writing.clear();
      writing.push_back(std::move(cache.front()));
      cache.erase(cache.begin());
    }
    buffers.clear();
    for (Out& o : writing) {
      buffers.emplace_back(o.header.data(), o.header.size());
      if (o.length) buffers.emplace_back(o.data, o.length);
      if (!o.iso.empty()) buffers.emplace_back(o.iso.data(), o.iso.size());
    }
    write_in_progress = true;
    asio::async_write(socket, buffers, [self = shared_from_this()](error_code ec, size_t) {
      self->write_in_progress = false;
      self->writing.clear();
      if (ec) return self->fail("write: " + ec.message());
      if (!self->cache.empty()) self->flush();
    });
  }

  void read_header() {
    reader.read(socket, header, [self = shared_from_this()](error_code ec) {
      if (ec) return self->fail(ec == asio::error::eof ? "server hung up" : ec.message());
      self->on_header();
    });
  }

  void discard(uint64_t bytes) {
    if (bytes == 0) return read_header();
    scratch.resize(std::min<uint64_t>(bytes, 64 * 1024));
    const size_t n = scratch.size();
    reader.read(socket, scratch, [self = shared_from_this(), bytes, n](error_code ec) {
      if (ec) return self->fail(ec.message());
      self->discard(bytes - n);
    });
  }

  void on_header() {
    auto pdu = wire::decode_urb_header(header, options.limits);
    if (!pdu) return fail("malformed reply: " + pdu.error().message);
    if (auto* r = std::get_if<wire::RetUnlink>(&*pdu)) {
      auto u = unlinks.find(r->seqnum);
      if (u != unlinks.end()) {
        const uint32_t target = u->second;
        unlinks.erase(u);
        // Status -ECONNRESET: the server dropped the URB and will never send its RET_SUBMIT.
        // Status 0: its RET_SUBMIT came (or comes) first and completed it.
        if (r->status != 0) complete(target, usb::Status::kCancelled, 0);
      }
      return read_header();
    }
    auto* r = std::get_if<wire::RetSubmit>(&*pdu);
    if (!r) return fail("server sent a command PDU");
    auto it = inflight.find(r->seqnum);
    const uint64_t iso_bytes = wire::ret_submit_iso_length(*r);
    if (it == inflight.end()) {
      // A reply for a transfer already given back (unlinked): read it and drop it.
      const uint64_t payload = r->actual_length > 0 ? uint64_t(r->actual_length) : 0;
      spdlog::debug("usbip client {}: dropping late RET_SUBMIT {}", peer, r->seqnum);
      return discard(payload + iso_bytes);
    }
    Pending p = it->second;
    usb::Transfer& t = *p.transfer;
    const uint32_t payload = wire::ret_submit_payload_length(*r, p.direction);
    if (payload > t.length())
      return fail(fmt::format("RET_SUBMIT {} carries {} bytes for a {}-byte buffer", r->seqnum,
                              payload, t.length()));
    const bool iso = t.type() == usb::TransferType::kIsochronous;
    if (iso && uint32_t(std::max(r->number_of_packets, 0)) != t.iso_packets.size())
      return fail(fmt::format("RET_SUBMIT {}: {} iso packets for {}", r->seqnum,
                              r->number_of_packets, t.iso_packets.size()));
    auto finish_read = [self = shared_from_this(), seqnum = r->seqnum, ret = *r, iso, payload]() {
      self->on_reply_data(seqnum, ret, iso, payload);
    };
    if (payload == 0) return finish_read();
    reader.read(socket, std::span(t.buffer().data(), payload),
                [self = shared_from_this(), finish_read](error_code ec) {
                  if (ec) return self->fail(ec.message());
                  finish_read();
                });
  }

  void on_reply_data(uint32_t seqnum, wire::RetSubmit ret, bool iso, uint32_t payload) {
    auto it = inflight.find(seqnum);
    if (it == inflight.end()) return fail("transfer vanished while reading its reply");
    usb::Transfer& t = *it->second.transfer;
    if (!iso) {
      complete(seqnum, usb::from_linux_errno(ret.status), uint32_t(std::max(ret.actual_length, 0)));
      return read_header();
    }
    scratch.resize(t.iso_packets.size() * wire::kIsoDescriptorSize);
    reader.read(socket, scratch, [self = shared_from_this(), seqnum, ret, payload](error_code ec) {
      if (ec) return self->fail(ec.message());
      auto it = self->inflight.find(seqnum);
      if (it == self->inflight.end())
        return self->fail("transfer vanished while reading its reply");
      usb::Transfer& t = *it->second.transfer;
      auto descs = wire::decode_iso_descriptors(self->scratch, uint32_t(t.length()));
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

  void complete(uint32_t seqnum, usb::Status status, size_t actual) {
    auto it = inflight.find(seqnum);
    if (it == inflight.end()) return;
    usb::Transfer* t = it->second.transfer;
    inflight.erase(it);
    seq_of.erase(t);
    t->complete(status, actual);
  }

  void send_submit(usb::Transfer& t, uint32_t seqnum) {
    wire::CmdSubmit c;
    c.seqnum = seqnum;
    c.devid = devid;
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
};

namespace {

// Reads the descriptors of a freshly imported device with control transfers on the channel.
class DescriptorFetcher : public std::enable_shared_from_this<DescriptorFetcher> {
 public:
  DescriptorFetcher(UsbipRemoteDevice& dev, usb::DescriptorSet& out,
                    std::move_only_function<void(usb::Result<void>)> done)
      : dev_(dev), out_(out), done_(std::move(done)) {}
  void start() {
    get(usb::desc::kDevice << 8, usb::desc::kDeviceSize,
        [self = shared_from_this()](usb::Transfer& t) {
          auto d = usb::DeviceDescriptor::parse(t.data());
          if (t.status() != usb::Status::kOk || !d)
            return self->finish(
                usb::Error::make(usb::Error::Code::kIo, "cannot read the device descriptor"));
          self->out_.device = *d;
          self->next_config(0);
        });
  }

 private:
  void get(uint16_t value, uint16_t length, std::move_only_function<void(usb::Transfer&)> then) {
    usb::SetupPacket s{0x80, usb::request::kGetDescriptor, value, 0, length};
    current_ = usb::Transfer::control(0x80, s);
    current_->set_completion(
        [self = shared_from_this(), then = std::move(then)](usb::Transfer& t) mutable { then(t); });
    dev_.submit(*current_);
  }
  void next_config(uint8_t index) {
    if (index >= out_.device.num_configurations) return finish({});
    get(uint16_t(usb::desc::kConfiguration << 8 | index), usb::desc::kConfigurationSize,
        [self = shared_from_this(), index](usb::Transfer& t) {
          if (t.status() != usb::Status::kOk || t.actual_length() < 4)
            return self->finish(
                usb::Error::make(usb::Error::Code::kIo, "cannot read configuration header"));
          const uint16_t total = usb::load_le16(t.data().data() + 2);
          self->get(uint16_t(usb::desc::kConfiguration << 8 | index), total,
                    [self, index](usb::Transfer& t) {
                      auto c = usb::ConfigurationDescriptor::parse(t.data());
                      if (t.status() != usb::Status::kOk || !c)
                        return self->finish(usb::Error::make(
                            usb::Error::Code::kIo,
                            "cannot parse configuration " + std::to_string(index)));
                      self->out_.configurations.push_back(std::move(*c));
                      self->next_config(uint8_t(index + 1));
                    });
        });
  }
  void finish(usb::Result<void> r) {
    auto done = std::move(done_);
    done(std::move(r));
  }

  UsbipRemoteDevice& dev_;
  usb::DescriptorSet& out_;
  std::move_only_function<void(usb::Result<void>)> done_;
  std::unique_ptr<usb::Transfer> current_;
};

}  // namespace

UsbipRemoteDevice::UsbipRemoteDevice(std::shared_ptr<Channel> channel)
    : channel_(std::move(channel)) {}

UsbipRemoteDevice::~UsbipRemoteDevice() {
  close();
}

void UsbipRemoteDevice::close() {
  channel_->fail("closed by owner");
}

void UsbipRemoteDevice::import(asio::io_context& io, const usb::net::HostPort& server,
                               const std::string& busid, Options options, ImportCallback done) {
  auto ch = std::make_shared<Channel>(io, std::move(options));
  ch->peer = server.to_string();
  auto shared_done = std::make_shared<ImportCallback>(std::move(done));
  auto resolver = std::make_shared<tcp::resolver>(io);
  auto tcp_socket = std::make_shared<tcp::socket>(io);
  resolver->async_resolve(
      server.host, std::to_string(server.port),
      [=, resolver = resolver](error_code ec, tcp::resolver::results_type results) {
        if (ec) {
          return (*shared_done)(
              usb::Error::make(usb::Error::Code::kIo, "resolve " + ch->peer + ": " + ec.message()));
        }
        asio::async_connect(*tcp_socket, results, [=](error_code ec, const tcp::endpoint&) {
          if (ec) {
            return (*shared_done)(usb::Error::make(usb::Error::Code::kIo,
                                                   "connect " + ch->peer + ": " + ec.message()));
          }
          tcp_socket->set_option(tcp::no_delay(true), ec);
          ch->socket = asio::generic::stream_protocol::socket(std::move(*tcp_socket));
          start_import(ch, busid, shared_done);
        });
      });
}

void UsbipRemoteDevice::import_connected(asio::generic::stream_protocol::socket socket,
                                         std::string peer, const std::string& busid,
                                         Options options, ImportCallback done) {
  auto& io = static_cast<asio::io_context&>(socket.get_executor().context());
  auto ch = std::make_shared<Channel>(io, std::move(options));
  ch->peer = std::move(peer);
  ch->socket = std::move(socket);
  start_import(ch, busid, std::make_shared<ImportCallback>(std::move(done)));
}

void UsbipRemoteDevice::start_import(std::shared_ptr<Channel> ch, const std::string& busid,
                                     std::shared_ptr<ImportCallback> shared_done) {
  auto fail = [shared_done](usb::Error::Code code, std::string msg) {
    (*shared_done)(usb::Error::make(code, std::move(msg)));
  };
  auto req = wire::encode_import_request(busid);
  if (!req) return (*shared_done)(std::unexpected(req.error()));
  auto out = std::make_shared<std::vector<uint8_t>>();
  auto h = wire::encode_op_header({wire::kVersion, wire::kOpReqImport, 0});
  out->insert(out->end(), h.begin(), h.end());
  out->insert(out->end(), req->begin(), req->end());
  asio::async_write(ch->socket, asio::buffer(*out), [=](error_code ec, size_t) {
    (void)out;
    if (ec) return fail(usb::Error::Code::kIo, "send import: " + ec.message());
    ch->scratch.resize(wire::kOpHeaderSize + wire::kDeviceRecordSize);
    asio::async_read(
        ch->socket, asio::buffer(ch->scratch.data(), wire::kOpHeaderSize),
        [=](error_code ec, size_t) {
          if (ec) return fail(usb::Error::Code::kIo, "import reply: " + ec.message());
          auto oh = wire::decode_op_header(std::span(ch->scratch.data(), wire::kOpHeaderSize));
          if (!oh || oh->code != wire::kOpRepImport)
            return fail(usb::Error::Code::kMalformed, "bad import reply");
          if (oh->status != wire::kStOk)
            return fail(oh->status == wire::kStDevBusy ? usb::Error::Code::kBusy
                                                       : usb::Error::Code::kNotFound,
                        fmt::format("server refused import of {} (status {})", busid, oh->status));
          asio::async_read(
              ch->socket, asio::buffer(ch->scratch.data(), wire::kDeviceRecordSize),
              [=](error_code ec, size_t) {
                if (ec) return fail(usb::Error::Code::kIo, "import record: " + ec.message());
                auto rec = wire::decode_device_record(
                    std::span(ch->scratch.data(), wire::kDeviceRecordSize));
                if (!rec) return fail(usb::Error::Code::kMalformed, rec.error().message);
                if (rec->busid != busid)
                  return fail(usb::Error::Code::kMalformed,
                              "import reply names bus id '" + rec->busid + "'");
                ch->record = *rec;
                ch->devid = wire::make_devid(rec->busnum, rec->devnum);
                ch->active_config = rec->configuration_value;
                ch->location = {rec->busnum, rec->devnum, rec->busid, rec->path};
                ch->connected = true;
                ch->read_header();
                auto dev = std::unique_ptr<UsbipRemoteDevice>(new UsbipRemoteDevice(ch));
                UsbipRemoteDevice* raw = dev.get();
                auto holder = std::make_shared<std::unique_ptr<UsbipRemoteDevice>>(std::move(dev));
                auto fetch = std::make_shared<DescriptorFetcher>(
                    *raw, ch->descriptors, [=](usb::Result<void> r) {
                      if (!r) {
                        auto e = r.error();
                        holder->reset();
                        return (*shared_done)(std::unexpected(std::move(e)));
                      }
                      (*shared_done)(std::move(*holder));
                    });
                fetch->start();
              });
        });
  });
}

namespace {

// One asynchronous OP_REQ_DEVLIST exchange; owns its socket and deadline, finishes exactly once.
struct ListOp : std::enable_shared_from_this<ListOp> {
  ListOp(asio::io_context& io, usb::net::HostPort server, UsbipRemoteDevice::ListCallback done)
      : socket(io), resolver(io), deadline(io), server(std::move(server)), done(std::move(done)) {}

  void start(std::chrono::milliseconds timeout) {
    deadline.expires_after(timeout);
    deadline.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec)
        self->fail(usb::Error::Code::kIo,
                   "devlist from " + self->server.to_string() + ": no answer in time");
    });
    resolver.async_resolve(
        server.host, std::to_string(server.port),
        [self = shared_from_this()](error_code ec, tcp::resolver::results_type r) {
          if (ec)
            return self->fail(usb::Error::Code::kIo,
                              "resolve " + self->server.host + ": " + ec.message());
          asio::async_connect(self->socket, r, [self](error_code ec2, const tcp::endpoint&) {
            if (ec2)
              return self->fail(usb::Error::Code::kIo,
                                "connect " + self->server.to_string() + ": " + ec2.message());
            self->send();
          });
        });
  }
  void send() {
    request = wire::encode_op_header({wire::kVersion, wire::kOpReqDevlist, 0});
    asio::async_write(
        socket, asio::buffer(request), [self = shared_from_this()](error_code ec, size_t) {
          if (ec) return self->fail(usb::Error::Code::kIo, "devlist: " + ec.message());
          asio::async_read(self->socket, asio::buffer(self->head), [self](error_code ec2, size_t) {
            if (ec2) return self->fail(usb::Error::Code::kIo, "devlist: " + ec2.message());
            auto oh = wire::decode_op_header(std::span(self->head.data(), wire::kOpHeaderSize));
            if (!oh || oh->code != wire::kOpRepDevlist || oh->status != wire::kStOk)
              return self->fail(usb::Error::Code::kMalformed, "bad devlist reply");
            self->remaining = usb::load_be32(self->head.data() + wire::kOpHeaderSize);
            if (self->remaining > 4096)
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
    asio::async_read(
        socket, asio::buffer(record), [self = shared_from_this()](error_code ec, size_t) {
          if (ec) return self->fail(usb::Error::Code::kIo, "devlist record: " + ec.message());
          auto d = wire::decode_device_record(self->record);
          if (!d) return self->fail(d.error().code, d.error().message);
          self->out.push_back({*d, {}});
          self->interfaces.resize(size_t{d->num_interfaces} * wire::kInterfaceRecordSize);
          if (self->interfaces.empty()) return self->next_record();
          asio::async_read(
              self->socket, asio::buffer(self->interfaces), [self](error_code ec2, size_t) {
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
    error_code ec;
    deadline.cancel();
    resolver.cancel();
    socket.close(ec);
  }

  tcp::socket socket;
  tcp::resolver resolver;
  asio::steady_timer deadline;
  usb::net::HostPort server;
  UsbipRemoteDevice::ListCallback done;
  std::array<uint8_t, wire::kOpHeaderSize> request{};
  std::array<uint8_t, wire::kOpHeaderSize + 4> head{};
  std::vector<uint8_t> record, interfaces;
  uint32_t remaining = 0;
  std::vector<wire::DevlistEntry> out;
};

}  // namespace

void UsbipRemoteDevice::list(asio::io_context& io, const usb::net::HostPort& server,
                             std::chrono::milliseconds timeout, ListCallback done) {
  std::make_shared<ListOp>(io, server, std::move(done))->start(timeout);
}

usb::Result<std::vector<wire::DevlistEntry>> UsbipRemoteDevice::list_blocking(
    const usb::net::HostPort& server) {
  asio::io_context io;
  tcp::socket s(io);
  error_code ec;
  tcp::resolver resolver(io);
  auto results = resolver.resolve(server.host, std::to_string(server.port), ec);
  if (!ec) asio::connect(s, results, ec);
  if (ec)
    return usb::Error::make(usb::Error::Code::kIo,
                            "connect " + server.to_string() + ": " + ec.message());
  auto h = wire::encode_op_header({wire::kVersion, wire::kOpReqDevlist, 0});
  asio::write(s, asio::buffer(h), ec);
  std::array<uint8_t, wire::kOpHeaderSize + 4> head{};
  if (!ec) asio::read(s, asio::buffer(head), ec);
  if (ec) return usb::Error::make(usb::Error::Code::kIo, "devlist: " + ec.message());
  auto oh = wire::decode_op_header(std::span(head.data(), wire::kOpHeaderSize));
  if (!oh || oh->code != wire::kOpRepDevlist || oh->status != wire::kStOk)
    return usb::Error::make(usb::Error::Code::kMalformed, "bad devlist reply");
  const uint32_t n = usb::load_be32(head.data() + wire::kOpHeaderSize);
  if (n > 4096)
    return usb::Error::make(usb::Error::Code::kTooLarge,
                            "devlist claims " + std::to_string(n) + " devices");
  std::vector<wire::DevlistEntry> out;
  std::vector<uint8_t> rec(wire::kDeviceRecordSize);
  for (uint32_t i = 0; i < n; ++i) {
    asio::read(s, asio::buffer(rec), ec);
    if (ec) return usb::Error::make(usb::Error::Code::kIo, "devlist record: " + ec.message());
    auto d = wire::decode_device_record(rec);
    if (!d) return std::unexpected(d.error());
    wire::DevlistEntry e{*d, {}};
    for (uint8_t k = 0; k < d->num_interfaces; ++k) {
      std::array<uint8_t, wire::kInterfaceRecordSize> ib{};
      asio::read(s, asio::buffer(ib), ec);
      if (ec) return usb::Error::make(usb::Error::Code::kIo, "devlist interface: " + ec.message());
      e.interfaces.push_back(wire::decode_interface_record(ib));
    }
    out.push_back(std::move(e));
  }
  return out;
}

const usb::DescriptorSet& UsbipRemoteDevice::descriptors() const {
  return channel_->descriptors;
}
usb::Speed UsbipRemoteDevice::speed() const {
  return static_cast<usb::Speed>(channel_->record.speed);
}
const usb::DeviceLocation& UsbipRemoteDevice::location() const {
  return channel_->location;
}
uint8_t UsbipRemoteDevice::active_configuration() const {
  return channel_->active_config;
}
uint8_t UsbipRemoteDevice::alternate_setting(uint8_t i) const {
  return i < channel_->alt.size() ? channel_->alt[i] : 0;
}
bool UsbipRemoteDevice::connected() const {
  return channel_->connected;
}
const wire::DeviceRecord& UsbipRemoteDevice::record() const {
  return channel_->record;
}

void UsbipRemoteDevice::submit(usb::Transfer& t) {
  Channel& ch = *channel_;
  if (!ch.connected) {
    t.complete(usb::Status::kNoDevice, 0);
    return;
  }
  if (t.length() > ch.options.limits.max_transfer_length) {
    t.complete(usb::Status::kInvalid, 0);
    return;
  }
  if (!t.begin(this)) return;
  const uint32_t seq = ch.take_seqnum();
  t.trace_id = seq;
  ch.inflight[seq] = {&t, t.direction() == usb::Direction::kIn ? wire::kDirIn : wire::kDirOut};
  ch.seq_of[&t] = seq;
  ch.send_submit(t, seq);
}

void UsbipRemoteDevice::cancel(usb::Transfer& t) {
  Channel& ch = *channel_;
  auto it = ch.seq_of.find(&t);
  if (it == ch.seq_of.end()) return;
  const uint32_t target = it->second;
  // Still in the write cache: it never left, so give it back without asking the server.
  for (auto c = ch.cache.begin(); c != ch.cache.end(); ++c) {
    if (c->seqnum == target) {
      ch.cache.erase(c);
      ch.complete(target, usb::Status::kCancelled, 0);
      return;
    }
  }
  wire::CmdUnlink u;
  u.seqnum = ch.take_seqnum();
  u.devid = ch.devid;
  u.unlink_seqnum = target;
  ch.unlinks[u.seqnum] = target;
  Channel::Out out;
  out.header = wire::encode(u);
  ch.queue(std::move(out));
}

void UsbipRemoteDevice::standard_request(const usb::SetupPacket& setup, usb::StatusCallback done) {
  auto t = usb::Transfer::control(setup.direction() == usb::Direction::kIn ? 0x80 : 0x00, setup);
  usb::Transfer* raw = t.get();
  raw->set_completion([t = std::move(t), done = std::move(done)](usb::Transfer& x) mutable {
    done(x.status());
    // The transfer is destroyed with this lambda after complete() returns.
  });
  submit(*raw);
}

void UsbipRemoteDevice::reset(usb::StatusCallback done) {
  // Hub-class SET_FEATURE(PORT_RESET): USB/IP servers reset the device when they see it.
  standard_request({0x23, usb::request::kSetFeature, usb::kHubPortResetFeature, 0, 0},
                   std::move(done));
}

void UsbipRemoteDevice::set_configuration(uint8_t value, usb::StatusCallback done) {
  standard_request({0x00, usb::request::kSetConfiguration, value, 0, 0},
                   [ch = channel_, value, done = std::move(done)](usb::Status s) mutable {
                     if (s == usb::Status::kOk) {
                       ch->active_config = value;
                       ch->alt.clear();
                     }
                     done(s);
                   });
}

void UsbipRemoteDevice::set_interface(uint8_t interface, uint8_t alternate,
                                      usb::StatusCallback done) {
  standard_request(
      {0x01, usb::request::kSetInterface, alternate, interface, 0},
      [ch = channel_, interface, alternate, done = std::move(done)](usb::Status s) mutable {
        if (s == usb::Status::kOk) {
          if (ch->alt.size() <= interface) ch->alt.resize(interface + 1u);
          ch->alt[interface] = alternate;
        }
        done(s);
      });
}

void UsbipRemoteDevice::clear_halt(uint8_t endpoint, usb::StatusCallback done) {
  standard_request({0x02, usb::request::kClearFeature, usb::feature::kEndpointHalt, endpoint, 0},
                   std::move(done));
}

void UsbipRemoteDevice::set_halt(uint8_t endpoint, usb::StatusCallback done) {
  standard_request({0x02, usb::request::kSetFeature, usb::feature::kEndpointHalt, endpoint, 0},
                   std::move(done));
}

}  // namespace devices
