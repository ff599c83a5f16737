#include "devices/emulated/emulated_device.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "usb/core/byte_order.h"

namespace devices {

usb::DescriptorSet usb2_descriptor_set(uint16_t vendor_id, uint16_t product_id,
                                       std::string manufacturer, std::string product,
                                       std::string serial) {
  usb::DescriptorSet set;
  set.device.bcd_usb = 0x0200;
  set.device.max_packet_size0 = 64;
  set.device.vendor_id = vendor_id;
  set.device.product_id = product_id;
  set.device.bcd_device = 0x0100;
  set.device.manufacturer_index = 1;
  set.device.product_index = 2;
  set.device.serial_index = 3;
  set.strings = {std::move(manufacturer), std::move(product), std::move(serial)};
  return set;
}

using usb::Direction;
using usb::Recipient;
using usb::RequestType;
using usb::SetupPacket;
using usb::Status;
using usb::Transfer;
using usb::TransferType;

namespace {

// SuperSpeed device feature selectors (USB 3.2 table 9-7) and the interface one.
constexpr uint16_t kFeatureU1Enable = 48;
constexpr uint16_t kFeatureU2Enable = 49;
constexpr uint16_t kFeatureLtmEnable = 50;
constexpr uint16_t kFeatureFunctionSuspend = 0;

// GET_STATUS device bits (USB 2.0 figure 9-4, USB 3.2 figure 9-4).
constexpr uint16_t kStatusSelfPowered = 1 << 0;
constexpr uint16_t kStatusRemoteWakeup = 1 << 1;

const usb::DescriptorSet& empty_set() {
  static const usb::DescriptorSet kEmpty{};
  return kEmpty;
}

bool is_super(usb::Speed s) {
  return s == usb::Speed::kSuper || s == usb::Speed::kSuperPlus;
}

// Full-speed tables for a high-speed device that did not provide them (answers
// DEVICE_QUALIFIER / OTHER_SPEED_CONFIGURATION): same layout, full-speed packet sizes and
// intervals (USB 2.0 5.7.3, 5.8.3, 9.6.6).
usb::DescriptorSet derive_full_speed(const usb::DescriptorSet& hs) {
  usb::DescriptorSet fs = hs;
  fs.device.max_packet_size0 = std::min<uint8_t>(fs.device.max_packet_size0, 64);
  fs.bos.reset();
  for (auto& config : fs.configurations) {
    for (auto& intf : config.interfaces) {
      for (auto& ep : intf.endpoints) {
        ep.ss_companion.reset();
        const uint16_t mps = ep.max_packet();
        switch (ep.type()) {
          case TransferType::kBulk:
            ep.max_packet_size = std::min<uint16_t>(mps, 64);
            break;
          case TransferType::kInterrupt: {
            ep.max_packet_size = std::min<uint16_t>(mps, 64);
            const unsigned exp = std::clamp<unsigned>(ep.interval, 1, 16) - 1;
            ep.interval = static_cast<uint8_t>(std::clamp<unsigned>((1u << exp) / 8, 1, 255));
            break;
          }
          case TransferType::kIsochronous:
            ep.max_packet_size = std::min<uint16_t>(mps, 1023);
            ep.interval = static_cast<uint8_t>(std::max(1, ep.interval - 3));
            break;
          case TransferType::kControl:
            ep.max_packet_size = std::min<uint16_t>(mps, 64);
            break;
        }
      }
    }
  }
  return fs;
}

// Copies a descriptor into the data stage: a short wLength gets a prefix, a long one the whole.
size_t copy_reply(std::span<const uint8_t> src, std::span<uint8_t> data) {
  const size_t n = std::min(src.size(), data.size());
  if (n) std::memcpy(data.data(), src.data(), n);
  return n;
}

size_t requested_length(const Transfer& t) {
  if (t.type() == TransferType::kControl) return std::min<size_t>(t.setup.length, t.length());
  return t.length();
}

}  // namespace

class EmulatedDevice::Scope {
 public:
  explicit Scope(EmulatedDevice& d) : d_(d) {
    d_.loop_.check();
    ++d_.depth_;
  }
  ~Scope() {
    if (--d_.depth_ == 0) d_.drain_completions();
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  EmulatedDevice& d_;
};

EmulatedDevice::EmulatedDevice(SpeedDescriptors descriptors, usb::Speed speed,
                               usb::DeviceLocation location)
    : sets_(std::move(descriptors)), speed_(speed), location_(std::move(location)) {
  // The served tables follow the speed; fall back to whatever exists.
  const usb::DescriptorSet* fs = sets_.full_speed ? &*sets_.full_speed : nullptr;
  const usb::DescriptorSet* hs = sets_.high_speed ? &*sets_.high_speed : nullptr;
  const usb::DescriptorSet* ss = sets_.super_speed ? &*sets_.super_speed : nullptr;
  if (is_super(speed_)) {
    active_set_ = ss ? ss : hs ? hs : fs;
  } else if (speed_ == usb::Speed::kHigh) {
    active_set_ = hs ? hs : ss ? ss : fs;
  } else {
    active_set_ = fs ? fs : hs ? hs : ss;
  }
  if (!active_set_) active_set_ = &empty_set();

  // Other-speed tables (USB 2.0 9.6.2, 9.6.4): only a high-speed capable device running at full
  // or high speed has them.
  if (speed_ == usb::Speed::kHigh && active_set_ == hs) {
    other_speed_set_ = fs ? *fs : derive_full_speed(*hs);
  } else if (speed_ == usb::Speed::kFull && active_set_ == fs && hs) {
    other_speed_set_ = *hs;
  }
  build_blobs();
}

EmulatedDevice::~EmulatedDevice() {
  // Virtual hooks resolve to this class here; subclasses are already gone.
  Scope scope(*this);
  connected_ = false;
  abort_all(Status::kNoDevice);
}

void EmulatedDevice::build_blobs() {
  const usb::DescriptorSet& set = *active_set_;
  device_blob_ = set.device.build();
  config_blobs_.clear();
  for (const auto& c : set.configurations) config_blobs_.push_back(c.build());

  other_speed_blobs_.clear();
  qualifier_blob_.clear();
  if (other_speed_set_) {
    for (auto c : other_speed_set_->configurations) {
      c.descriptor_type = usb::desc::kOtherSpeedConfiguration;
      other_speed_blobs_.push_back(c.build());
    }
    // Device qualifier, USB 2.0 9.6.2 table 9-9.
    const auto& other = other_speed_set_->device;
    qualifier_blob_.resize(usb::desc::kQualifierSize);
    qualifier_blob_[0] = static_cast<uint8_t>(usb::desc::kQualifierSize);
    qualifier_blob_[1] = usb::desc::kDeviceQualifier;
    usb::store_le16(&qualifier_blob_[2], set.device.bcd_usb);
    qualifier_blob_[4] = other.device_class;
    qualifier_blob_[5] = other.device_subclass;
    qualifier_blob_[6] = other.device_protocol;
    qualifier_blob_[7] = other.max_packet_size0;
    qualifier_blob_[8] =
        static_cast<uint8_t>(std::min<size_t>(other_speed_set_->configurations.size(), 255));
    qualifier_blob_[9] = 0;
  }

  bos_blob_.clear();
  if (set.device.bcd_usb >= 0x0201 && set.bos) bos_blob_ = set.bos->build();

  string_blobs_.clear();
  if (!set.strings.empty()) {
    static constexpr std::array<uint16_t, 1> kLangIds = {0x0409};  // English (US)
    string_blobs_.push_back(usb::build_language_descriptor(kLangIds));
    for (const auto& s : set.strings) string_blobs_.push_back(usb::build_string_descriptor(s));
  }
}

// --- usb::Device ---

uint8_t EmulatedDevice::alternate_setting(uint8_t interface) const {
  loop_.check();
  auto it = alternates_.find(interface);
  return it == alternates_.end() ? 0 : it->second;
}

void EmulatedDevice::submit(Transfer& transfer) {
  Scope scope(*this);
  // A transfer that is already in flight or done is not ours to touch.
  if (transfer.state() != Transfer::State::kIdle) return;
  if (!connected_) {
    enqueue_completion(transfer, Status::kNoDevice, 0);
    return;
  }
  const uint8_t address = transfer.endpoint();
  if (usb::endpoint_number(address) == 0) {
    if (transfer.type() != TransferType::kControl) {
      enqueue_completion(transfer, Status::kInvalid, 0);
      return;
    }
    transfer.begin(this);
    handle_control(transfer);
    return;
  }
  auto it = endpoints_.find(address);
  if (it == endpoints_.end()) {
    enqueue_completion(transfer, Status::kStall, 0);
    return;
  }
  EndpointState& ep = it->second;
  if (ep.descriptor->type() != transfer.type()) {
    enqueue_completion(transfer, Status::kInvalid, 0);
    return;
  }
  transfer.begin(this);
  if (ep.halted) {
    enqueue_completion(transfer, Status::kStall, 0);
    return;
  }
  ep.pending.push_back(&transfer);
  on_transfer(transfer, *ep.descriptor);
}

void EmulatedDevice::cancel(Transfer& transfer) {
  Scope scope(*this);
  for (auto& [address, ep] : endpoints_) {
    auto it = std::find(ep.pending.begin(), ep.pending.end(), &transfer);
    if (it == ep.pending.end()) continue;
    ep.pending.erase(it);
    const size_t actual = on_transfer_aborted(transfer);
    enqueue_completion(transfer, Status::kCancelled, actual);
    return;
  }
  // Not pending: it already completed or its completion is queued; it finishes with its real
  // outcome (Transfer allows that race).
}

void EmulatedDevice::reset(usb::StatusCallback done) {
  Scope scope(*this);
  if (!connected_) {
    done(Status::kNoDevice);
    return;
  }
  abort_all(Status::kNoDevice);
  endpoints_.clear();
  alternates_.clear();
  address_ = 0;
  configuration_ = 0;
  remote_wakeup_ = false;
  ss_device_features_ = 0;
  on_configuration_changed(0);
  done(Status::kOk);
}

void EmulatedDevice::set_configuration(uint8_t value, usb::StatusCallback done) {
  Scope scope(*this);
  done(connected_ ? apply_configuration(value) : Status::kNoDevice);
}

void EmulatedDevice::set_interface(uint8_t interface, uint8_t alternate, usb::StatusCallback done) {
  Scope scope(*this);
  done(connected_ ? apply_interface(interface, alternate) : Status::kNoDevice);
}

void EmulatedDevice::clear_halt(uint8_t endpoint, usb::StatusCallback done) {
  Scope scope(*this);
  done(connected_ ? apply_halt(endpoint, false) : Status::kNoDevice);
}

void EmulatedDevice::set_halt(uint8_t endpoint, usb::StatusCallback done) {
  Scope scope(*this);
  done(connected_ ? apply_halt(endpoint, true) : Status::kNoDevice);
}

void EmulatedDevice::disconnect() {
  Scope scope(*this);
  if (!connected_) return;
  connected_ = false;
  abort_all(Status::kNoDevice);
}

// --- Observable state ---

bool EmulatedDevice::endpoint_halted(uint8_t address) const {
  loop_.check();
  auto it = endpoints_.find(address);
  return it != endpoints_.end() && it->second.halted;
}

uint32_t EmulatedDevice::toggle_resets(uint8_t address) const {
  loop_.check();
  auto it = toggle_resets_.find(address);
  return it == toggle_resets_.end() ? 0 : it->second;
}

size_t EmulatedDevice::pending_count() const {
  loop_.check();
  size_t n = 0;
  for (const auto& [address, ep] : endpoints_) n += ep.pending.size();
  return n;
}

// --- Default hooks ---

EmulatedDevice::ControlReply EmulatedDevice::on_control_request(const SetupPacket&,
                                                                std::span<uint8_t>) {
  return stall();
}

void EmulatedDevice::on_transfer(Transfer& transfer, const usb::EndpointDescriptor&) {
  finish(transfer, Status::kStall, 0);
}

size_t EmulatedDevice::on_transfer_aborted(Transfer&) {
  return 0;
}
void EmulatedDevice::on_configuration_changed(uint8_t) {}
void EmulatedDevice::on_interface_changed(uint8_t, uint8_t) {}
void EmulatedDevice::on_toggle_reset(uint8_t) {}

// --- Helpers for subclasses ---

void EmulatedDevice::finish(Transfer& transfer, Status status, size_t actual) {
  Scope scope(*this);
  auto it = endpoints_.find(transfer.endpoint());
  if (it != endpoints_.end()) std::erase(it->second.pending, &transfer);
  enqueue_completion(transfer, status, actual);
}

void EmulatedDevice::halt_endpoint(uint8_t address) {
  Scope scope(*this);
  if (usb::endpoint_number(address) == 0) return;
  apply_halt(address, true);
}

const usb::EndpointDescriptor* EmulatedDevice::find_endpoint(uint8_t address) const {
  auto it = endpoints_.find(address);
  return it == endpoints_.end() ? nullptr : it->second.descriptor;
}

const std::deque<Transfer*>& EmulatedDevice::pending(uint8_t address) const {
  static const std::deque<Transfer*> kNone;
  auto it = endpoints_.find(address);
  return it == endpoints_.end() ? kNone : it->second.pending;
}

const usb::ConfigurationDescriptor* EmulatedDevice::active_config() const {
  return configuration_ ? active_set_->find_configuration(configuration_) : nullptr;
}

// --- Endpoint 0 ---

void EmulatedDevice::handle_control(Transfer& transfer) {
  const SetupPacket& setup = transfer.setup;
  std::span<uint8_t> data = transfer.buffer().first(requested_length(transfer));
  // A standard request the engine does not know goes to the subclass too (class descriptors).
  ControlReply reply = setup.type() == RequestType::kStandard ? standard_request(setup, data)
                                                              : on_control_request(setup, data);
  const size_t actual = reply.status == Status::kOk ? std::min(reply.actual, data.size()) : 0;
  enqueue_completion(transfer, reply.status, actual);
}

EmulatedDevice::ControlReply EmulatedDevice::standard_request(const SetupPacket& setup,
                                                              std::span<uint8_t> data) {
  const Recipient recipient = setup.recipient();
  const bool in = setup.direction() == Direction::kIn;
  const bool to_device = recipient == Recipient::kDevice;
  switch (setup.request) {
    case usb::request::kGetStatus:
      if (!in) return stall();
      return get_status(setup, data);
    case usb::request::kClearFeature:
    case usb::request::kSetFeature:
      if (in) return stall();
      return feature(setup, setup.request == usb::request::kSetFeature);
    case usb::request::kSetAddress:
      // USB 2.0 9.4.6: addresses 1..127; 0 returns to the default state.
      if (in || !to_device || setup.value > 127) return stall();
      address_ = static_cast<uint8_t>(setup.value);
      return ok();
    case usb::request::kGetDescriptor:
      if (!in) return stall();
      if (!to_device) return on_control_request(setup, data);  // class descriptors
      return get_descriptor(setup, data);
    case usb::request::kGetConfiguration:
      if (!in || !to_device || data.empty()) return stall();
      data[0] = configuration_;
      return ok(1);
    case usb::request::kSetConfiguration:
      if (in || !to_device || (setup.value >> 8) != 0) return stall();
      return apply_configuration(static_cast<uint8_t>(setup.value)) == Status::kOk ? ok() : stall();
    case usb::request::kGetInterface: {
      if (!in || recipient != Recipient::kInterface || data.empty()) return stall();
      const auto* config = active_config();
      const uint8_t interface = static_cast<uint8_t>(setup.index);
      if (!config || setup.index > 0xff || config->alternate_count(interface) == 0) return stall();
      data[0] = alternate_setting(interface);
      return ok(1);
    }
    case usb::request::kSetInterface:
      if (in || recipient != Recipient::kInterface || setup.index > 0xff || setup.value > 0xff) {
        return stall();
      }
      return apply_interface(static_cast<uint8_t>(setup.index),
                             static_cast<uint8_t>(setup.value)) == Status::kOk
                 ? ok()
                 : stall();
    case usb::request::kSetSel:         // USB 3.2 9.4.12: six bytes of exit latencies, accepted
    case usb::request::kSetIsochDelay:  // USB 3.2 9.4.11
      if (in || !to_device || !is_super(speed_)) return stall();
      return ok(data.size());
    default:
      // SET_DESCRIPTOR, SYNCH_FRAME and anything unknown: the subclass may know it.
      return on_control_request(setup, data);
  }
}

EmulatedDevice::ControlReply EmulatedDevice::get_descriptor(const SetupPacket& setup,
                                                            std::span<uint8_t> data) {
  const uint8_t type = static_cast<uint8_t>(setup.value >> 8);
  const uint8_t index = static_cast<uint8_t>(setup.value);
  const std::vector<uint8_t>* blob = nullptr;
  switch (type) {
    case usb::desc::kDevice:
      blob = &device_blob_;
      break;
    case usb::desc::kConfiguration:
      if (index < config_blobs_.size()) blob = &config_blobs_[index];
      break;
    case usb::desc::kString:
      if (index < string_blobs_.size()) blob = &string_blobs_[index];
      break;
    case usb::desc::kDeviceQualifier:
      if (!qualifier_blob_.empty()) blob = &qualifier_blob_;
      break;
    case usb::desc::kOtherSpeedConfiguration:
      if (index < other_speed_blobs_.size()) blob = &other_speed_blobs_[index];
      break;
    case usb::desc::kBos:
      if (!bos_blob_.empty()) blob = &bos_blob_;
      break;
    default:
      // Interface and endpoint descriptors are not directly gettable (USB 2.0 9.4.3); other
      // types (e.g. 0x42) may be the subclass's; the default answer is a stall.
      if (type == usb::desc::kInterface || type == usb::desc::kEndpoint) return stall();
      return on_control_request(setup, data);
  }
  if (!blob) return stall();
  return ok(copy_reply(*blob, data));
}

EmulatedDevice::ControlReply EmulatedDevice::get_status(const SetupPacket& setup,
                                                        std::span<uint8_t> data) {
  uint16_t status = 0;
  switch (setup.recipient()) {
    case Recipient::kDevice: {
      const auto* config = active_config();
      if (!config && !active_set_->configurations.empty()) {
        config = &active_set_->configurations.front();
      }
      if (config && config->self_powered()) status |= kStatusSelfPowered;
      if (remote_wakeup_) status |= kStatusRemoteWakeup;
      status |= ss_device_features_;
      break;
    }
    case Recipient::kInterface: {
      const auto* config = active_config();
      if (!config || setup.index > 0xff ||
          config->alternate_count(static_cast<uint8_t>(setup.index)) == 0) {
        return stall();
      }
      break;  // USB 3.2 function remote wakeup bits stay 0
    }
    case Recipient::kEndpoint: {
      const uint8_t address = static_cast<uint8_t>(setup.index);
      if (setup.index > 0xff) return stall();
      if (usb::endpoint_number(address) != 0) {
        auto it = endpoints_.find(address);
        if (it == endpoints_.end()) return stall();
        if (it->second.halted) status = 1;
      }
      break;
    }
    default:
      return stall();
  }
  std::array<uint8_t, 2> bytes{};
  usb::store_le16(bytes.data(), status);
  return ok(copy_reply(bytes, data));
}

EmulatedDevice::ControlReply EmulatedDevice::feature(const SetupPacket& setup, bool set) {
  switch (setup.recipient()) {
    case Recipient::kDevice:
      if (setup.value == usb::feature::kDeviceRemoteWakeup) {
        remote_wakeup_ = set;
        return ok();
      }
      if (is_super(speed_) && configuration_ != 0 &&
          (setup.value == kFeatureU1Enable || setup.value == kFeatureU2Enable ||
           setup.value == kFeatureLtmEnable)) {
        const uint16_t bit = static_cast<uint16_t>(1u << (setup.value - kFeatureU1Enable + 2));
        ss_device_features_ = set ? (ss_device_features_ | bit) : (ss_device_features_ & ~bit);
        return ok();
      }
      return stall();  // TEST_MODE cannot be emulated; unknown selectors stall
    case Recipient::kInterface: {
      const auto* config = active_config();
      const uint8_t interface = static_cast<uint8_t>(setup.index);
      if (is_super(speed_) && setup.value == kFeatureFunctionSuspend && config &&
          config->alternate_count(interface) != 0) {
        return ok();
      }
      return stall();
    }
    case Recipient::kEndpoint:
      if (setup.value != usb::feature::kEndpointHalt || setup.index > 0xff) return stall();
      return apply_halt(static_cast<uint8_t>(setup.index), set) == Status::kOk ? ok() : stall();
    default:
      return stall();
  }
}

// --- State changes ---

Status EmulatedDevice::apply_configuration(uint8_t value) {
  const usb::ConfigurationDescriptor* config =
      value ? active_set_->find_configuration(value) : nullptr;
  if (value != 0 && !config) return Status::kStall;

  abort_all(Status::kNoDevice);
  endpoints_.clear();
  alternates_.clear();
  configuration_ = value;
  if (config) {
    for (const auto& intf : config->interfaces) {
      if (intf.alternate != 0 || alternates_.contains(intf.number)) continue;
      alternates_[intf.number] = 0;
      add_interface_endpoints(intf);
    }
  }
  on_configuration_changed(value);
  return Status::kOk;
}

Status EmulatedDevice::apply_interface(uint8_t interface, uint8_t alternate) {
  const auto* config = active_config();
  const usb::InterfaceDescriptor* intf = config ? config->find(interface, alternate) : nullptr;
  if (!intf) return Status::kStall;

  for (auto it = endpoints_.begin(); it != endpoints_.end();) {
    if (it->second.interface != interface) {
      ++it;
      continue;
    }
    abort_pending(it->second, Status::kNoDevice);
    it = endpoints_.erase(it);
  }
  alternates_[interface] = alternate;
  add_interface_endpoints(*intf);
  on_interface_changed(interface, alternate);
  return Status::kOk;
}

Status EmulatedDevice::apply_halt(uint8_t address, bool halt) {
  if (usb::endpoint_number(address) == 0) return Status::kOk;  // ep0: accepted, no state
  auto it = endpoints_.find(address);
  if (it == endpoints_.end()) return Status::kStall;
  EndpointState& ep = it->second;
  if (halt) {
    ep.halted = true;
    abort_pending(ep, Status::kStall);
  } else {
    // USB 2.0 9.4.5: clearing halt always resets the toggle, halted or not.
    ep.halted = false;
    reset_toggle(address);
  }
  return Status::kOk;
}

void EmulatedDevice::add_interface_endpoints(const usb::InterfaceDescriptor& interface) {
  for (const auto& ep : interface.endpoints) {
    if (usb::endpoint_number(ep.address) == 0) continue;
    EndpointState& state = endpoints_[ep.address];
    state.descriptor = &ep;
    state.interface = interface.number;
    state.halted = false;
    reset_toggle(ep.address);
  }
}

void EmulatedDevice::abort_pending(EndpointState& endpoint, Status status) {
  while (!endpoint.pending.empty()) {
    Transfer* t = endpoint.pending.front();
    endpoint.pending.pop_front();
    const size_t actual = on_transfer_aborted(*t);
    enqueue_completion(*t, status, actual);
  }
}

void EmulatedDevice::abort_all(Status status) {
  for (auto& [address, ep] : endpoints_) abort_pending(ep, status);
}

void EmulatedDevice::reset_toggle(uint8_t address) {
  ++toggle_resets_[address];
  on_toggle_reset(address);
}

// --- Completion trampoline ---

void EmulatedDevice::enqueue_completion(Transfer& transfer, Status status, size_t actual) {
  // short_not_ok (URB_SHORT_NOT_OK) applies to IN transfers other than isochronous ones.
  if (status == Status::kOk && transfer.direction() == Direction::kIn &&
      transfer.type() != TransferType::kIsochronous && transfer.flags.short_not_ok &&
      actual < requested_length(transfer)) {
    status = Status::kShortPacket;
  }
  completions_.push_back({&transfer, status, actual});
}

void EmulatedDevice::drain_completions() {
  if (draining_) return;
  draining_ = true;
  while (!completions_.empty()) {
    Completion c = completions_.front();
    completions_.pop_front();
    // The completion may submit again; that submit only queues (draining_ is set) and this loop
    // picks it up, so the stack never grows with the number of resubmissions.
    c.transfer->complete(c.status, c.actual);
  }
  draining_ = false;
}

}  // namespace devices
