#include "usb/core/transfer.h"

#include <gtest/gtest.h>

#include "usb/core/fake_device.h"

namespace usb {
namespace {

using testing::FakeDevice;

DescriptorSet one_config() {
  DescriptorSet d;
  d.device.vendor_id = 0x1234;
  d.configurations.push_back(ConfigurationDescriptor{});
  return d;
}

struct Recorder {
  int calls = 0;
  Status status = Status::kIoError;
  size_t actual = 0;
  Transfer::Completion fn() {
    return [this](Transfer& t) {
      ++calls;
      status = t.status();
      actual = t.actual_length();
    };
  }
};

TEST(TransferTest, CompletesExactlyOnce) {
  FakeDevice dev(one_config());
  Transfer t(0x81, TransferType::kBulk, 512);
  Recorder r;
  t.set_completion(r.fn());
  dev.submit(t);
  EXPECT_EQ(t.state(), Transfer::State::kInFlight);
  EXPECT_TRUE(t.complete(Status::kOk, 100));
  EXPECT_FALSE(t.complete(Status::kStall, 5));
  EXPECT_EQ(r.calls, 1);
  EXPECT_EQ(r.status, Status::kOk);
  EXPECT_EQ(r.actual, 100u);
  EXPECT_EQ(t.state(), Transfer::State::kCompleted);
}

TEST(TransferTest, CompletionObserversRunFirstAndOnce) {
  FakeDevice dev(one_config());
  Transfer t(0x81, TransferType::kBulk, 16);
  std::vector<std::string> order;
  t.set_completion([&](Transfer&) { order.push_back("owner"); });
  t.add_completion_observer([&](Transfer& x) { order.push_back("stats " + std::to_string(x.actual_length())); });
  dev.submit(t);
  dev.complete_next(Status::kOk, 8);
  EXPECT_FALSE(t.complete(Status::kOk, 8));
  EXPECT_EQ(order, (std::vector<std::string>{"stats 8", "owner"}));
}

TEST(TransferTest, ActualLengthClampedToBuffer) {
  Transfer t(0x81, TransferType::kBulk, 8);
  t.complete(Status::kOk, 1000);
  EXPECT_EQ(t.actual_length(), 8u);
}

TEST(TransferTest, DirectionFromEndpointOrSetup) {
  Transfer in(0x82, TransferType::kBulk, 1);
  Transfer out(0x02, TransferType::kBulk, 1);
  EXPECT_EQ(in.direction(), Direction::kIn);
  EXPECT_EQ(out.direction(), Direction::kOut);
  SetupPacket get{0x80, request::kGetDescriptor, 0x0100, 0, 18};
  auto ctrl = Transfer::control(0, get);
  EXPECT_EQ(ctrl->direction(), Direction::kIn);
  EXPECT_EQ(ctrl->length(), 18u);
}

TEST(TransferTest, CancelIsIdempotentAndCompletesOnce) {
  FakeDevice dev(one_config());
  Transfer t(0x81, TransferType::kBulk, 64);
  Recorder r;
  t.set_completion(r.fn());
  dev.submit(t);
  EXPECT_TRUE(t.cancel());
  EXPECT_FALSE(t.cancel());
  EXPECT_FALSE(t.cancel());
  EXPECT_EQ(dev.cancel_requests.size(), 1u) << "device asked once";
  EXPECT_EQ(r.calls, 1);
  EXPECT_EQ(r.status, Status::kCancelled);
}

TEST(TransferTest, CompletionWinsRaceWhileCancelling) {
  // The device finished the transfer just as the cancel arrived: the real outcome is kept.
  FakeDevice dev(one_config());
  dev.complete_on_cancel = false;
  Transfer t(0x81, TransferType::kBulk, 64);
  Recorder r;
  t.set_completion(r.fn());
  dev.submit(t);
  EXPECT_TRUE(t.cancel());
  EXPECT_EQ(t.state(), Transfer::State::kCancelling);
  EXPECT_EQ(r.calls, 0);
  dev.complete_next(Status::kOk, 64);
  EXPECT_EQ(r.calls, 1);
  EXPECT_EQ(r.status, Status::kOk);
  EXPECT_EQ(r.actual, 64u);
  // A late cancel acknowledgement from the device changes nothing.
  EXPECT_FALSE(t.complete(Status::kCancelled, 0));
  EXPECT_EQ(r.calls, 1);
}

TEST(TransferTest, CancelAfterCompletionDoesNothing) {
  FakeDevice dev(one_config());
  Transfer t(0x81, TransferType::kBulk, 64);
  Recorder r;
  t.set_completion(r.fn());
  dev.submit(t);
  dev.complete_next();
  EXPECT_FALSE(t.cancel());
  EXPECT_TRUE(dev.cancel_requests.empty());
  EXPECT_EQ(r.calls, 1);
}

TEST(TransferTest, RearmAllowsResubmittingTheSameObject) {
  FakeDevice dev(one_config());
  Transfer t(0x81, TransferType::kIsochronous, 64);
  t.iso_packets.push_back({0, 64, 64, Status::kLate});
  EXPECT_FALSE(t.rearm()) << "not completed yet";
  Recorder r;
  t.set_completion(r.fn());
  dev.submit(t);
  dev.complete_next(Status::kOk, 64);
  EXPECT_TRUE(t.rearm());
  EXPECT_EQ(t.state(), Transfer::State::kIdle);
  EXPECT_EQ(t.actual_length(), 0u);
  EXPECT_EQ(t.iso_packets[0].actual_length, 0u);
  EXPECT_EQ(t.iso_packets[0].status, Status::kOk);
  t.set_completion(r.fn());
  dev.submit(t);
  dev.complete_next(Status::kOk, 32);
  EXPECT_EQ(r.calls, 2);
  EXPECT_EQ(r.actual, 32u);
}

TEST(TransferTest, ParkedTransferIsCancelledByItsHolder) {
  FakeDevice holder(one_config());
  Transfer t(0x81, TransferType::kBulk, 8);
  Recorder r;
  t.set_completion(r.fn());
  t.park(&holder);
  holder.complete_on_cancel = false;
  EXPECT_TRUE(t.cancel());
  ASSERT_EQ(holder.cancel_requests.size(), 1u);
  t.complete(Status::kCancelled, 0);  // what the holder does
  EXPECT_FALSE(t.cancel());
  EXPECT_EQ(r.calls, 1);
  EXPECT_EQ(r.status, Status::kCancelled);
}

TEST(TransferTest, CancelBeforeSubmitIsRefused) {
  Transfer t(0x81, TransferType::kBulk, 64);
  EXPECT_FALSE(t.cancel());
  EXPECT_EQ(t.state(), Transfer::State::kIdle);
}

TEST(TransferTest, SubmitTwiceIsRefused) {
  FakeDevice dev(one_config());
  Transfer t(0x81, TransferType::kBulk, 64);
  EXPECT_TRUE(t.begin(&dev));
  EXPECT_FALSE(t.begin(&dev));
}

TEST(TransferTest, CompletionMayDestroyTheTransfer) {
  FakeDevice dev(one_config());
  auto t = std::make_unique<Transfer>(0x81, TransferType::kBulk, 64);
  bool ran = false;
  t->set_completion([&](Transfer&) {
    ran = true;
    t.reset();
  });
  dev.submit(*t);
  dev.complete_next();
  EXPECT_TRUE(ran);
  EXPECT_EQ(t, nullptr);
}

TEST(TransferTest, UnplugCompletesPendingWithNoDevice) {
  FakeDevice dev(one_config());
  Transfer a(0x81, TransferType::kBulk, 64), b(0x02, TransferType::kBulk, 64);
  Recorder ra, rb;
  a.set_completion(ra.fn());
  b.set_completion(rb.fn());
  dev.submit(a);
  dev.submit(b);
  dev.unplug();
  EXPECT_EQ(ra.status, Status::kNoDevice);
  EXPECT_EQ(rb.status, Status::kNoDevice);
  Transfer c(0x81, TransferType::kBulk, 1);
  Recorder rc;
  c.set_completion(rc.fn());
  dev.submit(c);
  EXPECT_EQ(rc.status, Status::kNoDevice);
}

}  // namespace
}  // namespace usb

