// ControlLock through SharedDevice's views: class / vendor transactions (OUT ... IN) serialized
// between VMs, the timeout of an abandoned one, cancelling a request that waits.
#include <gtest/gtest.h>

#include "tests/unit/vmm-frontend/shared_device_fixture.h"

namespace vusbd {
namespace {

using namespace sharing_testing;  // NOLINT(google-build-using-namespace): the shared fixtures
using usb::Status;
using usb::Transfer;

TEST_F(SharedDeviceTest, VendorTransactionsAreSerializedPerVm) {
  // vmA: OUT 0x5b ... IN 0x5c; vmB's OUT 0x5b in between must wait, not interleave.
  Outcome a_out, a_in, b_out;
  auto aw = control({0x40, 0x5b, 0, 0, 4}, a_out);
  auto bw = control({0x40, 0x5b, 0, 0, 4}, b_out);
  auto ar = control({0xc0, 0x5c, 0, 0, 4}, a_in);
  a.submit(*aw);
  b.submit(*bw);
  ASSERT_EQ(backend.pending.size(), 1u) << "vmB's write waits";
  backend.complete_next();
  EXPECT_EQ(a_out.status, Status::kOk);
  EXPECT_EQ(b_out.calls, 0);
  a.submit(*ar);
  ASSERT_EQ(backend.pending.size(), 1u);
  EXPECT_EQ(backend.pending.front(), ar.get()) << "vmA's read goes before vmB's write";
  backend.complete_next();
  ASSERT_EQ(backend.pending.size(), 1u) << "the read closed vmA's transaction; vmB's write runs";
  EXPECT_EQ(backend.pending.front(), bw.get());
  backend.complete_next();
  EXPECT_EQ(b_out.status, Status::kOk);
}

TEST_F(SharedDeviceTest, AbandonedTransactionTimesOut) {
  Outcome a_out, b_out;
  auto aw = control({0x40, 0x5b, 0, 0, 4}, a_out);
  auto bw = control({0x40, 0x5b, 0, 0, 4}, b_out);
  a.submit(*aw);
  backend.complete_next();
  b.submit(*bw);
  EXPECT_TRUE(backend.pending.empty());
  timers.fire_all();  // vmA never read back
  ASSERT_EQ(backend.pending.size(), 1u);
  EXPECT_EQ(backend.pending.front(), bw.get());
}

TEST_F(SharedDeviceTest, WaitingTransferCanBeCancelled) {
  Outcome a_out, b_out;
  auto aw = control({0x40, 0x5b, 0, 0, 4}, a_out);
  auto bw = control({0x40, 0x5b, 0, 0, 4}, b_out);
  a.submit(*aw);
  b.submit(*bw);
  EXPECT_TRUE(bw->cancel());
  EXPECT_EQ(b_out.calls, 1);
  EXPECT_EQ(b_out.status, Status::kCancelled);
  EXPECT_FALSE(bw->cancel());
}

}  // namespace
}  // namespace vusbd
