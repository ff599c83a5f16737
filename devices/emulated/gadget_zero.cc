#include "devices/emulated/gadget_zero.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <utility>

#include "devices/emulated/device_options.h"

namespace devices {

using usb::Direction;
using usb::Status;
using usb::Transfer;
using usb::TransferType;

namespace {

constexpr uint8_t kVendorClass = 0xff;  // USB_CLASS_VENDOR_SPEC
constexpr uint8_t kAttrBulk = 0x02;
constexpr uint8_t kAttrIso = 0x01;  // asynchronous, data endpoint (as f_sourcesink)
constexpr uint8_t kStringManufacturer = 1;
constexpr uint8_t kStringProduct = 2;
constexpr uint8_t kStringSerial = 3;
constexpr uint8_t kStringSourceSink = 4;
constexpr uint8_t kStringLoopback = 5;

// BOS capability types (USB 3.2 table 9-14).
constexpr uint8_t kCapUsb20Extension = 0x02;
constexpr uint8_t kCapSuperSpeed = 0x03;

GadgetZeroOptions clamped(GadgetZeroOptions o) {
  // The ranges f_sourcesink's bind() enforces.
  o.isoc_interval = std::clamp<uint8_t>(o.isoc_interval, 1, 16);
  o.isoc_mult = std::min<uint8_t>(o.isoc_mult, 2);
  o.isoc_maxburst = std::min<uint8_t>(o.isoc_maxburst, 15);
  o.isoc_maxpacket = std::min<uint16_t>(o.isoc_maxpacket, 1024);
  if (o.pattern > 2) o.pattern = 0;
  if (o.bulk_buflen == 0) o.bulk_buflen = 4096;
  if (o.loopback_qlen == 0) o.loopback_qlen = 1;
  o.ctrl_buflen = std::min<uint32_t>(o.ctrl_buflen, 0xffff);
  if (o.speed != usb::Speed::kFull && o.speed != usb::Speed::kSuper &&
      o.speed != usb::Speed::kSuperPlus) {
    o.speed = usb::Speed::kHigh;
  }
  return o;
}

usb::EndpointDescriptor endpoint(uint8_t address, uint8_t attributes, uint16_t max_packet,
                                 uint8_t interval, bool super_speed,
                                 usb::SsEndpointCompanion companion = {}) {
  usb::EndpointDescriptor ep;
  ep.address = address;
  ep.attributes = attributes;
  ep.max_packet_size = max_packet;
  ep.interval = interval;
  if (super_speed) ep.ss_companion = companion;
  return ep;
}

enum class Tables { kFull, kHigh, kSuper };

usb::DescriptorSet make_set(const GadgetZeroOptions& o, Tables speed) {
  const bool ss = speed == Tables::kSuper;
  usb::DescriptorSet set;
  set.device.bcd_usb = ss ? 0x0300 : 0x0200;
  set.device.device_class = kVendorClass;
  set.device.max_packet_size0 = ss ? 9 : 64;  // SuperSpeed: 2^9 = 512
  set.device.vendor_id = GadgetZero::kVendorId;
  set.device.product_id = GadgetZero::kProductId;
  set.device.bcd_device = 0x0100;
  set.device.manufacturer_index = kStringManufacturer;
  set.device.product_index = kStringProduct;
  set.device.serial_index = kStringSerial;
  set.device.num_configurations = 2;

  const uint16_t bulk_mps = speed == Tables::kFull ? 64 : speed == Tables::kHigh ? 512 : 1024;
  auto bulk = [&](uint8_t address) { return endpoint(address, kAttrBulk, bulk_mps, 0, ss); };
  auto iso = [&](uint8_t address) {
    uint16_t mps = o.isoc_maxpacket;
    usb::SsEndpointCompanion companion;
    if (speed == Tables::kFull) {
      mps = std::min<uint16_t>(mps, 1023);
    } else if (speed == Tables::kHigh) {
      mps = static_cast<uint16_t>(mps | (o.isoc_mult << 11));
    } else {
      companion.attributes = o.isoc_mult;
      companion.max_burst = o.isoc_maxburst;
      companion.bytes_per_interval =
          static_cast<uint16_t>(o.isoc_maxpacket * (o.isoc_mult + 1) * (o.isoc_maxburst + 1));
    }
    return endpoint(address, kAttrIso, mps, o.isoc_interval, ss, companion);
  };

  usb::ConfigurationDescriptor source_sink;
  source_sink.value = GadgetZero::kSourceSinkConfig;
  source_sink.num_interfaces = 1;
  source_sink.string_index = kStringSourceSink;
  source_sink.attributes = usb::kConfigAttrOne | usb::kConfigAttrSelfPowered;
  source_sink.max_power = 1;
  usb::InterfaceDescriptor alt0;
  alt0.number = 0;
  alt0.alternate = 0;
  alt0.interface_class = kVendorClass;
  alt0.string_index = kStringSourceSink;
  alt0.endpoints = {bulk(GadgetZero::kBulkIn), bulk(GadgetZero::kBulkOut)};
  usb::InterfaceDescriptor alt1 = alt0;
  alt1.alternate = 1;
  alt1.endpoints.push_back(iso(GadgetZero::kIsoIn));
  alt1.endpoints.push_back(iso(GadgetZero::kIsoOut));
  source_sink.interfaces = {alt0, alt1};

  usb::ConfigurationDescriptor loopback = source_sink;
  loopback.value = GadgetZero::kLoopbackConfig;
  loopback.string_index = kStringLoopback;
  usb::InterfaceDescriptor lb = alt0;
  lb.string_index = kStringLoopback;
  loopback.interfaces = {lb};

  if (o.loopback_first) {
    set.configurations = {loopback, source_sink};
  } else {
    set.configurations = {source_sink, loopback};
  }

  if (ss) {
    usb::BosDescriptor bos;
    // USB 2.0 Extension (USB 3.2 9.6.2.1): bmAttributes, LPM supported.
    bos.capabilities.push_back({kCapUsb20Extension, {0x02, 0x00, 0x00, 0x00}});
    // SuperSpeed USB Device Capability (USB 3.2 9.6.2.2): no LTM, full/high/super speed,
    // full functionality from full speed, U1 exit 1 us, U2 exit 500 us.
    bos.capabilities.push_back({kCapSuperSpeed, {0x00, 0x0e, 0x00, 0x01, 0x01, 0xf4, 0x01}});
    set.bos = std::move(bos);
  }
  set.strings = {o.manufacturer, "Gadget Zero", o.serial, "source and sink data",
                 "loop input to output"};
  return set;
}

}  // namespace

SpeedDescriptors GadgetZero::make_descriptors(const GadgetZeroOptions& options) {
  const GadgetZeroOptions o = clamped(options);
  SpeedDescriptors sets;
  sets.full_speed = make_set(o, Tables::kFull);
  sets.high_speed = make_set(o, Tables::kHigh);
  sets.super_speed = make_set(o, Tables::kSuper);
  return sets;
}

GadgetZero::GadgetZero(GadgetZeroOptions options, usb::DeviceLocation location)
    : EmulatedDevice(make_descriptors(options), clamped(options).speed, std::move(location)),
      options_(clamped(std::move(options))),
      ctrl_buffer_(options_.ctrl_buflen, 0) {}

// --- Control: the two vendor test requests of the source/sink configuration ---

EmulatedDevice::ControlReply GadgetZero::on_control_request(const usb::SetupPacket& setup,
                                                            std::span<uint8_t> data) {
  constexpr uint8_t kVendorOut = usb::SetupPacket::make_type(
      Direction::kOut, usb::RequestType::kVendor, usb::Recipient::kDevice);
  constexpr uint8_t kVendorIn = usb::SetupPacket::make_type(
      Direction::kIn, usb::RequestType::kVendor, usb::Recipient::kDevice);
  if (active_configuration() != kSourceSinkConfig) return stall();
  const bool write = setup.request == kRequestWrite && setup.request_type == kVendorOut;
  const bool read = setup.request == kRequestRead && setup.request_type == kVendorIn;
  if (!write && !read) return stall();
  if (setup.value != 0 || setup.index != 0 || setup.length > ctrl_buffer_.size()) return stall();
  const size_t n = std::min<size_t>(data.size(), setup.length);
  if (write) {
    if (n) std::memcpy(ctrl_buffer_.data(), data.data(), n);
  } else if (n) {
    std::memcpy(data.data(), ctrl_buffer_.data(), n);
  }
  return ok(n);
}

// --- Data ---

void GadgetZero::on_transfer(Transfer& transfer, const usb::EndpointDescriptor& endpoint) {
  if (active_configuration() == kLoopbackConfig) {
    loopback_pump();
    return;
  }
  switch (endpoint.type()) {
    case TransferType::kBulk:
      if (endpoint.direction() == Direction::kIn) {
        source_bulk(transfer, endpoint);
      } else {
        sink_bulk(transfer, endpoint);
      }
      return;
    case TransferType::kIsochronous:
      iso(transfer, endpoint);
      return;
    default:
      finish(transfer, Status::kStall, 0);
      return;
  }
}

namespace {

// One period of the data pattern: pattern 0 is zeros; pattern 1 repeats every wMaxPacketSize
// bytes as (i % maxpacket) % 63 (usbtest's simple_fill_buf / simple_check_buf). Fills and checks
// work a period at a time with memcpy/memcmp, which are vectorised, instead of byte loops: at
// 64 KiB per URB the check would otherwise cost as much as the socket.
std::span<const uint8_t> pattern_period(uint8_t pattern, uint16_t max_packet) {
  static const std::array<uint8_t, 1024> kZeros{};
  if (pattern == 0) return kZeros;
  thread_local std::vector<uint8_t> period;
  thread_local uint16_t period_for = 0;
  if (period_for != max_packet) {
    period.resize(max_packet);
    for (uint16_t i = 0; i < max_packet; ++i) period[i] = static_cast<uint8_t>(i % 63);
    period_for = max_packet;
  }
  return period;
}

}  // namespace

void GadgetZero::fill_pattern(std::span<uint8_t> data, uint16_t max_packet) const {
  if (options_.pattern > 1) return;  // pattern 2: whatever the buffer holds
  const auto period = pattern_period(options_.pattern, max_packet);
  for (size_t pos = 0; pos < data.size(); pos += period.size())
    std::memcpy(data.data() + pos, period.data(), std::min(period.size(), data.size() - pos));
}

bool GadgetZero::check_pattern(std::span<const uint8_t> data, uint16_t max_packet) const {
  if (options_.pattern > 1) return true;
  const auto period = pattern_period(options_.pattern, max_packet);
  for (size_t pos = 0; pos < data.size(); pos += period.size())
    if (std::memcmp(data.data() + pos, period.data(), std::min(period.size(), data.size() - pos)))
      return false;
  return true;
}

void GadgetZero::source_bulk(Transfer& transfer, const usb::EndpointDescriptor& endpoint) {
  const uint16_t mps = std::max<uint16_t>(endpoint.max_packet(), 1);
  fill_pattern(transfer.buffer(), mps);
  complete_bulk(transfer, transfer.length(), 0);
}

void GadgetZero::sink_bulk(Transfer& transfer, const usb::EndpointDescriptor& endpoint) {
  const uint16_t mps = std::max<uint16_t>(endpoint.max_packet(), 1);
  const bool good = check_pattern(transfer.buffer(), mps);
  // The data was accepted either way; a bad byte halts the endpoint for what follows.
  if (!good) ++sink_mismatches_;
  complete_bulk(transfer, transfer.length(), good ? 0 : endpoint.address);
}

// --- Bus-speed cap ---

GadgetZero::~GadgetZero() {
  *alive_ = false;
}

void GadgetZero::set_pacing(Timer timer, Clock clock) {
  timer_ = std::move(timer);
  clock_ = std::move(clock);
}

void GadgetZero::complete_bulk(Transfer& transfer, size_t actual, uint8_t halt) {
  if (!options_.bulk_rate || !timer_ || !clock_) {
    finish(transfer, Status::kOk, actual);
    if (halt) halt_endpoint(halt);
    return;
  }
  // One link: a transfer starts when the one before it is through.
  const auto now = clock_();
  link_free_ = std::max(link_free_, now) +
               std::chrono::nanoseconds(static_cast<int64_t>(
                   static_cast<double>(actual) * 1e9 / static_cast<double>(options_.bulk_rate)));
  paced_.push_back({&transfer, link_free_, actual, halt});
  arm_pacer();
}

void GadgetZero::arm_pacer() {
  if (paced_.empty() || pacer_armed_) return;
  pacer_armed_ = true;
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(
      std::max(paced_.front().due - clock_(), std::chrono::steady_clock::duration::zero()));
  timer_(wait, [this, alive = alive_] {
    if (!*alive) return;
    pacer_armed_ = false;
    release_due();
  });
}

void GadgetZero::release_due() {
  const auto now = clock_();
  while (!paced_.empty() && paced_.front().due <= now) {
    const Paced p = paced_.front();
    paced_.pop_front();
    finish(*p.transfer, Status::kOk, p.actual);
    if (p.halt_endpoint) halt_endpoint(p.halt_endpoint);
  }
  arm_pacer();
}

size_t GadgetZero::iso_bytes_per_interval(const usb::EndpointDescriptor& endpoint) const {
  if (endpoint.ss_companion) {
    return size_t{endpoint.max_packet()} * ((endpoint.ss_companion->attributes & 3) + 1) *
           (endpoint.ss_companion->max_burst + 1);
  }
  if (speed() == usb::Speed::kHigh)
    return size_t{endpoint.max_packet()} * endpoint.hs_transactions();
  return endpoint.max_packet();
}

void GadgetZero::iso(Transfer& transfer, const usb::EndpointDescriptor& endpoint) {
  if (transfer.iso_packets.empty()) {
    finish(transfer, Status::kInvalid, 0);
    return;
  }
  const size_t per_interval = iso_bytes_per_interval(endpoint);
  const uint16_t mps = std::max<uint16_t>(endpoint.max_packet(), 1);
  const bool in = endpoint.direction() == Direction::kIn;
  auto buffer = transfer.buffer();
  size_t total = 0;
  for (auto& packet : transfer.iso_packets) {
    // Offsets come from the peer: a packet outside the buffer fails alone.
    if (packet.offset > buffer.size() || packet.length > buffer.size() - packet.offset) {
      packet.actual_length = 0;
      packet.status = Status::kInvalid;
      continue;
    }
    auto slice = buffer.subspan(packet.offset, packet.length);
    if (in) {
      const size_t n = std::min(slice.size(), per_interval);
      fill_pattern(slice.first(n), mps);
      packet.actual_length = static_cast<uint32_t>(n);
    } else {
      if (!check_pattern(slice, mps)) ++iso_out_mismatches_;
      packet.actual_length = packet.length;
    }
    packet.status = Status::kOk;
    total += packet.actual_length;
  }
  finish(transfer, Status::kOk, total);
}

// --- Configuration changes reset function state (set_alt / disable in the kernel) ---

void GadgetZero::on_configuration_changed(uint8_t) {
  loopback_reset();
}

void GadgetZero::on_interface_changed(uint8_t, uint8_t) {
  loopback_reset();
}

size_t GadgetZero::on_transfer_aborted(Transfer& transfer) {
  std::erase_if(paced_, [&](const Paced& p) { return p.transfer == &transfer; });
  if (&transfer == out_active_) {
    out_active_ = nullptr;
    return std::exchange(out_offset_, 0);
  }
  if (&transfer == in_active_) {
    in_active_ = nullptr;
    return std::exchange(in_filled_, 0);
  }
  return 0;
}

// --- Loopback ---

void GadgetZero::loopback_reset() {
  chunks_.clear();
  open_.clear();
  out_active_ = nullptr;
  out_offset_ = 0;
  in_active_ = nullptr;
  in_filled_ = 0;
}

void GadgetZero::loopback_pump() {
  // finish() only queues completions while the engine is active, so nothing re-enters here
  // from a completion; the guard covers halts triggered from hooks.
  if (pumping_) return;
  pumping_ = true;
  const auto* out_ep = find_endpoint(kBulkOut);
  const auto* in_ep = find_endpoint(kBulkIn);
  const uint16_t mps = std::max<uint16_t>(
      out_ep ? out_ep->max_packet() : (in_ep ? in_ep->max_packet() : uint16_t{512}), 1);
  bool progress = true;
  while (progress) {
    progress = false;
    if (out_ep && !endpoint_halted(kBulkOut)) progress |= loopback_pump_out(mps);
    if (in_ep && !endpoint_halted(kBulkIn)) progress |= loopback_pump_in(mps);
  }
  pumping_ = false;
}

void GadgetZero::loopback_close_open(bool terminated, uint16_t max_packet) {
  Chunk chunk;
  chunk.data = std::move(open_);
  open_.clear();
  // f_loopback: in_req->zero = actual < length; the UDC sends that ZLP only after a
  // maxpacket-multiple payload (a shorter last packet terminates the transfer by itself).
  chunk.zlp =
      terminated && chunk.data.size() < options_.bulk_buflen && chunk.data.size() % max_packet == 0;
  chunks_.push_back(std::move(chunk));
}

bool GadgetZero::loopback_pump_out(uint16_t max_packet) {
  const auto& outs = pending(kBulkOut);
  if (outs.empty()) return false;
  Transfer* t = outs.front();
  if (out_active_ != t) {
    out_active_ = t;
    out_offset_ = 0;
  }
  bool progress = false;
  const auto data = t->buffer();
  const size_t length = data.size();
  // Fill requests while one is free (the open request is one of the free ones).
  while (out_offset_ < length && chunks_.size() < options_.loopback_qlen) {
    const size_t n = std::min(length - out_offset_, options_.bulk_buflen - open_.size());
    open_.insert(open_.end(), data.begin() + static_cast<ptrdiff_t>(out_offset_),
                 data.begin() + static_cast<ptrdiff_t>(out_offset_ + n));
    out_offset_ += n;
    progress = true;
    if (open_.size() >= options_.bulk_buflen) loopback_close_open(false, max_packet);
  }
  if (out_offset_ < length) return progress;  // waits for the host to read

  // End of the transfer: a short last packet, or a ZLP (zero-length transfer, or URB_ZERO_PACKET
  // after a maxpacket multiple), completes the open request.
  const bool short_end = length % max_packet != 0;
  const bool zlp_end = length == 0 || (t->flags.zero_packet && length % max_packet == 0);
  if (zlp_end || (short_end && !open_.empty())) {
    if (chunks_.size() >= options_.loopback_qlen) return progress;  // no request for it yet
    loopback_close_open(true, max_packet);
  }
  out_active_ = nullptr;
  out_offset_ = 0;
  finish(*t, Status::kOk, length);
  return true;
}

bool GadgetZero::loopback_pump_in(uint16_t max_packet) {
  const auto& ins = pending(kBulkIn);
  if (ins.empty()) return false;
  Transfer* t = ins.front();
  if (in_active_ != t) {
    in_active_ = t;
    in_filled_ = 0;
  }
  auto buffer = t->buffer();
  const size_t length = buffer.size();
  bool done = length == 0;
  bool progress = false;
  Status status = Status::kOk;
  while (!done && !chunks_.empty()) {
    Chunk& c = chunks_.front();
    if (c.position < c.data.size()) {
      const size_t packet = std::min<size_t>(max_packet, c.data.size() - c.position);
      const size_t room = length - in_filled_;
      const size_t n = std::min(packet, room);
      std::memcpy(buffer.data() + in_filled_, c.data.data() + c.position, n);
      in_filled_ += n;
      c.position += packet;
      if (packet > room) {
        status = Status::kBabble;  // the device sent more than the URB had room for
        done = true;
      } else if (packet < max_packet) {
        done = true;  // a short packet ends the transfer
      }
    } else if (c.zlp) {
      c.zlp = false;
      done = true;
    }
    progress = true;
    if (c.position >= c.data.size() && !c.zlp) chunks_.pop_front();  // request back to OUT
    if (in_filled_ == length) done = true;
  }
  if (!done) return progress;  // waits for more data
  const size_t actual = in_filled_;
  in_active_ = nullptr;
  in_filled_ = 0;
  finish(*t, status, actual);
  return true;
}

usb::Result<GadgetZeroOptions> parse_gadget_zero_options(std::string_view text) {
  GadgetZeroOptions o;
  auto bad = [](std::string msg) -> usb::Result<void> {
    return usb::Error::make(usb::Error::Code::kInvalidArgument, "gadget-zero: " + std::move(msg));
  };
  auto r =
      for_each_option(text, "gadget-zero", [&](const std::string& key, const std::string& value) {
        if (key == "speed") {
          if (value == "full")
            o.speed = usb::Speed::kFull;
          else if (value == "high")
            o.speed = usb::Speed::kHigh;
          else if (value == "super")
            o.speed = usb::Speed::kSuper;
          else
            return bad("speed must be full, high or super, not '" + value + "'");
          return usb::Result<void>{};
        }
        const auto number = option_number(value);
        if (!number) return bad(key + " must be a number, not '" + value + "'");
        const uint64_t n = *number;
        struct Field {
          std::string_view name;
          uint64_t lo, hi;
          void (*set)(GadgetZeroOptions&, uint64_t);
        };
        static constexpr Field kFields[] = {
            {"pattern", 0, 2, [](auto& o, uint64_t v) { o.pattern = static_cast<uint8_t>(v); }},
            {"isoc_maxpacket", 0, 1024,
             [](auto& o, uint64_t v) { o.isoc_maxpacket = static_cast<uint16_t>(v); }},
            {"isoc_mult", 0, 2, [](auto& o, uint64_t v) { o.isoc_mult = static_cast<uint8_t>(v); }},
            {"isoc_maxburst", 0, 15,
             [](auto& o, uint64_t v) { o.isoc_maxburst = static_cast<uint8_t>(v); }},
            {"isoc_interval", 1, 16,
             [](auto& o, uint64_t v) { o.isoc_interval = static_cast<uint8_t>(v); }},
            {"bulk_rate", 1000, 10'000'000'000, [](auto& o, uint64_t v) { o.bulk_rate = v; }},
            {"bulk_buflen", 1, 1 << 20,
             [](auto& o, uint64_t v) { o.bulk_buflen = static_cast<uint32_t>(v); }},
            {"loopback_qlen", 1, 1024,
             [](auto& o, uint64_t v) { o.loopback_qlen = static_cast<uint32_t>(v); }},
            {"ctrl_buflen", 0, 0xffff,
             [](auto& o, uint64_t v) { o.ctrl_buflen = static_cast<uint32_t>(v); }},
        };
        const Field* f = nullptr;
        for (const Field& x : kFields)
          if (x.name == key) f = &x;
        if (!f) return bad("unknown option '" + key + "'");
        if (n < f->lo || n > f->hi)
          return bad(key + " must be " + std::to_string(f->lo) + ".." + std::to_string(f->hi));
        f->set(o, n);
        return usb::Result<void>{};
      });
  if (!r) return std::unexpected(r.error());
  return o;
}

}  // namespace devices