#include "usb/core/buffer_pool.h"

namespace usb {
namespace {

TEST(BufferPoolTest, ReusesBuffersByClassAndBoundsTheCache) {
  BufferPool pool(256 * 1024);
  TransferBuffer a = pool.get(65536);
  EXPECT_EQ(a.size(), 65536u);
  EXPECT_EQ(a.capacity(), 65536u);
  const uint8_t* storage = a.data();
  pool.put(std::move(a));
  EXPECT_EQ(pool.cached_bytes(), 65536u);
  TransferBuffer b = pool.get(40000);  // same class (32 KiB < n <= 64 KiB)
  EXPECT_EQ(b.data(), storage);
  EXPECT_EQ(b.size(), 40000u);
  EXPECT_EQ(pool.cached_bytes(), 0u);
  TransferBuffer small = pool.get(10);
  EXPECT_EQ(small.capacity(), 4096u);
  TransferBuffer zero = pool.get(0);
  EXPECT_EQ(zero.size(), 0u);
  // The cache keeps at most 256 KiB.
  for (int i = 0; i < 8; ++i) pool.put(TransferBuffer(65536));
  EXPECT_EQ(pool.cached_bytes(), 256u * 1024);
  // Odd capacities are not pooled.
  pool.put(TransferBuffer(1000));
  EXPECT_EQ(pool.cached_bytes(), 256u * 1024);
}

TEST(BufferPoolTest, TransferGivesItsBufferBackOnlyWhenNotInFlight) {
  testing::FakeDevice dev(one_config());
  BufferPool pool;
  Transfer t(0x81, TransferType::kBulk, pool.get(512));
  EXPECT_EQ(t.length(), 512u);
  dev.submit(t);
  EXPECT_EQ(t.take_buffer().capacity(), 0u) << "in flight: nothing to take";
  dev.complete_next();
  TransferBuffer b = t.take_buffer();
  EXPECT_EQ(b.capacity(), 4096u);
  EXPECT_EQ(t.length(), 0u);
}

}  // namespace
}  // namespace usb
