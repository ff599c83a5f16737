#include "usb/usbip/server_connection.h"

#include <spdlog/spdlog.h>

#include <cstring>

#include "usb/core/device_operations.h"
#include "usb/core/printable.h"
#include "usb/usbip/export_access.h"

namespace usb::usbip {

namespace asio = boost::asio;
namespace wire = usb::wire::usbip;
using boost::system::error_code;

namespace {

bool is_cancel_status(usb::Status s) {
  return s == usb::Status::kCancelled || s == usb::Status::kUnlinked;
}

}  // namespace

ServerConnection::ServerConnection(std::unique_ptr<usb::net::Stream> stream, ExportTable& exports,
                                   ConnectionLimits limits)
    : stream_(std::move(stream)),
      op_deadline_(stream_->get_executor()),
      exports_(exports),
      limits_(limits),
      peer_(limits.label.empty() ? stream_->peer().name
                                 : limits.label + " " + stream_->peer().name),
      write_deadline_(stream_->get_executor()) {}

ServerConnection::~ServerConnection() = default;

void ServerConnection::start() {
  loop_.check();
  spdlog::debug("usbip {}: connected", peer_);
  // A client that connects and never asks for anything is dropped (the op phase is one request).
  op_deadline_.expires_after(limits_.op_timeout);
  op_deadline_.async_wait([self = shared_from_this()](error_code ec) {
    if (ec || self->closed_ || !self->busid_.empty()) return;
    spdlog::warn("usbip {}: closing connection: no request within {} ms", self->peer_,
                 self->limits_.op_timeout.count());
    self->close("op timeout");
  });
  read_op_header();
}

void ServerConnection::protocol_error(std::string_view why) {
  spdlog::warn("usbip {}: closing connection: {}", peer_, why);
  close(why);
}

void ServerConnection::close(std::string_view reason) {
  loop_.check();
  if (closed_) return;
  closed_ = true;
  op_deadline_.cancel();
  write_deadline_.cancel();
  spdlog::debug("usbip {}: closed ({})", peer_, reason);
  stream_->close();
  queued_.clear();
  // Cancel what the device still holds; completions arrive (maybe inline) and only free memory.
  std::vector<uint32_t> seqnums;
  for (auto& [seq, _] : inflight_) seqnums.push_back(seq);
  for (uint32_t seq : seqnums)
    if (auto it = inflight_.find(seq); it != inflight_.end()) it->second->transfer->cancel();
  if (!busid_.empty()) exports_.release(busid_, *this);
}

void ServerConnection::on_device_gone() {
  loop_.check();
  // The device completed its in-flight URBs with kNoDevice (-ESHUTDOWN) already; those replies
  // are queued. The client may still have URBs on the wire that we have not read: keep reading
  // and answer each (CMD_SUBMIT -> -ESHUTDOWN, CMD_UNLINK -> RET_UNLINK) until the client has
  // been quiet for a moment, then hang up so it detaches. Closing at once would leave those URBs
  // unanswered, and Linux's vhci then waits for them forever (its disconnect needs the device
  // lock a waiting usbfs ioctl holds).
  spdlog::info("usbip {}: device {} is gone; answering what is in flight, then closing", peer_,
               busid_);
  device_ = nullptr;
  busid_.clear();
  draining_since_ = std::chrono::steady_clock::now();
  arm_drain_timer();
}

void ServerConnection::arm_drain_timer() {
  if (closed_ || !draining_since_) return;
  op_deadline_.expires_after(limits_.drain_quiet);
  op_deadline_.async_wait([self = shared_from_this()](error_code ec) {
    if (ec || self->closed_) return;
    if (self->write_in_progress_ || !self->queued_.empty()) return self->arm_drain_timer();
    self->close("device gone");
  });
}

// ---------------------------------------------------------------- op phase

void ServerConnection::read_op_header() {
  reader_.read(*stream_, std::span(header_.data(), wire::kOpHeaderSize),
               [self = shared_from_this()](error_code ec) {
                 if (self->closed_) return;
                 if (ec) return self->close(ec.message());
                 self->on_op_header();
               });
}

void ServerConnection::on_op_header() {
  auto h = wire::decode_op_header(std::span(header_.data(), wire::kOpHeaderSize));
  if (!h) return protocol_error(h.error().message);
  if (h->code == wire::kOpReqDevlist) {
    const ExportAccess* access = exports_.access();
    auto list = exports_.devlist([&](const ExportTable::Entry& e) {
      return !access || access->check(stream_->peer(), e).has_value();
    });
    spdlog::info("usbip {}: device list ({} of {} devices)", peer_, list.size(), exports_.size());
    auto reply = wire::encode_devlist_reply(list);
    auto buf = std::make_shared<std::vector<uint8_t>>(std::move(reply));
    stream_->async_write(asio::buffer(*buf),
                      [self = shared_from_this(), buf](error_code ec, size_t) {
                        self->close(ec ? ec.message() : "device list sent");
                      });
    return;
  }
  if (h->code == wire::kOpReqImport) {
    scratch_.resize(wire::kImportRequestSize);
    reader_.read(*stream_, scratch_, [self = shared_from_this()](error_code ec) {
      if (self->closed_) return;
      if (ec) return self->close(ec.message());
      self->on_import_request();
    });
    return;
  }
  protocol_error(fmt::format("unknown op code {:#06x}", h->code));
}

void ServerConnection::on_import_request() {
  auto busid = wire::decode_import_request(scratch_);
  if (!busid) return protocol_error(busid.error().message);
  // The access list first: a refused peer gets "not available" and learns nothing else.
  ExportTable::ClaimResult claim;
  const ExportAccess* access = exports_.access();
  const ExportTable::Entry* entry = exports_.find(*busid);
  std::string refusal;
  if (access && entry) {
    if (auto ok = access->check(stream_->peer(), *entry); !ok) {
      access->count_refusal();
      claim.status = wire::kStNotAvailable;
      refusal = ok.error().message;
    }
  }
  if (refusal.empty()) claim = exports_.claim(*busid, *this);
  std::vector<uint8_t> reply;
  if (!refusal.empty()) {
    reply = wire::encode_import_reply(claim.status, nullptr);
    spdlog::warn("usbip {}: import of {} refused: {} ({} refused so far)", peer_, *busid, refusal,
                 access->refused());
  } else if (claim.status == wire::kStOk) {
    wire::DeviceRecord rec = ExportTable::record_for(*claim.entry);
    reply = wire::encode_import_reply(wire::kStOk, &rec);
    busid_ = *busid;
    op_deadline_.cancel();
    device_ = claim.entry->device;
    devid_ = wire::make_devid(claim.entry->busnum, claim.entry->devnum);
    spdlog::info("usbip {}: imported {} (devid {:#x})", peer_, busid_, devid_);
  } else {
    reply = wire::encode_import_reply(claim.status, nullptr);
    spdlog::warn("usbip {}: import of '{}' refused: {}", peer_, usb::printable(*busid),
                 claim.status == wire::kStDevBusy ? "busy (imported by another client)"
                 : claim.status == wire::kStNoDev ? "no such device"
                                                  : "device error");
  }
  auto buf = std::make_shared<std::vector<uint8_t>>(std::move(reply));
  bool ok = claim.status == wire::kStOk;
  stream_->async_write(asio::buffer(*buf),
                    [self = shared_from_this(), buf, ok](error_code ec, size_t) {
                      if (self->closed_) return;
                      if (ec) return self->close(ec.message());
                      if (!ok) return self->close("import refused");
                      self->read_urb_header();
                    });
}

// ---------------------------------------------------------------- URB phase

void ServerConnection::read_urb_header() {
  if (queued_.size() + writing_.size() >= limits_.max_queued_replies) {
    // The client does not read its replies: stop taking commands (TCP pushes back on it) until
    // the write side has caught up; start_write's completion resumes.
    if (!read_paused_ && pauses_++ % 100 == 0)
      spdlog::warn("usbip {}: {} replies unread by the client; not reading its commands until "
                   "it catches up ({} times on this connection)",
                   peer_, queued_.size() + writing_.size(), pauses_);
    read_paused_ = true;
    return;
  }
  reader_.read(*stream_, header_, [self = shared_from_this()](error_code ec) {
    if (self->closed_) return;
    if (ec) {
      if (ec == asio::error::eof) return self->close("client hung up");
      return self->close(ec.message());
    }
    self->on_urb_header();
  });
}

void ServerConnection::on_urb_header() {
  if (draining_since_ && std::chrono::steady_clock::now() - *draining_since_ < limits_.drain_max)
    arm_drain_timer();
  auto pdu = wire::decode_urb_header(header_, limits_.wire);
  if (!pdu) return protocol_error("malformed URB header: " + pdu.error().message);
  if (auto* cmd = std::get_if<wire::CmdSubmit>(&*pdu)) {
    if (cmd->devid != devid_)
      return protocol_error(fmt::format("CMD_SUBMIT seqnum {} names devid {:#x}, imported {:#x}",
                                        cmd->seqnum, cmd->devid, devid_));
    return on_submit(*cmd);
  }
  if (auto* cmd = std::get_if<wire::CmdUnlink>(&*pdu)) {
    if (cmd->devid != devid_)
      return protocol_error(fmt::format("CMD_UNLINK seqnum {} names devid {:#x}, imported {:#x}",
                                        cmd->seqnum, cmd->devid, devid_));
    on_unlink(*cmd);
    return read_urb_header();
  }
  protocol_error("a client sent a server reply (RET_SUBMIT / RET_UNLINK)");
}

std::optional<usb::TransferType> ServerConnection::endpoint_type(uint8_t address) const {
  if (usb::endpoint_number(address) == 0) return usb::TransferType::kControl;
  const usb::ConfigurationDescriptor* cfg = device_ ? device_->active_config_descriptor() : nullptr;
  if (!cfg) return std::nullopt;
  for (const auto& intf : cfg->interfaces) {
    if (intf.alternate != device_->alternate_setting(intf.number)) continue;
    for (const auto& ep : intf.endpoints)
      if (ep.address == address) return ep.type();
  }
  return std::nullopt;
}

void ServerConnection::drain_then(uint64_t bytes, std::function<void()> next) {
  if (bytes == 0) return next();
  scratch_.resize(std::min<uint64_t>(bytes, 64 * 1024));
  const size_t n = scratch_.size();
  reader_.read(
      *stream_, scratch_,
      [self = shared_from_this(), bytes, n, next = std::move(next)](error_code ec) mutable {
        if (self->closed_) return;
        if (ec) return self->close(ec.message());
        self->drain_then(bytes - n, std::move(next));
      });
}

void ServerConnection::reject_submit(const wire::CmdSubmit& cmd, usb::Status status,
                                    std::string_view why) {
  // One line for the first refusal and then one per 100: a peer that sends a flood of bad URBs
  // must not turn the log into the flood.
  if (rejected_++ % 100 == 0)
    spdlog::warn("usbip {}: seqnum {} ep {:#x}: {} -> {} ({} refused on this connection)", peer_,
                 cmd.seqnum, cmd.ep, why, usb::to_string(status), rejected_);
  Reply r;
  wire::RetSubmit ret;
  ret.seqnum = cmd.seqnum;
  ret.status = usb::to_linux_errno(status);
  ret.start_frame = 0;
  ret.number_of_packets = 0;
  r.header = wire::encode(ret);
  // Keep the byte stream in step: skip the payload and iso descriptors this URB carried.
  uint64_t skip = uint64_t{wire::submit_payload_length(cmd)} + wire::submit_iso_length(cmd);
  drain_then(skip, [self = shared_from_this(), r = std::make_shared<Reply>(std::move(r))]() {
    self->queue(std::move(*r));
    self->read_urb_header();
  });
}

void ServerConnection::on_submit(const wire::CmdSubmit& cmd) {
  if (!any_submit_ || newer(cmd.seqnum, last_submit_seqnum_)) last_submit_seqnum_ = cmd.seqnum;
  any_submit_ = true;
  if (auto early = early_unlinks_.find(cmd.seqnum); early != early_unlinks_.end()) {
    // Unlinked before it arrived: never run it; the RET_UNLINK answers for both PDUs.
    const uint32_t unlink = early->second;
    early_unlinks_.erase(early);
    spdlog::debug("usbip {}: seqnum {} was unlinked (by {}) before it arrived", peer_, cmd.seqnum,
                  unlink);
    const uint64_t skip = uint64_t{wire::submit_payload_length(cmd)} + wire::submit_iso_length(cmd);
    return drain_then(skip, [self = shared_from_this(), unlink] {
      self->send_ret_unlink(unlink, usb::to_linux_errno(usb::Status::kCancelled));
      self->read_urb_header();
    });
  }
  if (!device_) return reject_submit(cmd, usb::Status::kNoDevice, "device is gone");
  if (inflight_.contains(cmd.seqnum))
    return protocol_error(fmt::format("CMD_SUBMIT reuses seqnum {} still in flight", cmd.seqnum));

  const usb::Direction dir =
      cmd.direction == wire::kDirIn ? usb::Direction::kIn : usb::Direction::kOut;
  const uint8_t address = usb::endpoint_address(static_cast<uint8_t>(cmd.ep), dir);
  const uint32_t length = static_cast<uint32_t>(cmd.transfer_buffer_length);
  std::optional<usb::TransferType> type = endpoint_type(address);
  if (!type)
    return reject_submit(cmd, usb::Status::kInvalid, "endpoint not in the active configuration");
  const bool iso = *type == usb::TransferType::kIsochronous;
  if (iso != (cmd.number_of_packets > 0))
    return reject_submit(
        cmd, usb::Status::kInvalid,
        iso ? "isochronous URB without packets" : "packets on a non-isochronous endpoint");
  if (held_bytes_ + length > limits_.max_inflight_bytes) {
    if (rejected_for_memory_++ % 1000 == 0)
      spdlog::warn("usbip {}: {} bytes held, limit {}: refusing URBs with -ENOMEM ({} so far)",
                   peer_, held_bytes_, limits_.max_inflight_bytes, rejected_for_memory_);
    return reject_submit(cmd, usb::Status::kNoMemory, "in-flight byte limit reached");
  }
  if (inflight_.size() >= limits_.max_inflight_urbs)
    return reject_submit(cmd, usb::Status::kNoMemory, "in-flight URB limit reached");

  auto in = std::make_unique<InFlight>();
  in->seqnum = cmd.seqnum;
  in->direction = cmd.direction;
  in->transfer = std::make_unique<usb::Transfer>(address, *type, pool_.get(length));
  usb::Transfer& t = *in->transfer;
  t.trace_id = cmd.seqnum;
  t.start_frame = cmd.start_frame;
  t.interval = static_cast<uint32_t>(std::max(cmd.interval, 0));
  t.flags.short_not_ok = cmd.transfer_flags & wire::kUrbShortNotOk;
  t.flags.zero_packet = cmd.transfer_flags & wire::kUrbZeroPacket;
  if (*type == usb::TransferType::kControl) t.setup = usb::SetupPacket::from_bytes(cmd.setup);
  held_bytes_ += length;

  const uint32_t payload = wire::submit_payload_length(cmd);
  const uint32_t packets = iso ? static_cast<uint32_t>(cmd.number_of_packets) : 0;
  auto pending = std::shared_ptr<InFlight>(in.release());
  auto after_payload = [self = shared_from_this(), pending, packets]() mutable {
    if (packets) return self->read_submit_iso(std::move(pending), packets);
    self->dispatch(std::unique_ptr<InFlight>(new InFlight(std::move(*pending))));
    self->read_urb_header();
  };
  if (payload == 0) return after_payload();
  // OUT data goes straight into the transfer buffer.
  reader_.read(
      *stream_, std::span(t.buffer().data(), payload),
      [self = shared_from_this(), after = std::move(after_payload), length](error_code ec) mutable {
        if (self->closed_) {
          self->held_bytes_ -= length;
          return;
        }
        if (ec) {
          self->held_bytes_ -= length;
          return self->close(ec.message());
        }
        after();
      });
}

void ServerConnection::read_submit_iso(std::shared_ptr<InFlight> pending, uint32_t packets) {
  scratch_.resize(size_t{packets} * wire::kIsoDescriptorSize);
  reader_.read(*stream_, scratch_, [self = shared_from_this(), pending](error_code ec) {
    usb::Transfer& t = *pending->transfer;
    if (self->closed_ || ec) {
      self->held_bytes_ -= t.length();
      if (!self->closed_) self->close(ec.message());
      return;
    }
    auto descs = wire::decode_iso_descriptors(self->scratch_, static_cast<uint32_t>(t.length()));
    uint32_t next_offset = 0;
    bool ordered = descs.has_value();
    if (descs) {
      for (const auto& d : *descs) {
        if (d.offset < next_offset) ordered = false;
        next_offset = d.offset + d.length;
      }
    }
    if (!ordered) {
      self->held_bytes_ -= t.length();
      return self->protocol_error(
          fmt::format("seqnum {}: bad iso descriptors: {}", pending->seqnum,
                      descs ? "packets overlap or are out of order" : descs.error().message));
    }
    t.iso_packets.reserve(descs->size());
    for (const auto& d : *descs) t.iso_packets.push_back({d.offset, d.length, 0, usb::Status::kOk});
    self->dispatch(std::unique_ptr<InFlight>(new InFlight(std::move(*pending))));
    self->read_urb_header();
  });
}

void ServerConnection::dispatch(std::unique_ptr<InFlight> in) {
  const uint32_t seqnum = in->seqnum;
  usb::Transfer& t = *in->transfer;
  t.set_completion(
      [self = shared_from_this(), seqnum](usb::Transfer&) { self->on_complete(seqnum); });
  InFlight& ref = *in;
  inflight_.emplace(seqnum, std::move(in));
  if (!device_) {
    // The device vanished while this URB's payload was being read: answer -ESHUTDOWN.
    t.complete(usb::Status::kNoDevice, 0);
    return;
  }
  if (t.type() == usb::TransferType::kControl && usb::is_device_operation(t.setup) &&
      !device_->performs_standard_requests())
    spdlog::debug("usbip {}: seqnum {}: standard request {:#04x} value {} index {}", peer_,
                  ref.seqnum, t.setup.request, t.setup.value, t.setup.index);
  // Requests that change device state go to the device as operations, not as raw control
  // transfers (PROTOCOLS.md: servers handle these themselves).
  usb::submit_or_perform(*device_, t);  // may complete inline
}

void ServerConnection::on_complete(uint32_t seqnum) {
  loop_.check();
  auto it = inflight_.find(seqnum);
  if (it == inflight_.end()) return;
  std::unique_ptr<InFlight> in = std::move(it->second);
  inflight_.erase(it);
  if (closed_) {
    held_bytes_ -= in->transfer->length();
    return;
  }
  if (in->unlink_seqnum) {
    if (is_cancel_status(in->transfer->status())) {
      recycle(std::move(in->transfer));
      return send_ret_unlink(*in->unlink_seqnum, usb::to_linux_errno(usb::Status::kCancelled));
    }
    // It finished for real before the cancel took effect: deliver it, then confirm the unlink.
    const uint32_t unlink = *in->unlink_seqnum;
    send_ret_submit(*in);
    return send_ret_unlink(unlink, 0);
  }
  send_ret_submit(*in);
}

void ServerConnection::on_unlink(const wire::CmdUnlink& cmd) {
  auto it = inflight_.find(cmd.unlink_seqnum);
  if (it == inflight_.end() && (!any_submit_ || newer(cmd.unlink_seqnum, last_submit_seqnum_))) {
    if (early_unlinks_.size() < kMaxEarlyUnlinks) {
      spdlog::debug("usbip {}: unlink {} of seqnum {}: not submitted yet, held", peer_, cmd.seqnum,
                    cmd.unlink_seqnum);
      early_unlinks_[cmd.unlink_seqnum] = cmd.seqnum;
      return;
    }
    spdlog::warn("usbip {}: more than {} unlinks of future seqnums; answering {} at once", peer_,
                 kMaxEarlyUnlinks, cmd.seqnum);
  }
  if (it == inflight_.end()) {
    // Already answered (its RET_SUBMIT crossed this UNLINK on the wire) or never existed.
    spdlog::debug("usbip {}: unlink {} of seqnum {}: already completed", peer_, cmd.seqnum,
                  cmd.unlink_seqnum);
    return send_ret_unlink(cmd.seqnum, 0);
  }
  if (it->second->unlink_seqnum) {
    spdlog::debug("usbip {}: repeated unlink of seqnum {}", peer_, cmd.unlink_seqnum);
    return send_ret_unlink(cmd.seqnum, 0);
  }
  it->second->unlink_seqnum = cmd.seqnum;
  it->second->transfer->cancel();  // may complete inline; on_complete handles both orders
}

// ---------------------------------------------------------------- replies

void ServerConnection::recycle(std::unique_ptr<usb::Transfer> transfer) {
  held_bytes_ -= transfer->length();
  pool_.put(transfer->take_buffer());
}

void ServerConnection::send_ret_submit(InFlight& in) {
  usb::Transfer& t = *in.transfer;
  wire::RetSubmit ret;
  ret.seqnum = in.seqnum;
  ret.status = usb::to_linux_errno(t.status());
  ret.start_frame = t.start_frame < 0 ? 0 : t.start_frame;
  Reply r;
  const bool in_dir = in.direction == wire::kDirIn;
  if (t.type() == usb::TransferType::kIsochronous) {
    // Iso IN data is packed on the wire: each packet's actual bytes, no gaps (PROTOCOLS.md).
    uint8_t* base = t.buffer().data();
    uint32_t packed = 0, errors = 0;
    std::vector<wire::IsoDescriptor> descs;
    descs.reserve(t.iso_packets.size());
    for (const usb::IsoPacket& p : t.iso_packets) {
      const uint32_t actual = std::min(p.actual_length, p.length);
      if (in_dir && actual) {
        if (packed != p.offset) std::memmove(base + packed, base + p.offset, actual);
      }
      packed += actual;
      if (p.status != usb::Status::kOk) ++errors;
      descs.push_back({p.offset, p.length, actual, usb::to_linux_errno(p.status)});
    }
    ret.actual_length = static_cast<int32_t>(packed);
    ret.number_of_packets = static_cast<int32_t>(descs.size());
    ret.error_count = static_cast<int32_t>(errors);
    r.data_length = in_dir ? packed : 0;
    r.iso.resize(descs.size() * wire::kIsoDescriptorSize);
    wire::encode_iso_descriptors(descs, r.iso);
  } else {
    ret.actual_length = static_cast<int32_t>(t.actual_length());
    r.data_length = in_dir ? t.actual_length() : 0;
  }
  r.header = wire::encode(ret);
  r.transfer = std::move(in.transfer);
  queue(std::move(r));
}

void ServerConnection::send_ret_unlink(uint32_t seqnum, int32_t status) {
  wire::RetUnlink ret;
  ret.seqnum = seqnum;
  ret.status = status;
  Reply r;
  r.header = wire::encode(ret);
  queue(std::move(r));
}

void ServerConnection::queue(Reply reply) {
  if (closed_) {
    if (reply.transfer) held_bytes_ -= reply.transfer->length();
    return;
  }
  queued_.push_back(std::move(reply));
  if (!write_in_progress_) start_write();
}

void ServerConnection::start_write() {
  // Everything queued so far leaves in one gathered write: header, data, iso descriptors of each.
  writing_.clear();
  write_buffers_.clear();
  while (!queued_.empty()) {
    writing_.push_back(std::move(queued_.front()));
    queued_.pop_front();
  }
  for (Reply& r : writing_) {
    write_buffers_.emplace_back(r.header.data(), r.header.size());
    if (r.data_length) write_buffers_.emplace_back(r.transfer->buffer().data(), r.data_length);
    if (!r.iso.empty()) write_buffers_.emplace_back(r.iso.data(), r.iso.size());
  }
  write_in_progress_ = true;
  write_deadline_.expires_after(limits_.write_timeout);
  write_deadline_.async_wait([weak = weak_from_this()](error_code ec) {
    if (ec) return;
    if (auto self = weak.lock(); self && !self->closed_) {
      spdlog::warn("usbip {}: the client has not read its replies for {} ms; closing", self->peer_,
                   self->limits_.write_timeout.count());
      self->close("write timeout");
    }
  });
  stream_->async_write(write_buffers_, [self = shared_from_this()](error_code ec, size_t) {
    self->write_in_progress_ = false;
    self->write_deadline_.cancel();
    for (Reply& r : self->writing_)
      if (r.transfer) self->recycle(std::move(r.transfer));
    self->writing_.clear();
    if (self->closed_) return;
    if (ec) return self->close(ec.message());
    if (self->read_paused_ && self->queued_.size() <= self->limits_.max_queued_replies / 2) {
      self->read_paused_ = false;
      self->read_urb_header();
    }
    if (!self->queued_.empty() && !self->write_in_progress_) return self->start_write();
  });
}

}  // namespace usb::usbip
