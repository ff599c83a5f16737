#include "usb/usbredir/guest_channel.h"

#include <spdlog/spdlog.h>
#include <usbredirfilter.h>
#include <usbredirparser.h>

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <cstring>
#include <initializer_list>
#include <optional>

namespace usb::usbredir {

namespace {

// The longest transfer sent and answer taken (usbredir's own limit is 128 MiB).
constexpr size_t kMaxTransferLength = 4 * 1024 * 1024;

// The endpoint info index: OUT endpoints 0-15, IN endpoints 16-31.
size_t ep_index(uint8_t address) {
  return ((address & 0x80) >> 3) | (address & 0x0f);
}

}  // namespace

Status from_redir_status(uint8_t status) {
  switch (status) {
    case usb_redir_success:
      return Status::kOk;  // a short IN included
    case usb_redir_cancelled:
      return Status::kCancelled;
    case usb_redir_inval:
      return Status::kInvalid;
    case usb_redir_stall:
      return Status::kStall;
    case usb_redir_timeout:
      return Status::kTimeout;
    case usb_redir_babble:
      return Status::kBabble;
    default:  // ioerror, and what a newer or hostile host invents
      return Status::kIoError;
  }
}

Speed from_redir_speed(uint8_t speed) {
  switch (speed) {
    case usb_redir_speed_low:
      return Speed::kLow;
    case usb_redir_speed_full:
      return Speed::kFull;
    case usb_redir_speed_high:
      return Speed::kHigh;
    case usb_redir_speed_super:
      return Speed::kSuper;
    default:
      return Speed::kUnknown;
  }
}

std::shared_ptr<GuestChannel> GuestChannel::create(std::unique_ptr<usb::net::Stream> stream,
                                                   Options options) {
  return std::shared_ptr<GuestChannel>(new GuestChannel(std::move(stream), std::move(options)));
}

GuestChannel::GuestChannel(std::unique_ptr<usb::net::Stream> stream, Options options)
    : stream_(std::move(stream)), options_(std::move(options)), io_(*stream_, options_.label) {}

GuestChannel::~GuestChannel() = default;

uint8_t GuestChannel::alt_setting(uint8_t interface) const {
  auto it = alt_.find(interface);
  return it == alt_.end() ? 0 : it->second;
}

void GuestChannel::install_callbacks(usbredirparser* p) {
  p->log_func = [](void* priv, int level, const char* msg) { self(priv).io_.log(level, msg); };
  p->read_func = [](void* priv, uint8_t* data, int count) -> int {
    return self(priv).io_.read(data, count);
  };
  p->write_func = [](void* priv, uint8_t* data, int count) -> int {
    return self(priv).io_.write(data, count);
  };
  p->hello_func = [](void* priv, usb_redir_hello_header*) { self(priv).on_hello(); };
  p->device_connect_func = [](void* priv, usb_redir_device_connect_header* h) {
    self(priv).on_device_connect_packet(h);
  };
  p->device_disconnect_func = [](void* priv) { self(priv).on_device_disconnect_packet(); };
  p->interface_info_func = [](void* priv, usb_redir_interface_info_header* h) {
    self(priv).on_interface_info(h);
  };
  p->ep_info_func = [](void* priv, usb_redir_ep_info_header* h) { self(priv).on_ep_info(h); };
  p->configuration_status_func = [](void* priv, uint64_t id,
                                    usb_redir_configuration_status_header* h) {
    self(priv).on_configuration_status(id, h->status, h->configuration);
  };
  p->alt_setting_status_func = [](void* priv, uint64_t id, usb_redir_alt_setting_status_header* h) {
    self(priv).on_alt_setting_status(id, h->status, h->interface, h->alt);
  };
  p->interrupt_receiving_status_func = [](void* priv, uint64_t id,
                                          usb_redir_interrupt_receiving_status_header* h) {
    self(priv).on_interrupt_receiving_status(id, h->status, h->endpoint);
  };
  p->control_packet_func = [](void* priv, uint64_t id, usb_redir_control_packet_header* h,
                              uint8_t* data, int len) { self(priv).on_control(id, h, data, len); };
  p->bulk_packet_func = [](void* priv, uint64_t id, usb_redir_bulk_packet_header* h, uint8_t* data,
                           int len) { self(priv).on_bulk(id, h, data, len); };
  p->interrupt_packet_func = [](void* priv, uint64_t id, usb_redir_interrupt_packet_header* h,
                                uint8_t* data,
                                int len) { self(priv).on_interrupt(id, h, data, len); };
  // Streams we never start: whatever arrives for them is dropped.
  p->iso_packet_func = [](void* priv, uint64_t, usb_redir_iso_packet_header*, uint8_t* data, int) {
    usbredirparser_free_packet_data(self(priv).parser_, data);
  };
  p->buffered_bulk_packet_func = [](void* priv, uint64_t, usb_redir_buffered_bulk_packet_header*,
                                    uint8_t* data, int) {
    usbredirparser_free_packet_data(self(priv).parser_, data);
  };
  p->iso_stream_status_func = [](void*, uint64_t, usb_redir_iso_stream_status_header*) {};
  p->bulk_streams_status_func = [](void*, uint64_t, usb_redir_bulk_streams_status_header*) {};
  p->bulk_receiving_status_func = [](void*, uint64_t, usb_redir_bulk_receiving_status_header*) {};
  p->filter_filter_func = [](void*, usbredirfilter_rule* rules, int) {
    usbredirfilter_free(rules);  // a host's filter means nothing to a guest
  };
  // Packets only a guest sends; the parser refuses them from a host before dispatch, but every
  // callback must be set.
  p->reset_func = [](void*) {};
  p->set_configuration_func = [](void*, uint64_t, usb_redir_set_configuration_header*) {};
  p->get_configuration_func = [](void*, uint64_t) {};
  p->set_alt_setting_func = [](void*, uint64_t, usb_redir_set_alt_setting_header*) {};
  p->get_alt_setting_func = [](void*, uint64_t, usb_redir_get_alt_setting_header*) {};
  p->start_iso_stream_func = [](void*, uint64_t, usb_redir_start_iso_stream_header*) {};
  p->stop_iso_stream_func = [](void*, uint64_t, usb_redir_stop_iso_stream_header*) {};
  p->start_interrupt_receiving_func = [](void*, uint64_t,
                                         usb_redir_start_interrupt_receiving_header*) {};
  p->stop_interrupt_receiving_func = [](void*, uint64_t,
                                        usb_redir_stop_interrupt_receiving_header*) {};
  p->alloc_bulk_streams_func = [](void*, uint64_t, usb_redir_alloc_bulk_streams_header*) {};
  p->free_bulk_streams_func = [](void*, uint64_t, usb_redir_free_bulk_streams_header*) {};
  p->cancel_data_packet_func = [](void*, uint64_t) {};
  p->filter_reject_func = [](void*) {};
  p->device_disconnect_ack_func = [](void*) {};
  p->start_bulk_receiving_func = [](void*, uint64_t, usb_redir_start_bulk_receiving_header*) {};
  p->stop_bulk_receiving_func = [](void*, uint64_t, usb_redir_stop_bulk_receiving_header*) {};
}

// ---------------------------------------------------------------- the connection

void GuestChannel::start() {
  // QEMU's capabilities minus filter and bulk receiving; the parser adds device_disconnect_ack
  // in guest mode and acknowledges a disconnect itself.
  parser_ = io_.open(this, install_callbacks,
                     {usb_redir_cap_connect_device_version, usb_redir_cap_ep_info_max_packet_size,
                      usb_redir_cap_64bits_ids, usb_redir_cap_32bits_bulk_length},
                     usbredirparser_fl_write_cb_owns_buffer);
  if (!parser_) return;
  open_ = true;
  io_.start(shared_from_this(), [this](const std::string& why) {
    if (open_) closed_by_peer(why);
  });
}

void GuestChannel::flush() {
  if (parser_) io_.flush(shared_from_this());
}

void GuestChannel::closed_by_peer(const std::string& why) {
  spdlog::info("{}: connection ended: {}", options_.label, why);
  close();
  if (on_closed_) on_closed_(why);
}

void GuestChannel::close() {
  if (!open_) return;
  open_ = false;
  connected_ = false;
  io_.close();
  fail_all(Status::kNoDevice);
}

void GuestChannel::fail_all(Status status) {
  // Completions may submit again (refused now) or cancel: take everything out first.
  std::vector<Transfer*> transfers;
  std::vector<StatusCallback> callbacks;
  for (auto& [id, p] : pending_) {
    if (p.transfer) transfers.push_back(p.transfer);
    if (p.done) callbacks.push_back(std::move(p.done));
  }
  pending_.clear();
  for (auto& [ep, s] : interrupt_in_)
    transfers.insert(transfers.end(), s.waiting.begin(), s.waiting.end());
  interrupt_in_.clear();
  for (Transfer* t : transfers) t->complete(status, 0);
  for (auto& done : callbacks) done(status);
}

// ---------------------------------------------------------------- what the host announces

void GuestChannel::on_hello() {
  hello_ = true;
  spdlog::debug(
      "{}: host hello ({}64-bit ids, {}32-bit bulk lengths)", options_.label,
      usbredirparser_peer_has_cap(parser_, usb_redir_cap_64bits_ids) ? "" : "no ",
      usbredirparser_peer_has_cap(parser_, usb_redir_cap_32bits_bulk_length) ? "" : "no ");
}

void GuestChannel::on_interface_info(const void* header) {
  usb_redir_interface_info_header h;
  std::memcpy(&h, header, sizeof h);
  interfaces_.clear();
  // The parser refuses a count over 32.
  for (uint32_t i = 0; i < std::min<uint32_t>(h.interface_count, 32); ++i)
    interfaces_.push_back(
        {h.interface[i], h.interface_class[i], h.interface_subclass[i], h.interface_protocol[i]});
}

void GuestChannel::on_ep_info(const void* header) {
  // The header is shorter without our max_streams; those trailing fields are not read.
  usb_redir_ep_info_header h;
  std::memcpy(&h, header, sizeof h);
  const bool sizes = usbredirparser_peer_has_cap(parser_, usb_redir_cap_ep_info_max_packet_size);
  for (size_t i = 0; i < 32; ++i) {
    const uint8_t type = h.type[i];
    endpoints_[i] = {type <= usb_redir_type_interrupt ? type : uint8_t{0xff}, h.interval[i],
                     h.interface[i], sizes ? uint16_t{h.max_packet_size[i]} : uint16_t{0}};
  }
}

void GuestChannel::on_device_connect_packet(const void* header) {
  if (connected_) {
    spdlog::warn("{}: a second device_connect without a disconnect: ignored", options_.label);
    return;
  }
  usb_redir_device_connect_header h;
  std::memcpy(&h, header, sizeof h);
  device_.speed = from_redir_speed(h.speed);
  device_.device_class = h.device_class;
  device_.device_subclass = h.device_subclass;
  device_.device_protocol = h.device_protocol;
  device_.vendor_id = h.vendor_id;
  device_.product_id = h.product_id;
  device_.bcd_device = usbredirparser_peer_has_cap(parser_, usb_redir_cap_connect_device_version)
                           ? uint16_t{h.device_version_bcd}
                           : uint16_t{0};
  connected_ = true;
  spdlog::info("{}: the host announced {:04x}:{:04x} ({})", options_.label, device_.vendor_id,
               device_.product_id, to_string(device_.speed));
  if (on_device_connect_) on_device_connect_();
}

void GuestChannel::on_device_disconnect_packet() {
  // The parser acknowledges it (guest mode).
  if (!connected_) return;
  spdlog::info("{}: the host disconnected the device", options_.label);
  connected_ = false;
  fail_all(Status::kNoDevice);
  if (on_device_disconnect_) on_device_disconnect_();
}

// ---------------------------------------------------------------- sending

uint64_t GuestChannel::take_id() {
  const bool wide = usbredirparser_have_cap(parser_, usb_redir_cap_64bits_ids) &&
                    usbredirparser_peer_has_cap(parser_, usb_redir_cap_64bits_ids);
  uint64_t id = next_id_++;
  if (!wide && next_id_ > 0xffffffffu) next_id_ = 1;  // the wire carries 32 bits
  while (pending_.contains(id)) id = next_id_++;
  return id;
}

size_t GuestChannel::outstanding() const {
  size_t n = pending_.size();
  for (const auto& [ep, s] : interrupt_in_) n += s.waiting.size();
  return n;
}

std::optional<Status> GuestChannel::refusal() const {
  if (!device_connected()) return Status::kNoDevice;
  if (outstanding() >= options_.max_outstanding) return Status::kBusy;
  return std::nullopt;
}

bool GuestChannel::refuse_unless_ready(Transfer& t) {
  std::optional<Status> st = refusal();
  if (!st && (t.length() > kMaxTransferLength ||
              (t.type() != TransferType::kBulk && t.length() > 0xffff)))  // 16-bit lengths
    st = Status::kInvalid;
  if (!st) return false;
  ++stats_.refused;
  spdlog::debug("{}: transfer on {:#04x} ({} bytes) refused: {}", options_.label, t.endpoint(),
                t.length(), to_string(*st));
  t.complete(*st, 0);
  return true;
}

void GuestChannel::submit(Transfer& t) {
  if (refuse_unless_ready(t)) return;
  switch (t.type()) {
    case TransferType::kControl:
      if (!send_standard_request(t)) send_control(t);
      break;
    case TransferType::kBulk:
      send_bulk(t);
      break;
    case TransferType::kInterrupt:
      if (t.direction() == Direction::kIn)
        receive_interrupt(t);
      else
        send_interrupt_out(t);
      break;
    case TransferType::kIsochronous:
      if (!iso_logged_)
        spdlog::warn("{}: isochronous transfers are not supported over usbredir yet",
                     options_.label);
      iso_logged_ = true;
      ++stats_.refused;
      t.complete(Status::kNotSupported, 0);
      return;
  }
  flush();
}

void GuestChannel::send_control(Transfer& t) {
  const uint64_t id = take_id();
  usb_redir_control_packet_header h{};
  h.endpoint = t.setup.request_type & 0x80;
  h.request = t.setup.request;
  h.requesttype = t.setup.request_type;
  h.value = t.setup.value;
  h.index = t.setup.index;
  h.length = static_cast<uint16_t>(t.length());
  const bool out = !(h.endpoint & 0x80);
  spdlog::trace("{}: -> control id {} {:02x} {:02x} {:04x} {:04x} {}", options_.label, id,
                unsigned{h.requesttype}, unsigned{h.request}, unsigned{h.value}, unsigned{h.index},
                unsigned{h.length});
  t.trace_id = id;
  pending_[id] = {Pending::Kind::kControl, &t, {}, 0};
  ++stats_.packets_out;
  // The parser copies the data; OUT carries exactly `length` bytes, IN none.
  usbredirparser_send_control_packet(parser_, id, &h, out && h.length ? t.buffer().data() : nullptr,
                                     out ? h.length : 0);
}

void GuestChannel::send_bulk(Transfer& t) {
  const bool wide = usbredirparser_have_cap(parser_, usb_redir_cap_32bits_bulk_length) &&
                    usbredirparser_peer_has_cap(parser_, usb_redir_cap_32bits_bulk_length);
  const size_t length = t.length();
  if (!wide && length > 0xffff) {
    ++stats_.refused;
    spdlog::debug("{}: bulk transfer of {} bytes refused: the host has 16-bit lengths",
                  options_.label, length);
    t.complete(Status::kInvalid, 0);
    return;
  }
  const uint64_t id = take_id();
  usb_redir_bulk_packet_header h{};
  h.endpoint = t.endpoint();
  h.length = static_cast<uint16_t>(length & 0xffff);
  h.length_high = static_cast<uint16_t>(length >> 16);
  h.stream_id = 0;
  const bool out = !(h.endpoint & 0x80);
  t.trace_id = id;
  pending_[id] = {Pending::Kind::kBulk, &t, {}, 0};
  ++stats_.packets_out;
  usbredirparser_send_bulk_packet(parser_, id, &h, out && length ? t.buffer().data() : nullptr,
                                  out ? static_cast<int>(length) : 0);
}

void GuestChannel::send_interrupt_out(Transfer& t) {
  const uint64_t id = take_id();
  usb_redir_interrupt_packet_header h{};
  h.endpoint = t.endpoint();
  h.length = static_cast<uint16_t>(t.length());
  t.trace_id = id;
  pending_[id] = {Pending::Kind::kInterrupt, &t, {}, 0};
  ++stats_.packets_out;
  usbredirparser_send_interrupt_packet(parser_, id, &h, h.length ? t.buffer().data() : nullptr,
                                       h.length);
}

void GuestChannel::receive_interrupt(Transfer& t) {
  const uint8_t ep = t.endpoint();
  InterruptIn& s = interrupt_in_[ep];
  s.waiting.push_back(&t);
  if (!s.started) {
    // As QEMU does on a guest's first poll; the host keeps its transfers at the device from now
    // on and sends each completion.
    s.started = true;
    usb_redir_start_interrupt_receiving_header h{ep};
    ++stats_.packets_out;
    usbredirparser_send_start_interrupt_receiving(parser_, take_id(), &h);
  }
  serve_interrupt(ep);
}

bool GuestChannel::send_standard_request(Transfer& t) {
  const SetupPacket& s = t.setup;
  Pending p{Pending::Kind::kControl, &t, {}, static_cast<uint8_t>(s.index & 0xff)};
  if (s.request_type == 0x00 && s.request == request::kSetConfiguration)
    p.kind = Pending::Kind::kSetConfiguration;
  else if (s.request_type == 0x80 && s.request == request::kGetConfiguration)
    p.kind = Pending::Kind::kGetConfiguration;
  else if (s.request_type == 0x01 && s.request == request::kSetInterface)
    p.kind = Pending::Kind::kSetAltSetting;
  else if (s.request_type == 0x81 && s.request == request::kGetInterface)
    p.kind = Pending::Kind::kGetAltSetting;
  else
    return false;
  send_operation(std::move(p), static_cast<uint8_t>(s.value & 0xff));
  return true;
}

void GuestChannel::send_operation(Pending p, uint8_t value) {
  const uint64_t id = take_id();
  if (p.transfer) p.transfer->trace_id = id;
  switch (p.kind) {
    case Pending::Kind::kSetConfiguration: {
      usb_redir_set_configuration_header h{value};
      stop_interrupt_streams(-1);
      usbredirparser_send_set_configuration(parser_, id, &h);
      break;
    }
    case Pending::Kind::kSetAltSetting: {
      usb_redir_set_alt_setting_header h{p.interface, value};
      stop_interrupt_streams(p.interface);
      usbredirparser_send_set_alt_setting(parser_, id, &h);
      break;
    }
    case Pending::Kind::kGetConfiguration:
      usbredirparser_send_get_configuration(parser_, id);
      break;
    case Pending::Kind::kGetAltSetting: {
      usb_redir_get_alt_setting_header h{p.interface};
      usbredirparser_send_get_alt_setting(parser_, id, &h);
      break;
    }
    default:
      return;  // data packets are sent by send_control / send_bulk / send_interrupt_out
  }
  ++stats_.packets_out;
  pending_[id] = std::move(p);
}

void GuestChannel::set_configuration(uint8_t value, StatusCallback done) {
  if (auto refused = refusal()) return done(*refused);
  send_operation({Pending::Kind::kSetConfiguration, nullptr, std::move(done), 0}, value);
  flush();
}

void GuestChannel::set_interface(uint8_t interface, uint8_t alternate, StatusCallback done) {
  if (auto refused = refusal()) return done(*refused);
  send_operation({Pending::Kind::kSetAltSetting, nullptr, std::move(done), interface}, alternate);
  flush();
}

void GuestChannel::get_configuration(StatusCallback done) {
  if (auto refused = refusal()) return done(*refused);
  send_operation({Pending::Kind::kGetConfiguration, nullptr, std::move(done), 0}, 0);
  flush();
}

void GuestChannel::reset(StatusCallback done) {
  if (!device_connected()) return done(Status::kNoDevice);
  // The host cancels what it has at the device (answering each "cancelled") and ends its
  // streams; ours end here, so its stall notices for them find nothing started.
  stop_interrupt_streams(-1);
  alt_.clear();
  usbredirparser_send_reset(parser_);
  ++stats_.packets_out;
  get_configuration(std::move(done));
}

void GuestChannel::stop_interrupt_streams(int interface) {
  std::vector<Transfer*> cancelled;
  for (auto& [ep, s] : interrupt_in_) {
    if (interface >= 0 && endpoints_[ep_index(ep)].interface != interface) continue;
    if (s.started) {
      // QEMU stops them too before a configuration or alternate setting change.
      usb_redir_stop_interrupt_receiving_header h{ep};
      ++stats_.packets_out;
      usbredirparser_send_stop_interrupt_receiving(parser_, take_id(), &h);
    }
    s.started = false;
    s.queued.clear();
    cancelled.insert(cancelled.end(), s.waiting.begin(), s.waiting.end());
    s.waiting.clear();
  }
  for (Transfer* t : cancelled) t->complete(Status::kCancelled, 0);
}

void GuestChannel::cancel(Transfer& t) {
  for (auto& [ep, s] : interrupt_in_) {
    auto it = std::find(s.waiting.begin(), s.waiting.end(), &t);
    if (it == s.waiting.end()) continue;
    // Never on the wire: it just stops waiting.
    s.waiting.erase(it);
    t.complete(Status::kCancelled, 0);
    return;
  }
  for (auto& [id, p] : pending_) {
    if (p.transfer != &t) continue;
    // Only data packets can be cancelled; a request's status answers it anyway.
    if (p.kind == Pending::Kind::kControl || p.kind == Pending::Kind::kBulk ||
        p.kind == Pending::Kind::kInterrupt) {
      spdlog::trace("{}: -> cancel id {}", options_.label, id);
      ++stats_.cancelled;
      usbredirparser_send_cancel_data_packet(parser_, id);
      flush();
    }
    return;
  }
}

// ---------------------------------------------------------------- answers

std::optional<GuestChannel::Pending> GuestChannel::take_pending(
    uint64_t id, std::initializer_list<Pending::Kind> kinds, const char* what) {
  ++stats_.packets_in;
  auto it = pending_.find(id);
  if (it == pending_.end()) {
    ++stats_.unknown_ids;
    spdlog::debug("{}: {} for unknown id {}: dropped", options_.label, what, id);
    return std::nullopt;
  }
  if (std::find(kinds.begin(), kinds.end(), it->second.kind) == kinds.end()) {
    // Still waiting for an answer of its own kind.
    spdlog::debug("{}: {} answers id {} of another kind: dropped", options_.label, what, id);
    return std::nullopt;
  }
  Pending p = std::move(it->second);
  pending_.erase(it);
  return p;
}

void GuestChannel::complete_data(Transfer& t, uint8_t status, uint32_t length, const uint8_t* data,
                                 int len) {
  const bool in = t.direction() == Direction::kIn;
  const size_t got = in ? static_cast<size_t>(std::max(len, 0)) : length;
  if (got > t.length()) {
    // More than was asked: a hostile or broken host; nothing of it is kept.
    spdlog::debug("{}: answer of {} bytes to a {}-byte transfer: babble", options_.label, got,
                  t.length());
    t.complete(Status::kBabble, 0);
    return;
  }
  if (in && got) std::memcpy(t.buffer().data(), data, got);
  t.complete(from_redir_status(status), got);
}

void GuestChannel::on_control(uint64_t id, const void* header, uint8_t* data, int len) {
  usb_redir_control_packet_header h;
  std::memcpy(&h, header, sizeof h);
  if (auto p = take_pending(id, {Pending::Kind::kControl}, "control packet")) {
    spdlog::trace("{}: <- control id {} status {} length {}", options_.label, id, h.status,
                  unsigned{h.length});
    complete_data(*p->transfer, h.status, h.length, data, len);
  }
  usbredirparser_free_packet_data(parser_, data);
}

void GuestChannel::on_bulk(uint64_t id, const void* header, uint8_t* data, int len) {
  usb_redir_bulk_packet_header h;
  std::memcpy(&h, header, sizeof h);
  // The parser zeroes length_high unless both sides have 32-bit lengths.
  const uint32_t length = h.length | (uint32_t{h.length_high} << 16);
  if (auto p = take_pending(id, {Pending::Kind::kBulk}, "bulk packet")) {
    spdlog::trace("{}: <- bulk id {} status {} length {}", options_.label, id, h.status, length);
    complete_data(*p->transfer, h.status, length, data, len);
  }
  usbredirparser_free_packet_data(parser_, data);
}

void GuestChannel::on_interrupt(uint64_t id, const void* header, uint8_t* data, int len) {
  usb_redir_interrupt_packet_header h;
  std::memcpy(&h, header, sizeof h);
  const uint8_t ep = h.endpoint;
  if (!(ep & 0x80)) {
    if (auto p = take_pending(id, {Pending::Kind::kInterrupt}, "interrupt packet"))
      complete_data(*p->transfer, h.status, h.length, data, len);
    usbredirparser_free_packet_data(parser_, data);
    return;
  }
  // Interrupt IN data (the ids run free; QEMU ignores them too).
  ++stats_.packets_in;
  auto it = interrupt_in_.find(ep);
  if (it == interrupt_in_.end() || !it->second.started) {
    spdlog::debug("{}: interrupt packet on {:#04x}, which is not receiving: dropped",
                  options_.label, ep);
    usbredirparser_free_packet_data(parser_, data);
    return;
  }
  InterruptIn& s = it->second;
  s.queued.push_back({h.status, std::vector<uint8_t>(data, data + std::max(len, 0))});
  usbredirparser_free_packet_data(parser_, data);
  while (s.queued.size() > options_.interrupt_queue) {
    s.queued.pop_front();
    if (stats_.interrupt_dropped++ == 0)
      spdlog::warn("{}: interrupt IN queue of {:#04x} full: oldest packets dropped", options_.label,
                   ep);
  }
  serve_interrupt(ep);
}

void GuestChannel::serve_interrupt(uint8_t endpoint) {
  for (;;) {
    // A completion may submit, cancel or close: look the stream up again each time.
    auto it = interrupt_in_.find(endpoint);
    if (it == interrupt_in_.end()) return;
    InterruptIn& s = it->second;
    if (s.waiting.empty() || s.queued.empty()) return;
    Transfer* t = s.waiting.front();
    s.waiting.pop_front();
    InterruptIn::Packet packet = std::move(s.queued.front());
    s.queued.pop_front();
    complete_data(*t, packet.status, static_cast<uint32_t>(packet.data.size()), packet.data.data(),
                  static_cast<int>(packet.data.size()));
  }
}

void GuestChannel::on_interrupt_receiving_status(uint64_t id, uint8_t status, uint8_t endpoint) {
  ++stats_.packets_in;
  auto it = interrupt_in_.find(endpoint);
  if (status == usb_redir_success || it == interrupt_in_.end() || !it->second.started) return;
  // The host stopped receiving (a refused start, or an error it cannot recover from): the next
  // waiting transfer gets the error after what was queued, and the next IN transfer starts again.
  spdlog::debug("{}: interrupt receiving on {:#04x} ended (status {}, id {})", options_.label,
                endpoint, status, id);
  it->second.started = false;
  it->second.queued.push_back({status, {}});
  serve_interrupt(endpoint);
}

void GuestChannel::on_configuration_status(uint64_t id, uint8_t status, uint8_t configuration) {
  auto p = take_pending(id, {Pending::Kind::kSetConfiguration, Pending::Kind::kGetConfiguration},
                        "configuration status");
  if (!p) return;
  const bool set = p->kind == Pending::Kind::kSetConfiguration;
  // The host reports the configuration in force, also when setting it failed.
  if (status == usb_redir_success || set) configuration_ = configuration;
  if (set && status == usb_redir_success) alt_.clear();
  answer(*p, status, set, configuration);
}

void GuestChannel::on_alt_setting_status(uint64_t id, uint8_t status, uint8_t interface,
                                         uint8_t alt) {
  auto p = take_pending(id, {Pending::Kind::kSetAltSetting, Pending::Kind::kGetAltSetting},
                        "alt setting status");
  if (!p) return;
  if (interface != p->interface) {
    spdlog::debug("{}: alt setting status for interface {}, asked {}: an error", options_.label,
                  interface, p->interface);
    status = usb_redir_ioerror;
  }
  if (status == usb_redir_success) alt_[interface] = alt;
  answer(*p, status, p->kind == Pending::Kind::kSetAltSetting, alt);
}

void GuestChannel::answer(Pending& p, uint8_t status, bool set, uint8_t value) {
  const Status st = from_redir_status(status);
  if (p.done) return p.done(st);
  Transfer& t = *p.transfer;
  // SET_*: no data stage; GET_*: the one byte.
  if (set || st != Status::kOk || t.length() == 0) return void(t.complete(st, 0));
  t.buffer()[0] = value;
  t.complete(st, 1);
}

}  // namespace usb::usbredir
