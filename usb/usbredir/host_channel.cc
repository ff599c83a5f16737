#include "usb/usbredir/host_channel.h"

#include <spdlog/spdlog.h>
#include <usbredirfilter.h>
#include <usbredirparser.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstring>
#include <set>

#include "usb/core/device_operations.h"
#include "usb/usbredir/iso_stream.h"

namespace usb::usbredir {

namespace {

// What the guest may ask for in one bulk packet (QEMU combines IN packets; usbredir's own limit
// is 128 MiB, far more than a device should be asked at once).
constexpr uint32_t kMaxBulkLength = 4 * 1024 * 1024;

}  // namespace

uint8_t to_redir(Status s) {
  switch (s) {
    case Status::kOk:
    case Status::kShortPacket:  // a short IN is normal in usbredir
      return usb_redir_success;
    case Status::kStall:
    // No periodic bandwidth for an alternate setting / configuration: usbredir has no status for
    // it, and QEMU turns every other error into a transaction error. A stall is what a device
    // refusing the request looks like, so the guest's driver sees SET_INTERFACE fail (-EPIPE in
    // Linux) and gives up on that setting, as it would with -ENOSPC on a USB/IP import.
    case Status::kNoBandwidth:
      return usb_redir_stall;
    case Status::kCancelled:
    case Status::kUnlinked:
      return usb_redir_cancelled;
    case Status::kBabble:
      return usb_redir_babble;
    case Status::kTimeout:
      return usb_redir_timeout;
    case Status::kInvalid:
    case Status::kNotSupported:
      return usb_redir_inval;
    default:
      return usb_redir_ioerror;
  }
}

namespace {

uint8_t to_redir(Speed s) {
  switch (s) {
    case Speed::kLow:
      return usb_redir_speed_low;
    case Speed::kFull:
      return usb_redir_speed_full;
    case Speed::kHigh:
      return usb_redir_speed_high;
    case Speed::kSuper:
    case Speed::kSuperPlus:
      return usb_redir_speed_super;
    default:
      return usb_redir_speed_unknown;
  }
}

// The endpoint info index: OUT endpoints 0-15, IN endpoints 16-31.
size_t ep_index(uint8_t address) { return ((address & 0x80) >> 3) | (address & 0x0f); }

}  // namespace

// A data packet of the guest's at the device: the transfer and the header to answer with.
struct HostChannel::InFlight {
  enum class Kind : uint8_t { kControl, kBulk, kInterrupt } kind;
  std::unique_ptr<Transfer> transfer;
  usb_redir_control_packet_header control{};
  usb_redir_bulk_packet_header bulk{};
  usb_redir_interrupt_packet_header interrupt{};
  // The channel's count of buffered bytes, while this packet's buffer exists.
  size_t* accounted = nullptr;
  size_t bytes = 0;
  ~InFlight() {
    if (accounted) *accounted -= bytes;
  }
  void account(size_t* total, size_t n) {
    accounted = total;
    bytes = n;
    *total += n;
  }
};

// An interrupt IN endpoint the guest receives from: transfers kept at the device, each
// completion sent as an interrupt packet and the transfer submitted again.
struct HostChannel::InterruptStream {
  uint8_t endpoint = 0;
  std::vector<std::unique_ptr<Transfer>> transfers;
  size_t at_device = 0;
  uint64_t next_id = 0;
  bool stopping = false;
};

std::shared_ptr<HostChannel> HostChannel::create(std::unique_ptr<usb::net::Stream> stream,
                                                 Options options) {
  return std::shared_ptr<HostChannel>(new HostChannel(std::move(stream), std::move(options)));
}

HostChannel::HostChannel(std::unique_ptr<usb::net::Stream> stream, Options options)
    : stream_(std::move(stream)), options_(std::move(options)), io_(*stream_, options_.label) {
  if (!options_.clock) options_.clock = [] { return std::chrono::steady_clock::now(); };
  if (!options_.timer)
    options_.timer = [ex = stream_->get_executor()](std::chrono::nanoseconds d,
                                                    std::move_only_function<void()> fn) {
      auto timer = std::make_shared<boost::asio::steady_timer>(ex, d);
      auto call = std::make_shared<std::move_only_function<void()>>(std::move(fn));
      timer->async_wait([timer, call](boost::system::error_code) { (*call)(); });
    };
}

HostChannel::~HostChannel() {
  *alive_ = false;
}

void HostChannel::install_callbacks(usbredirparser* p) {
  p->log_func = [](void* priv, int level, const char* msg) { self(priv).io_.log(level, msg); };
  p->read_func = [](void* priv, uint8_t* data, int count) -> int {
    return self(priv).io_.read(data, count);
  };
  p->write_func = [](void* priv, uint8_t* data, int count) -> int {
    return self(priv).io_.write(data, count);
  };
  p->hello_func = [](void* priv, usb_redir_hello_header*) { self(priv).on_hello(); };
  p->reset_func = [](void* priv) { self(priv).on_reset(); };
  p->set_configuration_func = [](void* priv, uint64_t id, usb_redir_set_configuration_header* h) {
    self(priv).on_set_configuration(id, h->configuration);
  };
  p->get_configuration_func = [](void* priv, uint64_t id) {
    self(priv).on_get_configuration(id);
  };
  p->set_alt_setting_func = [](void* priv, uint64_t id, usb_redir_set_alt_setting_header* h) {
    self(priv).on_set_alt_setting(id, h->interface, h->alt);
  };
  p->get_alt_setting_func = [](void* priv, uint64_t id, usb_redir_get_alt_setting_header* h) {
    self(priv).on_get_alt_setting(id, h->interface);
  };
  p->start_iso_stream_func = [](void* priv, uint64_t id, usb_redir_start_iso_stream_header* h) {
    self(priv).on_start_iso_stream(id, h->endpoint, h->pkts_per_urb, h->no_urbs);
  };
  p->stop_iso_stream_func = [](void* priv, uint64_t id, usb_redir_stop_iso_stream_header* h) {
    self(priv).on_stop_iso_stream(id, h->endpoint);
  };
  p->start_interrupt_receiving_func = [](void* priv, uint64_t id,
                                         usb_redir_start_interrupt_receiving_header* h) {
    self(priv).on_start_interrupt_receiving(id, h->endpoint);
  };
  p->stop_interrupt_receiving_func = [](void* priv, uint64_t id,
                                        usb_redir_stop_interrupt_receiving_header* h) {
    self(priv).on_stop_interrupt_receiving(id, h->endpoint);
  };
  p->alloc_bulk_streams_func = [](void* priv, uint64_t id,
                                  usb_redir_alloc_bulk_streams_header* h) {
    auto& c = self(priv);
    ++c.stats_.refused;
    spdlog::warn("{}: bulk streams refused: not implemented yet", c.options_.label);
    usb_redir_bulk_streams_status_header st{h->endpoints, h->no_streams, usb_redir_inval};
    usbredirparser_send_bulk_streams_status(c.parser_, id, &st);
  };
  p->free_bulk_streams_func = [](void* priv, uint64_t id, usb_redir_free_bulk_streams_header* h) {
    usb_redir_bulk_streams_status_header st{h->endpoints, 0, usb_redir_success};
    usbredirparser_send_bulk_streams_status(self(priv).parser_, id, &st);
  };
  p->cancel_data_packet_func = [](void* priv, uint64_t id) { self(priv).on_cancel(id); };
  p->control_packet_func = [](void* priv, uint64_t id, usb_redir_control_packet_header* h,
                              uint8_t* data, int len) { self(priv).on_control(id, h, data, len); };
  p->bulk_packet_func = [](void* priv, uint64_t id, usb_redir_bulk_packet_header* h,
                           uint8_t* data, int len) { self(priv).on_bulk(id, h, data, len); };
  p->iso_packet_func = [](void* priv, uint64_t, usb_redir_iso_packet_header* h, uint8_t* data,
                          int len) { self(priv).on_iso_packet(h->endpoint, data, len); };
  p->interrupt_packet_func = [](void* priv, uint64_t id, usb_redir_interrupt_packet_header* h,
                                uint8_t* data, int len) {
    self(priv).on_interrupt(id, h, data, len);
  };
  p->filter_reject_func = [](void* priv) { self(priv).on_filter_reject(); };
  p->filter_filter_func = [](void*, usbredirfilter_rule* rules, int) {
    // The guest enforces its own filter (it answers filter_reject); nothing to keep.
    usbredirfilter_free(rules);
  };
  p->device_disconnect_ack_func = [](void* priv) { self(priv).on_disconnect_ack(); };
  p->start_bulk_receiving_func = [](void* priv, uint64_t id,
                                    usb_redir_start_bulk_receiving_header* h) {
    usb_redir_bulk_receiving_status_header st{h->stream_id, h->endpoint, usb_redir_inval};
    usbredirparser_send_bulk_receiving_status(self(priv).parser_, id, &st);
  };
  p->stop_bulk_receiving_func = [](void* priv, uint64_t id,
                                   usb_redir_stop_bulk_receiving_header* h) {
    usb_redir_bulk_receiving_status_header st{h->stream_id, h->endpoint, usb_redir_success};
    usbredirparser_send_bulk_receiving_status(self(priv).parser_, id, &st);
  };
  // Packets only a host sends; the parser refuses them from a guest before dispatch, but every
  // callback must be set.
  p->device_connect_func = [](void*, usb_redir_device_connect_header*) {};
  p->device_disconnect_func = [](void*) {};
  p->interface_info_func = [](void*, usb_redir_interface_info_header*) {};
  p->ep_info_func = [](void*, usb_redir_ep_info_header*) {};
  p->configuration_status_func = [](void*, uint64_t, usb_redir_configuration_status_header*) {};
  p->alt_setting_status_func = [](void*, uint64_t, usb_redir_alt_setting_status_header*) {};
  p->iso_stream_status_func = [](void*, uint64_t, usb_redir_iso_stream_status_header*) {};
  p->interrupt_receiving_status_func = [](void*, uint64_t,
                                          usb_redir_interrupt_receiving_status_header*) {};
  p->bulk_streams_status_func = [](void*, uint64_t, usb_redir_bulk_streams_status_header*) {};
  p->bulk_receiving_status_func = [](void*, uint64_t, usb_redir_bulk_receiving_status_header*) {};
  p->buffered_bulk_packet_func = [](void* priv, uint64_t, usb_redir_buffered_bulk_packet_header*,
                                    uint8_t* data, int) {
    usbredirparser_free_packet_data(self(priv).parser_, data);
  };
}

void HostChannel::start() {
  parser_ = io_.open(this, install_callbacks,
                     {usb_redir_cap_connect_device_version, usb_redir_cap_filter,
                      usb_redir_cap_device_disconnect_ack, usb_redir_cap_ep_info_max_packet_size,
                      usb_redir_cap_64bits_ids, usb_redir_cap_32bits_bulk_length},
                     usbredirparser_fl_usb_host | usbredirparser_fl_write_cb_owns_buffer);
  if (!parser_) return;
  open_ = true;
  io_.start(shared_from_this(), [this](const std::string& why) {
    if (!open_) return;
    close();
    if (on_closed_) on_closed_(why);
  });
}

void HostChannel::flush() {
  if (parser_) io_.flush(shared_from_this());
}

void HostChannel::close() {
  if (!open_) return;
  open_ = false;
  cancel_all();
  stop_streams();
  io_.close();
}

// ---------------------------------------------------------------- the device

void HostChannel::attach(usb::Device& device) {
  device_ = &device;
  announce();
}

void HostChannel::announce() {
  if (!open_ || !hello_ || !device_ || announced_ || awaiting_ack_) return;
  send_device_info();
  const auto& d = device_->descriptors().device;
  usb_redir_device_connect_header h{};
  h.speed = to_redir(device_->speed());
  h.device_class = d.device_class;
  h.device_subclass = d.device_subclass;
  h.device_protocol = d.device_protocol;
  h.vendor_id = d.vendor_id;
  h.product_id = d.product_id;
  h.device_version_bcd = d.bcd_device;
  usbredirparser_send_device_connect(parser_, &h);
  announced_ = true;
  spdlog::info("{}: announced {:04x}:{:04x} to the guest", options_.label, d.vendor_id,
               d.product_id);
  flush();
}

void HostChannel::send_device_info() {
  usb_redir_interface_info_header ii{};
  usb_redir_ep_info_header ep{};
  for (size_t i = 0; i < 32; ++i) ep.type[i] = usb_redir_type_invalid;
  ep.type[0] = ep.type[16] = usb_redir_type_control;
  if (const ConfigurationDescriptor* cfg = device_->active_config_descriptor()) {
    std::set<uint8_t> numbers;
    for (const auto& intf : cfg->interfaces) numbers.insert(intf.number);
    for (uint8_t n : numbers) {
      const InterfaceDescriptor* d = cfg->find(n, device_->alternate_setting(n));
      if (!d || ii.interface_count >= 32) continue;
      const uint32_t k = ii.interface_count;
      ii.interface[k] = n;
      ii.interface_class[k] = d->interface_class;
      ii.interface_subclass[k] = d->interface_subclass;
      ii.interface_protocol[k] = d->interface_protocol;
      ii.interface_count = k + 1;
      for (const EndpointDescriptor& e : d->endpoints) {
        const size_t i = ep_index(e.address);
        ep.type[i] = static_cast<uint8_t>(e.attributes & 3);
        ep.interval[i] = e.interval;
        ep.interface[i] = n;
        ep.max_packet_size[i] =
            static_cast<uint16_t>(std::min<uint32_t>(redir_max_packet(device_->speed(), e), 0xffff));
        const uint8_t streams = e.ss_companion ? (e.ss_companion->attributes & 0x1f) : 0;
        ep.max_streams[i] = e.type() == TransferType::kBulk && streams ? 1u << streams : 0;
      }
    }
  }
  usbredirparser_send_interface_info(parser_, &ii);
  usbredirparser_send_ep_info(parser_, &ep);
}

void HostChannel::detach() {
  if (!device_) return;
  cancel_all();
  stop_streams();
  if (announced_ && open_) {
    usbredirparser_send_device_disconnect(parser_);
    awaiting_ack_ = usbredirparser_peer_has_cap(parser_, usb_redir_cap_device_disconnect_ack);
    flush();
  }
  announced_ = false;
  device_ = nullptr;
}

void HostChannel::on_hello() {
  hello_ = true;
  announce();
}

void HostChannel::on_disconnect_ack() {
  awaiting_ack_ = false;
  announce();  // a device attached meanwhile
}

void HostChannel::on_filter_reject() {
  spdlog::warn("{}: the guest rejected the device (its filter, the port's speed, or missing "
               "capabilities)",
               options_.label);
  cancel_all();
  stop_streams();
  announced_ = false;
  device_ = nullptr;
  if (on_rejected_) on_rejected_("the guest rejected the device");
}

void HostChannel::on_reset() {
  spdlog::debug("{}: reset", options_.label);
  if (!device_ || !announced_) return;
  cancel_all();
  stop_streams();
  device_->reset([](Status) {});  // no reply in usbredir
}

// ---------------------------------------------------------------- data packets

void HostChannel::on_control(uint64_t id, const void* header, uint8_t* data, int len) {
  auto f = std::make_unique<InFlight>();
  f->kind = InFlight::Kind::kControl;
  std::memcpy(&f->control, header, sizeof f->control);
  spdlog::trace("{}: <- control id {} {:02x} {:02x} {:04x} {:04x} {}", options_.label, id,
                unsigned{f->control.requesttype}, unsigned{f->control.request},
                unsigned{f->control.value}, unsigned{f->control.index},
                unsigned{f->control.length});
  ++stats_.packets_in;
  SetupPacket setup;
  setup.request_type = f->control.requesttype;
  setup.request = f->control.request;
  setup.value = f->control.value;
  setup.index = f->control.index;
  setup.length = f->control.length;
  if (!admit(setup.length)) {
    usbredirparser_free_packet_data(parser_, data);
    return reply(id, *f, usb_redir_ioerror, {});
  }
  f->transfer = Transfer::control(f->control.endpoint & 0x80, setup);
  f->account(&inflight_bytes_, setup.length);
  if (setup.direction() == Direction::kOut && data && len > 0)
    std::memcpy(f->transfer->buffer().data(), data,
                std::min(static_cast<size_t>(len), f->transfer->length()));
  usbredirparser_free_packet_data(parser_, data);
  submit(id, std::move(f));
}

void HostChannel::on_bulk(uint64_t id, const void* header, uint8_t* data, int len) {
  auto f = std::make_unique<InFlight>();
  f->kind = InFlight::Kind::kBulk;
  std::memcpy(&f->bulk, header, sizeof f->bulk);
  ++stats_.packets_in;
  const uint8_t ep = f->bulk.endpoint;
  uint32_t length = f->bulk.length;
  if (usbredirparser_have_cap(parser_, usb_redir_cap_32bits_bulk_length) &&
      usbredirparser_peer_has_cap(parser_, usb_redir_cap_32bits_bulk_length))
    length |= static_cast<uint32_t>(f->bulk.length_high) << 16;
  if (length > kMaxBulkLength || f->bulk.stream_id != 0) {
    usbredirparser_free_packet_data(parser_, data);
    ++stats_.refused;
    spdlog::warn("{}: bulk packet on {:#04x} refused: {}", options_.label, ep,
                 f->bulk.stream_id ? "bulk streams are not supported" : "longer than 4 MiB");
    reply(id, *f, usb_redir_inval, {});
    return;
  }
  if (!admit(length)) {
    usbredirparser_free_packet_data(parser_, data);
    return reply(id, *f, usb_redir_ioerror, {});
  }
  f->transfer = std::make_unique<Transfer>(ep, TransferType::kBulk, length);
  f->account(&inflight_bytes_, length);
  if (!(ep & 0x80) && data && len > 0)
    std::memcpy(f->transfer->buffer().data(), data, std::min<size_t>(len, length));
  usbredirparser_free_packet_data(parser_, data);
  submit(id, std::move(f));
}

void HostChannel::on_interrupt(uint64_t id, const void* header, uint8_t* data, int len) {
  // Interrupt OUT (IN comes through start_interrupt_receiving).
  auto f = std::make_unique<InFlight>();
  f->kind = InFlight::Kind::kInterrupt;
  std::memcpy(&f->interrupt, header, sizeof f->interrupt);
  ++stats_.packets_in;
  const size_t length = data && len > 0 ? static_cast<size_t>(len) : 0;
  if (!admit(length)) {
    usbredirparser_free_packet_data(parser_, data);
    return reply(id, *f, usb_redir_ioerror, {});
  }
  f->transfer = std::make_unique<Transfer>(f->interrupt.endpoint, TransferType::kInterrupt, length);
  f->account(&inflight_bytes_, length);
  if (length) std::memcpy(f->transfer->buffer().data(), data, length);
  usbredirparser_free_packet_data(parser_, data);
  submit(id, std::move(f));
}

bool HostChannel::admit(size_t bytes) {
  const bool fits = inflight_.size() + cancelled_.size() < options_.max_packets &&
                    inflight_bytes_ + bytes <= options_.max_bytes;
  if (fits) {
    over_limit_ = false;
    return true;
  }
  ++stats_.refused;
  if (!over_limit_)
    spdlog::warn("{}: the guest has {} packets / {} bytes at the device; more are refused "
                 "(ioerror) until some complete",
                 options_.label, inflight_.size() + cancelled_.size(), inflight_bytes_);
  over_limit_ = true;
  return false;
}

void HostChannel::submit(uint64_t id, std::unique_ptr<InFlight> f) {
  spdlog::trace("{}: <- id {} ep {:#04x} type {} length {}", options_.label, id,
                f->transfer->endpoint(), static_cast<int>(f->transfer->type()),
                f->transfer->length());
  if (!device_ || !announced_) {
    reply(id, *f, usb_redir_ioerror, {});
    return;
  }
  if (inflight_.contains(id)) {
    spdlog::warn("{}: packet id {} is already in flight; refused", options_.label, id);
    reply(id, *f, usb_redir_inval, {});
    return;
  }
  Transfer& t = *f->transfer;
  t.trace_id = id;
  t.set_completion([self = shared_from_this(), id](Transfer& x) { self->complete(id, x); });
  inflight_[id] = std::move(f);
  if (t.type() == TransferType::kControl)
    usb::submit_or_perform(*device_, t);
  else
    device_->submit(t);
}

void HostChannel::complete(uint64_t id, Transfer& t) {
  auto it = inflight_.find(id);
  if (it == inflight_.end() || it->second->transfer.get() != &t) {
    // A cancelled packet's late completion (its id may be in use again already): dropped.
    std::erase_if(cancelled_, [&](const auto& f) { return f->transfer.get() == &t; });
    return;
  }
  auto f = std::move(it->second);
  inflight_.erase(it);
  if (!open_) return;
  const bool in = t.direction() == Direction::kIn;
  // The transfer ends here; the parser copies the reply (and flushes it outside do_read).
  reply(id, *f, to_redir(t.status()), in ? t.data() : std::span<const uint8_t>{});
}

void HostChannel::reply(uint64_t id, InFlight& f, uint8_t status, std::span<const uint8_t> data) {
  if (!parser_ || !open_) return;
  spdlog::trace("{}: -> id {} status {} data {}", options_.label, id, status, data.size());
  ++stats_.packets_out;
  auto* bytes = const_cast<uint8_t*>(data.data());
  const int n = static_cast<int>(data.size());
  const size_t actual = f.transfer ? f.transfer->actual_length() : 0;
  const size_t length = status == usb_redir_success || data.size() ? actual : 0;
  switch (f.kind) {
    case InFlight::Kind::kControl: {
      usb_redir_control_packet_header h = f.control;
      h.status = status;
      h.length = static_cast<uint16_t>(length);
      usbredirparser_send_control_packet(parser_, id, &h, n ? bytes : nullptr, n);
      break;
    }
    case InFlight::Kind::kBulk: {
      usb_redir_bulk_packet_header h = f.bulk;
      h.status = status;
      h.length = static_cast<uint16_t>(length & 0xffff);
      h.length_high = static_cast<uint16_t>(length >> 16);
      usbredirparser_send_bulk_packet(parser_, id, &h, n ? bytes : nullptr, n);
      break;
    }
    case InFlight::Kind::kInterrupt: {
      usb_redir_interrupt_packet_header h = f.interrupt;
      h.status = status;
      h.length = static_cast<uint16_t>(length);
      usbredirparser_send_interrupt_packet(parser_, id, &h, nullptr, 0);
      break;
    }
  }
  flush();
}

void HostChannel::on_cancel(uint64_t id) {
  spdlog::trace("{}: <- cancel id {}", options_.label, id);
  auto it = inflight_.find(id);
  if (it == inflight_.end()) return;  // answered already: silence
  std::unique_ptr<InFlight> f = std::move(it->second);
  inflight_.erase(it);
  ++stats_.cancelled;
  // Answered now, with nothing. The id is free at once (QEMU's xHCI submits the restarted TD
  // under the same id); the transfer waits in cancelled_ and its own completion is dropped.
  reply(id, *f, usb_redir_cancelled, {});
  Transfer* t = f->transfer.get();
  cancelled_.push_back(std::move(f));
  t->cancel();
}

void HostChannel::cancel_all() {
  // Nobody is answered after a reset, a disconnect or a close. A cancel may complete inline —
  // its own transfer, and others too (a device that then fails what was queued behind it) — so
  // every packet is held here until all the cancels are made; a completion meanwhile finds its
  // packet in neither map and is dropped. Those still at the device wait in cancelled_.
  std::vector<std::unique_ptr<InFlight>> cancelling;
  cancelling.reserve(inflight_.size());
  for (auto& [id, f] : inflight_) cancelling.push_back(std::move(f));
  inflight_.clear();
  for (auto& f : cancelling) f->transfer->cancel();
  for (auto& f : cancelling)
    if (f->transfer->in_flight()) cancelled_.push_back(std::move(f));
}

// ---------------------------------------------------------------- device operations

void HostChannel::on_set_configuration(uint64_t id, uint8_t value) {
  auto answer = [this, id](uint8_t status) {
    usb_redir_configuration_status_header h{};
    h.status = status;
    h.configuration = device_ ? device_->active_configuration() : 0;
    usbredirparser_send_configuration_status(parser_, id, &h);
    flush();
  };
  spdlog::debug("{}: set_configuration {} (id {})", options_.label, value, id);
  if (!device_ || !announced_) return answer(usb_redir_ioerror);
  // Always through the device, even for the configuration it reports: a vusbd DeviceView
  // reports the shared device's, and only the request itself tells it this VM chose one.
  cancel_all();
  stop_streams();
  usb::Device* device = device_;
  device->set_configuration(value, [self = shared_from_this(), device, answer](Status st) {
    if (!self->open_ || self->device_ != device) return;
    if (st == Status::kOk) self->send_device_info();  // before the status, as the guest expects
    answer(to_redir(st));
  });
}

void HostChannel::on_get_configuration(uint64_t id) {
  usb_redir_configuration_status_header h{};
  h.status = device_ && announced_ ? usb_redir_success : usb_redir_ioerror;
  h.configuration = device_ ? device_->active_configuration() : 0;
  usbredirparser_send_configuration_status(parser_, id, &h);
}

void HostChannel::on_set_alt_setting(uint64_t id, uint8_t interface, uint8_t alt) {
  spdlog::debug("{}: set_alt_setting {} {} (id {})", options_.label, interface, alt, id);
  auto answer = [this, id, interface](uint8_t status) {
    usb_redir_alt_setting_status_header h{};
    h.status = status;
    h.interface = interface;
    h.alt = device_ && status != usb_redir_inval ? device_->alternate_setting(interface) : 0xff;
    usbredirparser_send_alt_setting_status(parser_, id, &h);
    flush();
  };
  if (!device_ || !announced_) return answer(usb_redir_ioerror);
  const ConfigurationDescriptor* cfg = device_->active_config_descriptor();
  if (!cfg || !cfg->find(interface, alt)) return answer(usb_redir_inval);
  // The interface's streams end with its old alt setting (usbredirhost does the same).
  if (const InterfaceDescriptor* old = cfg->find(interface, device_->alternate_setting(interface)))
    for (const EndpointDescriptor& e : old->endpoints) {
      retire(e.address);
      retire_iso(e.address);
    }
  usb::Device* device = device_;
  device->set_interface(interface, alt, [self = shared_from_this(), device, answer](Status st) {
    if (!self->open_ || self->device_ != device) return;
    if (st == Status::kOk) self->send_device_info();
    answer(to_redir(st));
  });
}

void HostChannel::on_get_alt_setting(uint64_t id, uint8_t interface) {
  usb_redir_alt_setting_status_header h{};
  h.interface = interface;
  const ConfigurationDescriptor* cfg = device_ ? device_->active_config_descriptor() : nullptr;
  if (!cfg || cfg->alternate_count(interface) == 0) {
    h.status = usb_redir_inval;
    h.alt = 0xff;
  } else {
    h.status = usb_redir_success;
    h.alt = device_->alternate_setting(interface);
  }
  usbredirparser_send_alt_setting_status(parser_, id, &h);
}

// ---------------------------------------------------------------- interrupt IN

void HostChannel::on_start_interrupt_receiving(uint64_t id, uint8_t endpoint) {
  std::erase_if(retired_, [](const auto& r) { return r->at_device == 0; });
  usb_redir_interrupt_receiving_status_header st{usb_redir_success, endpoint};
  const EndpointDescriptor* desc = active_endpoint(endpoint, TransferType::kInterrupt);
  if (!desc || !(endpoint & 0x80)) {
    st.status = usb_redir_inval;
    usbredirparser_send_interrupt_receiving_status(parser_, id, &st);
    return;
  }
  retire(endpoint);  // a stream already running restarts
  auto s = std::make_unique<InterruptStream>();
  s->endpoint = endpoint;
  for (size_t i = 0; i < options_.interrupt_transfers; ++i)
    s->transfers.push_back(
        std::make_unique<Transfer>(endpoint, TransferType::kInterrupt, desc->max_packet()));
  InterruptStream& stream = *s;
  interrupt_in_[endpoint] = std::move(s);
  usbredirparser_send_interrupt_receiving_status(parser_, id, &st);
  for (auto& t : stream.transfers) poll_interrupt(stream, *t);
}

void HostChannel::poll_interrupt(InterruptStream& stream, Transfer& t) {
  if (!device_ || stream.stopping) return;
  ++stream.at_device;
  arm_interrupt(stream, t);
}

void HostChannel::arm_interrupt(InterruptStream& stream, Transfer& t) {
  // `s` lives in interrupt_in_ or retired_ while at_device counts a transfer of it — one at the
  // device, or one waiting for its next submission.
  t.set_completion([self = shared_from_this(), s = &stream](Transfer& x) {
    if (s->stopping || !self->open_) {
      --s->at_device;
      return;
    }
    if (x.status() != Status::kOk && x.status() != Status::kShortPacket) {
      // The endpoint stopped (stall, device gone): the guest hears it once and may start again.
      --s->at_device;
      usb_redir_interrupt_receiving_status_header st{to_redir(x.status()), s->endpoint};
      usbredirparser_send_interrupt_receiving_status(self->parser_, 0, &st);
      self->retire(s->endpoint);
      self->flush();
      return;
    }
    usb_redir_interrupt_packet_header h{s->endpoint, usb_redir_success,
                                        static_cast<uint16_t>(x.actual_length())};
    auto data = x.data();
    usbredirparser_send_interrupt_packet(self->parser_, s->next_id++, &h,
                                         const_cast<uint8_t*>(data.data()),
                                         static_cast<int>(data.size()));
    ++self->stats_.packets_out;
    self->flush();
    if (!x.rearm()) {
      --s->at_device;
      return;
    }
    // Next loop turn: a device that completes inline must not recurse through here.
    boost::asio::post(self->stream_->get_executor(), [self, s, t = &x] {
      if (s->stopping || !self->open_ || !self->device_) {
        --s->at_device;
        return;
      }
      self->arm_interrupt(*s, *t);
    });
  });
  device_->submit(t);
}

void HostChannel::retire(uint8_t endpoint) {
  auto it = interrupt_in_.find(endpoint);
  if (it == interrupt_in_.end()) return;
  std::unique_ptr<InterruptStream> s = std::move(it->second);
  interrupt_in_.erase(it);
  s->stopping = true;
  InterruptStream& stream = *s;
  retired_.push_back(std::move(s));
  for (auto& t : stream.transfers)
    if (t->in_flight()) t->cancel();  // completions may run inline: the stream stays in retired_
}

void HostChannel::on_stop_interrupt_receiving(uint64_t id, uint8_t endpoint) {
  retire(endpoint);
  usb_redir_interrupt_receiving_status_header st{usb_redir_success, endpoint};
  usbredirparser_send_interrupt_receiving_status(parser_, id, &st);
}

void HostChannel::stop_streams() {
  std::vector<uint8_t> endpoints;
  for (const auto& [ep, _] : interrupt_in_) endpoints.push_back(ep);
  for (uint8_t ep : endpoints) retire(ep);
  endpoints.clear();
  for (const auto& [ep, _] : iso_) endpoints.push_back(ep);
  for (uint8_t ep : endpoints) retire_iso(ep);
}

}  // namespace usb::usbredir
