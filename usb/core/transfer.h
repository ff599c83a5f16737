// usb::Transfer: one USB transfer (an URB), owning its buffer, its state and its one-shot
// completion. Owned by whoever submits it (a container of in-flight transfers); a Device keeps
// a non-owning pointer while it is in flight. Lives on the loop of the Device it is submitted
// to; backends running elsewhere post to that loop before calling complete().
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "usb/core/setup.h"
#include "usb/core/status.h"
#include "usb/core/types.h"

namespace usb {

class Device;

// One isochronous packet of a transfer: a slice of the buffer.
struct IsoPacket {
  uint32_t offset = 0;
  uint32_t length = 0;
  uint32_t actual_length = 0;
  Status status = Status::kOk;
};

// Heap buffer that is not zero-filled on allocation: payloads are read straight into it.
// Its capacity may exceed its size, so pooled buffers can be reused for shorter transfers.
class TransferBuffer {
 public:
  TransferBuffer() = default;
  explicit TransferBuffer(size_t size) : TransferBuffer(size, size) {}
  TransferBuffer(size_t size, size_t capacity)
      : data_(capacity ? std::make_unique_for_overwrite<uint8_t[]>(capacity) : nullptr),
        size_(size <= capacity ? size : capacity),
        capacity_(capacity) {}
  uint8_t* data() { return data_.get(); }
  const uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  // Reuses the storage for `size` bytes (at most the capacity).
  void resize(size_t size) { size_ = size <= capacity_ ? size : capacity_; }
  std::span<uint8_t> span() { return {data_.get(), size_}; }
  std::span<const uint8_t> span() const { return {data_.get(), size_}; }

 private:
  std::unique_ptr<uint8_t[]> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

class Transfer {
 public:
  // Lifecycle (STYLE 1, 2). Every change goes through transition().
  //   kIdle -> kInFlight          submit accepted by a Device
  //   kInFlight -> kCancelling    cancel() while the device still works on it
  //   kInFlight | kCancelling -> kCompleted   complete(): the completion runs exactly once
  //   kIdle -> kCompleted         complete() without submit (rejected before it started)
  //   kCompleted -> kIdle         rearm(): the same object and buffer submitted again
  // A transfer can finish while it is being cancelled: then it completes with whatever the
  // device reported (data and kOk included) — the caller decides what that means.
  enum class State : uint8_t { kIdle, kInFlight, kCancelling, kCompleted };

  struct Flags {
    bool short_not_ok = false;  // a short IN transfer completes with kShortPacket
    bool zero_packet = false;  // an OUT transfer that is a multiple of wMaxPacketSize ends in a ZLP
  };

  using Completion = std::move_only_function<void(Transfer&)>;

  Transfer(uint8_t endpoint, TransferType type, size_t length);
  // Uses `buffer` (e.g. from a BufferPool); the transfer's length is buffer.size().
  Transfer(uint8_t endpoint, TransferType type, TransferBuffer buffer);
  // A control transfer; the data stage length and direction come from the setup packet.
  static std::unique_ptr<Transfer> control(uint8_t endpoint, const SetupPacket& setup);

  Transfer(const Transfer&) = delete;
  Transfer& operator=(const Transfer&) = delete;

  // --- What to transfer ---
  uint8_t endpoint() const { return endpoint_; }  // address; control transfers use 0x00 or 0x80
  TransferType type() const { return type_; }
  Direction direction() const {
    return type_ == TransferType::kControl ? setup.direction() : endpoint_direction(endpoint_);
  }
  std::span<uint8_t> buffer() { return buffer_.span(); }
  std::span<const uint8_t> buffer() const { return buffer_.span(); }
  size_t length() const { return buffer_.size(); }

  SetupPacket setup;                     // control transfers only
  std::vector<IsoPacket> iso_packets{};  // isochronous transfers only
  Flags flags;
  int32_t start_frame = -1;
  uint32_t interval = 0;
  uint64_t trace_id = 0;  // e.g. the USB/IP seqnum; for log lines and trace points

  // --- Outcome (valid once completed) ---
  Status status() const { return status_; }
  size_t actual_length() const { return actual_length_; }
  // The bytes that came back (IN) or went out (OUT).
  std::span<const uint8_t> data() const { return buffer_.span().first(actual_length_); }

  // A layer observing the completion (see add_completion_observer) withholds the data of the
  // first `count` iso packets: the owner sees them empty, as if the device had sent nothing in
  // those intervals, and actual_length shrinks by what they held. (vusbd's camera fan-out: a VM
  // that joins a running stream mid-frame starts at the next frame.)
  void withhold_iso_packets(size_t count);

  // --- Lifecycle ---
  State state() const { return state_; }
  bool in_flight() const { return state_ == State::kInFlight || state_ == State::kCancelling; }
  void set_completion(Completion completion) {
    completion_ = [this, c = std::move(completion)]() mutable { c(*this); };
  }

  // Runs `observer` just before the completion (e.g. a sharing layer counting bytes and latency
  // without owning the transfer). Observers stack; set_completion() drops them.
  void add_completion_observer(Completion observer) {
    completion_ = [this, o = std::move(observer), next = std::move(completion_)]() mutable {
      o(*this);
      if (next) next();
    };
  }

  // A layer that holds a transfer before submitting it anywhere (vusbd's SharedDevice queueing it
  // behind another VM's control transaction) parks it: cancel() then reaches the holder, which
  // completes it. unpark() before submitting it to a device.
  void park(Device* holder) { device_ = holder; }
  void unpark() { device_ = nullptr; }

  // Runs `after` once the completion has returned. It must not touch the transfer: the
  // completion may have destroyed it. (A serial queue starts its next item here.)
  void add_completion_epilogue(std::move_only_function<void()> after) {
    completion_ = [a = std::move(after), next = std::move(completion_)]() mutable {
      if (next) next();
      a();
    };
  }

  // Called by a Device when it accepts the transfer. Returns false unless the state was kIdle.
  bool begin(Device* device);
  // Idempotent. Asks the device to stop the transfer; the completion still runs exactly once,
  // later (or already did). Returns true only for the call that started the cancellation.
  bool cancel();
  // Ends the transfer and runs the completion, exactly once. Returns false (and does nothing)
  // if the transfer had already completed. Clamps actual_length to the buffer.
  bool complete(Status status, size_t actual_length);

  // Makes a completed transfer submittable again, keeping buffer, setup and iso layout and
  // clearing the outcome (iso packets' actual lengths and statuses too). Returns false unless
  // the transfer had completed. The completion must be set again.
  bool rearm();
  // Hands the buffer back (for a pool) once the transfer is not in flight; the transfer is
  // empty afterwards.
  TransferBuffer take_buffer();

  Device* device() const { return device_; }

 private:
  bool transition(State to);

  uint8_t endpoint_;
  TransferType type_;
  TransferBuffer buffer_;
  State state_ = State::kIdle;
  Status status_ = Status::kOk;
  size_t actual_length_ = 0;
  Device* device_ = nullptr;  // non-owning; set while in flight
  // Bound to *this by set_completion() (libstdc++ 12 cannot hold a move_only_function taking
  // Transfer& as a member of the still-incomplete Transfer; Transfer never moves, so `this` is
  // stable).
  std::move_only_function<void()> completion_;
};

}  // namespace usb
