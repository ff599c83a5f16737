// FairAdmission through SharedDevice's views: a device that takes one URB at a time, two VMs
// with deep queues (weights, cancelling, a full share).
#include <gtest/gtest.h>

#include "tests/unit/vmm-frontend/shared_device_fixture.h"

namespace vusbd {
namespace {

using namespace sharing_testing;  // NOLINT(google-build-using-namespace): the shared fixtures
using usb::Status;
using usb::Transfer;

// Fair scheduling: a device that takes one URB at a time, two VMs with deep queues.
class FairShareTest : public SharedDeviceTest {
 protected:
  FairShareTest() { shared.set_device_queue_depth(1); }
  // Submits n 16 KiB bulk OUT URBs from `v`, tagged with `tag` in `order` when they complete.
  void flood(DeviceView& v, int n, char tag, size_t length = 16384) {
    for (int i = 0; i < n; ++i) {
      auto t = std::make_unique<Transfer>(0x01, usb::TransferType::kBulk, length);
      t->set_completion([this, tag](Transfer& x) {
        if (x.status() == Status::kOk) order.push_back(tag);  // served by the device
      });
      v.submit(*t);
      urbs.push_back(std::move(t));
    }
  }
  void serve_all() {
    while (!backend.pending.empty()) backend.complete_next(Status::kOk, 16384);
  }
  std::vector<std::unique_ptr<Transfer>> urbs;
  std::string order;
};

TEST_F(FairShareTest, EqualWeightsAlternate) {
  flood(a, 8, 'A');
  flood(b, 8, 'B');
  EXPECT_EQ(backend.pending.size(), 1u) << "the device takes one at a time";
  EXPECT_EQ(shared.queued(a), 7u);
  EXPECT_EQ(shared.queued(b), 8u);
  serve_all();
  EXPECT_EQ(order, "AABABABABABABABB");
}

TEST_F(FairShareTest, WeightsSetTheShares) {
  shared.set_weight("vmA", 3);
  flood(a, 12, 'A');
  flood(b, 12, 'B');
  serve_all();
  // While both wait, vmA gets three 16 KiB URBs for each of vmB's (after the one the device
  // already had); when vmA's queue runs dry, vmB has the device.
  EXPECT_EQ(order, "AAAABAAABAAABAABBBBBBBBB");
}

TEST_F(FairShareTest, QueuedUrbsCancelAndAreGivenBackOnReleaseAndUnplug) {
  flood(a, 3, 'A');
  flood(b, 2, 'B');
  EXPECT_TRUE(urbs[1]->cancel());  // vmA's second, still queued
  EXPECT_EQ(urbs[1]->status(), Status::kCancelled);
  b.release();
  EXPECT_EQ(urbs[3]->status(), Status::kCancelled);
  EXPECT_EQ(urbs[4]->status(), Status::kCancelled);
  shared.set_backend(nullptr);
  EXPECT_EQ(urbs[2]->status(), Status::kNoDevice);
  backend.complete_next(Status::kNoDevice, 0);
  EXPECT_EQ(urbs[0]->status(), Status::kNoDevice);
}

TEST_F(FairShareTest, ZeroLengthUrbsAreNotFree) {
  // A flood of zero-length URBs used to cost nothing in the byte-counting fair queue: vmA's
  // flow never ran out of credit and vmB waited for the whole flood.
  flood(a, 200, 'A', 0);
  flood(b, 2, 'B', 512);
  serve_all();
  const auto first_b = order.find('B');
  ASSERT_NE(first_b, std::string::npos);
  EXPECT_LT(first_b, 40u) << order;  // a 16 KiB quantum buys vmA at most 32 minimum-cost URBs
}

TEST_F(FairShareTest, AFullShareIsRefusedForThatVmOnly) {
  flood(a, 1026, 'A');  // one at the device, 1024 queued, one refused
  EXPECT_EQ(urbs.back()->status(), Status::kNoMemory);
  EXPECT_EQ(a.stats().queue_full, 1u);
  flood(b, 1, 'B');
  EXPECT_EQ(urbs.back()->state(), Transfer::State::kIdle) << "vmB's URB waits, it is not refused";
  EXPECT_EQ(shared.queued(b), 1u);
  serve_all();
  EXPECT_EQ(order.find('B'), 2u) << "it is served in the first round: after the URB the device "
                                    "had and one of vmA's";
}

}  // namespace
}  // namespace vusbd
