// Ring: the consumer side of an xHCI ring on guest memory the test writes as a driver would.
#include <gtest/gtest.h>

#include "host-controller/xhci/ring.h"

namespace hc::xhci {
namespace {

constexpr uint64_t kBase = 0x1000;

class RingTest : public ::testing::Test {
 protected:
  RingTest() : mem(0x4000, 0) {}
  // A Normal TRB at slot `i` of the segment at `seg` with the given cycle and chain bits.
  void put(uint64_t seg, int i, bool cycle, bool chain = false, uint32_t length = 8) {
    Trb t;
    t.status = length;
    t.control = chain ? 1u << 4 : 0u;
    t.set_type(TrbType::kNormal);
    t.set_cycle(cycle);
    ASSERT_TRUE(mem.write_obj(seg + 16 * i, t));
  }
  void link(uint64_t at, uint64_t target, bool cycle, bool toggle) {
    Trb t;
    t.parameter = target;
    t.control = toggle ? 2u : 0u;
    t.set_type(TrbType::kLink);
    t.set_cycle(cycle);
    ASSERT_TRUE(mem.write_obj(at, t));
  }
  InMemoryGuestMemory mem;
};

TEST_F(RingTest, ReadsWhatTheProducerOwnsThenStopsAtTheCycleBoundary) {
  put(kBase, 0, true);
  put(kBase, 1, true);
  Ring r(kBase, true);
  auto a = r.pop(mem);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->address, kBase);
  ASSERT_TRUE(r.pop(mem));
  auto empty = r.pop(mem);
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error(), Ring::Stop::kEmpty);
  EXPECT_EQ(r.dequeue(), kBase + 32) << "an empty ring keeps its position";
}

TEST_F(RingTest, FollowsALinkWithToggleCycleAroundTheRing) {
  // Four slots: three TRBs and a Link back to the start that toggles the cycle state.
  for (int i = 0; i < 3; ++i) put(kBase, i, true);
  link(kBase + 48, kBase, true, true);
  Ring r(kBase, true);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(r.pop(mem));
  EXPECT_FALSE(r.pop(mem)) << "the first slot still has cycle 1: the producer has not lapped";
  EXPECT_EQ(r.dequeue(), kBase);
  EXPECT_FALSE(r.cycle()) << "the link toggled the consumer cycle state";
  put(kBase, 0, false);  // the producer's second lap writes cycle 0
  auto again = r.pop(mem);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->address, kBase);
}

TEST_F(RingTest, ALoopOfLinksAndPointersOutsideMemoryStopTheWalk) {
  link(kBase, kBase + 16, true, false);
  link(kBase + 16, kBase, true, false);
  Ring loop(kBase, true);
  auto l = loop.pop(mem);
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error(), Ring::Stop::kLinkLoop);
  link(kBase + 64, 0xdead0000, true, false);
  Ring away(kBase + 64, true);
  auto b = away.pop(mem);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error(), Ring::Stop::kBadPointer);
  Ring off(0x4000, true);  // just past the end of guest memory
  EXPECT_EQ(off.pop(mem).error(), Ring::Stop::kBadPointer);
}

TEST_F(RingTest, ATdIsTakenWholeOrNotAtAll) {
  put(kBase, 0, true, /*chain=*/true);
  put(kBase, 1, true, /*chain=*/true);
  Ring r(kBase, true);
  auto half = r.pop_td(mem);
  ASSERT_FALSE(half);
  EXPECT_EQ(half.error(), Ring::Stop::kEmpty);
  EXPECT_EQ(r.dequeue(), kBase) << "nothing consumed";
  put(kBase, 2, true, /*chain=*/false);
  auto td = r.pop_td(mem);
  ASSERT_TRUE(td);
  EXPECT_EQ(td->size(), 3u);
  EXPECT_EQ(r.dequeue(), kBase + 48);
}

TEST_F(RingTest, AnEndlessChainIsATrbError) {
  // A ring of chained TRBs that links back to itself: a TD with no end.
  for (int i = 0; i < 7; ++i) put(kBase, i, true, /*chain=*/true);
  link(kBase + 7 * 16, kBase, true, false);
  Ring r(kBase, true);
  auto td = r.pop_td(mem);
  ASSERT_FALSE(td);
  EXPECT_EQ(td.error(), Ring::Stop::kTdTooLong);
  EXPECT_EQ(r.dequeue(), kBase);
}

}  // namespace
}  // namespace hc::xhci
