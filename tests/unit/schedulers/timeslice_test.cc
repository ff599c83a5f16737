// TimeSlicer on simulated time: the times are the test's, nothing sleeps.
#include "schedulers/timeslice.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

namespace sched {
namespace {

using namespace std::chrono_literals;
using Clock = TimeSlicer::Clock;

TEST(TimeSlicerTest, FirstComeHoldsOthersWaitInOrder) {
  TimeSlicer s(100ms);
  const Clock::time_point t0{};
  EXPECT_TRUE(s.request("a", t0));
  EXPECT_TRUE(s.request("a", t0 + 1ms)) << "the holder keeps sending";
  EXPECT_FALSE(s.request("b", t0 + 2ms));
  EXPECT_FALSE(s.request("c", t0 + 3ms));
  EXPECT_FALSE(s.request("b", t0 + 4ms)) << "once in line";
  EXPECT_EQ(s.waiting(), (std::deque<std::string>{"b", "c"}));
  EXPECT_FALSE(s.should_switch(t0 + 50ms, false)) << "slice not over, holder busy";
  EXPECT_TRUE(s.should_switch(t0 + 50ms, true)) << "holder idle and someone waits";
  EXPECT_TRUE(s.should_switch(t0 + 100ms, false)) << "slice over";
  EXPECT_EQ(s.next(t0 + 100ms), "b");
  EXPECT_EQ(s.slice_end(), t0 + 200ms);
  EXPECT_EQ(s.next(t0 + 200ms), "c");
  EXPECT_EQ(s.next(t0 + 300ms), std::nullopt) << "nobody waits: the device is free";
  EXPECT_TRUE(s.request("a", t0 + 301ms));
  EXPECT_EQ(s.switches(), 2u);
}

TEST(TimeSlicerTest, NobodyWaitingMeansNoSwitch) {
  TimeSlicer s(10ms);
  const Clock::time_point t0{};
  ASSERT_TRUE(s.request("a", t0));
  EXPECT_FALSE(s.should_switch(t0 + 1h, true));
}

TEST(TimeSlicerTest, ForgetFreesTheDeviceAndTheLine) {
  TimeSlicer s(10ms);
  const Clock::time_point t0{};
  ASSERT_TRUE(s.request("a", t0));
  ASSERT_FALSE(s.request("b", t0));
  ASSERT_FALSE(s.request("c", t0));
  s.forget("b");
  EXPECT_EQ(s.waiting(), (std::deque<std::string>{"c"}));
  s.forget("a");
  EXPECT_FALSE(s.holder());
  EXPECT_EQ(s.next(t0 + 1ms), "c");
}

// With N VMs that always have work, each waits at most one slice per other VM for its turn.
TEST(TimeSlicerTest, WaitIsBoundedByOneSlicePerVmAhead) {
  for (int n : {2, 3, 16, 64}) {
    TimeSlicer s(10ms);
    Clock::time_point now{};
    std::map<std::string, Clock::time_point> last_turn;
    std::mt19937 rng(n);
    for (int i = 0; i < n; ++i) (void)s.request("vm" + std::to_string(i), now);
    last_turn[*s.holder()] = now;
    Clock::duration worst{};
    for (int round = 0; round < 20 * n; ++round) {
      // The holder works for a random part of its slice or all of it.
      now += std::chrono::milliseconds(1 + rng() % 10);
      const bool idle = rng() % 2;
      if (!s.should_switch(now, idle)) now = s.slice_end();
      const std::string old = *s.holder();
      (void)s.request(old, now);  // it keeps having work: back in line after its turn
      auto next = s.next(now);
      ASSERT_TRUE(next);
      (void)s.request(old, now);
      if (last_turn.contains(*next)) worst = std::max(worst, now - last_turn[*next]);
      last_turn[*next] = now;
    }
    // From the start of one turn to the next: its own slice and one per other VM.
    EXPECT_LE(worst, std::chrono::milliseconds(10 * n)) << n << " VMs";
  }
}

}  // namespace
}  // namespace sched
