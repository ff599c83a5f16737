// HostChannel's isochronous streams: start_iso_stream / stop_iso_stream / iso_packet.
#include <spdlog/spdlog.h>
#include <usbredirparser.h>

#include <algorithm>
#include <boost/asio/post.hpp>

#include "usb/usbredir/iso_stream.h"

namespace usb::usbredir {

namespace {

// usbredir's bounds for a stream (usbredirhost enforces the same).
constexpr unsigned kMaxPacketsPerUrb = 32;
constexpr unsigned kMaxUrbs = 16;

// One service interval of a periodic endpoint: 2^(bInterval-1) frames at full/low speed,
// microframes at high speed and above.
std::chrono::nanoseconds service_interval(Speed speed, uint8_t b_interval) {
  const unsigned exponent = std::clamp<unsigned>(b_interval, 1, 16) - 1;
  const bool frames = speed == Speed::kLow || speed == Speed::kFull;
  return std::chrono::microseconds((frames ? 1000 : 125) * (int64_t{1} << exponent));
}

}  // namespace

uint32_t redir_max_packet(Speed speed, const EndpointDescriptor& e) {
  if (e.type() != TransferType::kIsochronous) return e.max_packet();
  if (speed == Speed::kHigh) return uint32_t{e.max_packet()} * e.hs_transactions();
  if ((speed == Speed::kSuper || speed == Speed::kSuperPlus) && e.ss_companion &&
      e.ss_companion->bytes_per_interval)
    return e.ss_companion->bytes_per_interval;
  return e.max_packet();
}

const EndpointDescriptor* HostChannel::active_endpoint(uint8_t address, TransferType type) const {
  const ConfigurationDescriptor* cfg =
      device_ && announced_ ? device_->active_config_descriptor() : nullptr;
  if (!cfg) return nullptr;
  for (const auto& intf : cfg->interfaces)
    if (intf.alternate == device_->alternate_setting(intf.number))
      for (const auto& e : intf.endpoints)
        if (e.address == address && e.type() == type) return &e;
  return nullptr;
}

void HostChannel::on_start_iso_stream(uint64_t id, uint8_t endpoint, uint8_t pkts_per_urb,
                                      uint8_t no_urbs) {
  auto answer = [&](uint8_t status) {
    usb_redir_iso_stream_status_header st{status, endpoint};
    usbredirparser_send_iso_stream_status(parser_, id, &st);
  };
  if (!device_ || !announced_) return answer(usb_redir_ioerror);
  std::erase_if(retired_iso_, [](const auto& r) { return r->at_device == 0; });
  if (iso_.contains(endpoint)) {
    spdlog::warn("{}: iso stream on {:#04x} is already running; start refused", options_.label,
                 endpoint);
    return answer(usb_redir_inval);
  }
  const EndpointDescriptor* e = active_endpoint(endpoint, TransferType::kIsochronous);
  const uint32_t max_packet = e ? redir_max_packet(device_->speed(), *e) : 0;
  if (!e || max_packet == 0 || pkts_per_urb < 1 || pkts_per_urb > kMaxPacketsPerUrb ||
      no_urbs < 1 || no_urbs > kMaxUrbs) {
    ++stats_.refused;
    spdlog::warn("{}: iso stream on {:#04x} refused: {} (packets per URB {}, URBs {})",
                 options_.label, endpoint,
                 !e ? "no isochronous endpoint with that address in the current alt setting"
                    : max_packet == 0 ? "the endpoint has no bandwidth in this alt setting"
                                      : "counts out of range (1-32 packets, 1-16 URBs)",
                 pkts_per_urb, no_urbs);
    return answer(usb_redir_stall);
  }
  auto s = std::make_unique<IsoStream>();
  s->endpoint = endpoint;
  s->in = (endpoint & 0x80) != 0;
  s->pkts_per_urb = pkts_per_urb;
  s->no_urbs = no_urbs;
  s->max_packet = max_packet;
  s->urb_period = service_interval(device_->speed(), e->interval) * pkts_per_urb;
  s->started = options_.clock();
  IsoStream& stream = *s;
  iso_[endpoint] = std::move(s);
  answer(usb_redir_success);
  spdlog::debug("{}: iso {} stream on {:#04x}: {} URBs of {} packets of {} bytes",
                options_.label, stream.in ? "IN" : "OUT", endpoint, no_urbs, pkts_per_urb,
                max_packet);
  if (!stream.in) return;  // OUT starts once the guest has sent half a buffer
  for (unsigned i = 0; i < no_urbs; ++i) {
    auto t = std::make_unique<Transfer>(endpoint, TransferType::kIsochronous,
                                        size_t{pkts_per_urb} * max_packet);
    t->interval = e->interval;
    for (unsigned k = 0; k < pkts_per_urb; ++k)
      t->iso_packets.push_back({k * max_packet, max_packet, 0, Status::kOk});
    stream.transfers.push_back(std::move(t));
  }
  for (auto& t : stream.transfers) {
    ++stream.at_device;
    iso_in_submit(stream, *t);
  }
}

void HostChannel::iso_in_next(IsoStream& stream, Transfer& t) {
  // URB k goes to the device no earlier than (k - no_urbs + 1) URB periods after the start.
  const uint64_t k = stream.submitted;
  const uint64_t ahead = k >= stream.no_urbs ? k - stream.no_urbs + 1 : 0;
  const auto due = stream.started + stream.urb_period * static_cast<int64_t>(ahead);
  const auto wait = due - options_.clock();
  auto go = [self = shared_from_this(), s = &stream, t = &t] {
    if (s->stopping || !self->open_ || !self->device_) {
      --s->at_device;
      return;
    }
    self->iso_in_submit(*s, *t);
  };
  if (wait > std::chrono::nanoseconds::zero())
    options_.timer(std::chrono::duration_cast<std::chrono::nanoseconds>(wait), std::move(go));
  else  // next loop turn: a device that completes inline must not recurse through here
    boost::asio::post(stream_->get_executor(), std::move(go));
}

void HostChannel::iso_in_submit(IsoStream& stream, Transfer& t) {
  // `stream` lives in iso_ or retired_iso_ while at_device counts this transfer.
  ++stream.submitted;
  t.set_completion([self = shared_from_this(), s = &stream](Transfer& x) {
    self->iso_in_completed(*s, x);
  });
  device_->submit(t);
}

void HostChannel::iso_in_completed(IsoStream& stream, Transfer& t) {
  if (stream.stopping || !open_) {
    --stream.at_device;
    return;
  }
  const Status st = t.status();
  if (st != Status::kOk && st != Status::kShortPacket) {
    --stream.at_device;
    iso_stream_failed(stream, st);
    return;
  }
  // One iso_packet per packet, in order; everything of this URB is dropped while the
  // connection is this far behind (the guest hears silence, as from a device that sent nothing).
  if (unsent_bytes() > stream.watermark_bytes()) {
    stats_.iso_dropped += t.iso_packets.size();
  } else {
    const auto buffer = t.buffer();
    for (const IsoPacket& p : t.iso_packets) {
      const uint32_t n = std::min(p.actual_length, p.length);
      const bool fits = size_t{p.offset} + n <= buffer.size();
      usb_redir_iso_packet_header h{stream.endpoint, to_redir(p.status),
                                    static_cast<uint16_t>(fits ? n : 0)};
      if (!fits) h.status = usb_redir_ioerror;
      usbredirparser_send_iso_packet(parser_, stream.next_id++, &h,
                                     n && fits ? buffer.data() + p.offset : nullptr,
                                     n && fits ? static_cast<int>(n) : 0);
      ++stats_.iso_packets_out;
    }
    flush();
  }
  if (!t.rearm()) {
    --stream.at_device;
    return;
  }
  iso_in_next(stream, t);
}

void HostChannel::on_iso_packet(uint8_t endpoint, uint8_t* data, int len) {
  auto it = iso_.find(endpoint);
  const size_t n = data && len > 0 ? static_cast<size_t>(len) : 0;
  if (it == iso_.end() || it->second->in || n > it->second->max_packet) {
    ++stats_.iso_dropped;
    if (stats_.iso_dropped == 1 || stats_.iso_dropped % 1000 == 0)
      spdlog::warn("{}: iso packet on {:#04x} dropped: {} ({} dropped so far)", options_.label,
                   endpoint,
                   it == iso_.end() ? "no OUT stream on that endpoint"
                   : it->second->in ? "the endpoint is IN"
                                    : "longer than the endpoint's packet",
                   stats_.iso_dropped);
    usbredirparser_free_packet_data(parser_, data);
    return;
  }
  IsoStream& s = *it->second;
  ++stats_.iso_packets_in;
  s.queued.emplace_back(data, data + n);
  usbredirparser_free_packet_data(parser_, data);
  // A guest far ahead of the device: drop the oldest back to half a buffer.
  if (s.queued.size() > s.buffer_packets()) {
    const size_t drop = s.queued.size() - s.buffer_packets() / 2;
    s.queued.erase(s.queued.begin(), s.queued.begin() + static_cast<std::ptrdiff_t>(drop));
    stats_.iso_dropped += drop;
  }
  if (!s.out_started && s.queued.size() >= std::max<size_t>(s.buffer_packets() / 2, 1))
    s.out_started = true;
  if (s.out_started) iso_out_fill(s);
}

void HostChannel::iso_out_fill(IsoStream& stream) {
  // Whole URBs only, at most no_urbs at the device.
  while (!stream.stopping && device_ && stream.at_device < stream.no_urbs &&
         stream.queued.size() >= stream.pkts_per_urb) {
    size_t bytes = 0;
    for (size_t i = 0; i < stream.pkts_per_urb; ++i) bytes += stream.queued[i].size();
    auto t = std::make_unique<Transfer>(stream.endpoint, TransferType::kIsochronous, bytes);
    uint32_t offset = 0;
    for (size_t i = 0; i < stream.pkts_per_urb; ++i) {
      const auto& p = stream.queued.front();
      std::copy(p.begin(), p.end(), t->buffer().begin() + offset);
      t->iso_packets.push_back({offset, static_cast<uint32_t>(p.size()), 0, Status::kOk});
      offset += static_cast<uint32_t>(p.size());
      stream.queued.pop_front();
    }
    Transfer& x = *t;
    stream.transfers.push_back(std::move(t));
    ++stream.at_device;
    x.set_completion([self = shared_from_this(), s = &stream](Transfer& done) {
      --s->at_device;
      const Status st = done.status();
      std::erase_if(s->transfers, [&](const auto& p) { return p.get() == &done; });  // `done` is gone
      if (s->stopping || !self->open_) return;
      if (st != Status::kOk && !s->error_reported) {
        s->error_reported = true;  // the guest hears of a failing OUT stream once
        usb_redir_iso_stream_status_header h{to_redir(st), s->endpoint};
        usbredirparser_send_iso_stream_status(self->parser_, 0, &h);
        self->flush();
      }
      if (st == Status::kNoDevice) return;
      // Next loop turn: a device that completes inline must not recurse through here.
      boost::asio::post(self->stream_->get_executor(), [self, s] {
        if (!s->stopping && self->open_) self->iso_out_fill(*s);
      });
    });
    device_->submit(x);
  }
}

void HostChannel::iso_stream_failed(IsoStream& stream, Status status) {
  // The endpoint stopped (stall, device gone): the guest hears it once and may start again.
  spdlog::info("{}: iso stream on {:#04x} stopped: {}", options_.label, stream.endpoint,
               to_string(status));
  usb_redir_iso_stream_status_header h{usb_redir_stall, stream.endpoint};
  usbredirparser_send_iso_stream_status(parser_, 0, &h);
  retire_iso(stream.endpoint);
  flush();
}

void HostChannel::retire_iso(uint8_t endpoint) {
  auto it = iso_.find(endpoint);
  if (it == iso_.end()) return;
  std::unique_ptr<IsoStream> s = std::move(it->second);
  iso_.erase(it);
  s->stopping = true;
  s->queued.clear();
  IsoStream& stream = *s;
  retired_iso_.push_back(std::move(s));
  // Completions may run inline (and OUT ones erase their transfer): cancel from a snapshot.
  std::vector<Transfer*> out;
  for (auto& t : stream.transfers)
    if (t->in_flight()) out.push_back(t.get());
  for (Transfer* t : out) t->cancel();
}

void HostChannel::on_stop_iso_stream(uint64_t id, uint8_t endpoint) {
  retire_iso(endpoint);
  usb_redir_iso_stream_status_header st{usb_redir_success, endpoint};
  usbredirparser_send_iso_stream_status(parser_, id, &st);
}

}  // namespace usb::usbredir
