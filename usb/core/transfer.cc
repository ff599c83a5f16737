#include "usb/core/transfer.h"

#include <algorithm>
#include <utility>

#include "usb/core/device.h"

namespace usb {

Transfer::Transfer(uint8_t endpoint, TransferType type, size_t length)
    : endpoint_(endpoint), type_(type), buffer_(length) {}

Transfer::Transfer(uint8_t endpoint, TransferType type, TransferBuffer buffer)
    : endpoint_(endpoint), type_(type), buffer_(std::move(buffer)) {}

TransferBuffer Transfer::take_buffer() {
  if (in_flight()) return {};
  actual_length_ = 0;
  return std::exchange(buffer_, TransferBuffer{});
}

std::unique_ptr<Transfer> Transfer::control(uint8_t endpoint, const SetupPacket& setup) {
  auto t = std::make_unique<Transfer>(endpoint, TransferType::kControl, setup.length);
  t->setup = setup;
  return t;
}

bool Transfer::transition(State to) {
  bool allowed = false;
  switch (state_) {
    case State::kIdle:
      allowed = to == State::kInFlight || to == State::kCompleted;
      break;
    case State::kInFlight:
      allowed = to == State::kCancelling || to == State::kCompleted;
      break;
    case State::kCancelling:
      allowed = to == State::kCompleted;
      break;
    case State::kCompleted:
      allowed = to == State::kIdle;
      break;
  }
  if (allowed) state_ = to;
  return allowed;
}

bool Transfer::begin(Device* device) {
  if (!transition(State::kInFlight)) return false;
  device_ = device;
  return true;
}

bool Transfer::cancel() {
  if (state_ == State::kIdle && device_) {
    // Parked: the holder completes it (kIdle -> kCompleted), so a second cancel() is a no-op.
    Device* holder = std::exchange(device_, nullptr);
    holder->cancel(*this);
    return true;
  }
  if (!transition(State::kCancelling)) return false;
  // The device may complete the transfer from inside cancel(); that is fine: complete() accepts
  // kCancelling, and the completion runs once.
  if (device_) device_->cancel(*this);
  return true;
}

bool Transfer::rearm() {
  if (!transition(State::kIdle)) return false;
  status_ = Status::kOk;
  actual_length_ = 0;
  for (IsoPacket& p : iso_packets) {
    p.actual_length = 0;
    p.status = Status::kOk;
  }
  return true;
}

bool Transfer::complete(Status status, size_t actual_length) {
  if (!transition(State::kCompleted)) return false;
  status_ = status;
  actual_length_ = std::min(actual_length, buffer_.size());
  device_ = nullptr;
  if (completion_) {
    // Move out first: the completion may destroy this transfer.
    std::move_only_function<void()> done = std::move(completion_);
    done();
  }
  return true;
}

void Transfer::withhold_iso_packets(size_t count) {
  count = std::min(count, iso_packets.size());
  for (size_t i = 0; i < count; ++i) {
    IsoPacket& p = iso_packets[i];
    actual_length_ -= std::min<size_t>(p.actual_length, actual_length_);
    p.actual_length = 0;
  }
}

}  // namespace usb
