// TimeSlicePolicy through SharedDevice's views (turns, held URBs, the grace time, leaving the
// mode) and its state-transition table.
#include <gtest/gtest.h>

#include <set>
#include <utility>

#include "tests/unit/vmm-frontend/shared_device_fixture.h"

namespace vusbd {
namespace {

using namespace sharing_testing;  // NOLINT(google-build-using-namespace): the shared fixtures
using usb::Status;
using usb::Transfer;

TEST_F(TimesliceTest, TurnsHoldTheOtherVmsUrbsAndPassWhenTheHolderIsDone) {
  Outcome oa1, ob1, ob2, oa2;
  auto a1 = bulk(0x81, 64, oa1), b1 = bulk(0x81, 64, ob1), b2 = bulk(0x01, 32, ob2),
       a2 = bulk(0x81, 64, oa2);
  a.submit(*a1);
  EXPECT_EQ(shared.turn_holder(), "vmA");
  b.submit(*b1);
  b.submit(*b2);
  ASSERT_EQ(backend.pending.size(), 1u) << "vmB's URBs are held, not failed";
  EXPECT_EQ(ob1.calls, 0);
  backend.complete_next(Status::kOk, 64);  // vmA's only URB: its turn is over
  EXPECT_EQ(oa1.status, Status::kOk);
  EXPECT_EQ(shared.turn_holder(), "vmB");
  ASSERT_EQ(backend.pending.size(), 2u) << "vmB's URBs go in their order";
  EXPECT_EQ(backend.pending[0], b1.get());
  a.submit(*a2);  // held now
  EXPECT_EQ(backend.pending.size(), 2u);
  backend.complete_next(Status::kOk, 64);
  backend.complete_next(Status::kOk, 32);
  EXPECT_EQ(ob2.status, Status::kOk);
  EXPECT_EQ(shared.turn_holder(), "vmA");
  ASSERT_EQ(backend.pending.size(), 1u);
  backend.complete_next(Status::kOk, 64);
  EXPECT_EQ(oa2.status, Status::kOk);
  EXPECT_EQ(a.stats().turns, 2u);
  EXPECT_EQ(b.stats().turns, 1u);
  EXPECT_EQ(shared.turn_switches(), 2u);
}

TEST_F(TimesliceTest, AHolderThatDoesNotFinishIsCancelledAfterTheGraceTime) {
  Outcome oa, ob;
  auto ta = bulk(0x81, 64, oa), tb = bulk(0x81, 64, ob);
  backend.complete_on_cancel = true;
  a.submit(*ta);  // an IN that the device never answers
  b.submit(*tb);
  EXPECT_EQ(oa.calls, 0);
  timers.fire_all();  // slice timer, then the grace timer of the switch it started
  timers.fire_all();
  EXPECT_EQ(oa.status, Status::kCancelled);
  EXPECT_EQ(shared.turn_holder(), "vmB");
  ASSERT_EQ(backend.pending.size(), 1u);
  EXPECT_EQ(backend.pending.front(), tb.get());
  backend.complete_next(Status::kOk, 64);
  EXPECT_EQ(ob.status, Status::kOk);
}

TEST_F(TimesliceTest, HeldUrbsCancelAndReleasePassesTheTurn) {
  Outcome oa, ob1, ob2;
  auto ta = bulk(0x81, 64, oa), tb1 = bulk(0x81, 64, ob1), tb2 = bulk(0x81, 64, ob2);
  a.submit(*ta);
  b.submit(*tb1);
  b.submit(*tb2);
  EXPECT_TRUE(tb1->cancel());
  EXPECT_EQ(ob1.status, Status::kCancelled);
  a.release();  // vmA detaches while holding the device: vmB goes on at once
  EXPECT_EQ(shared.turn_holder(), "vmB");
  backend.complete_next(Status::kCancelled, 0);  // vmA's URB, cancelled by its adapter
  ASSERT_FALSE(backend.pending.empty());
  EXPECT_EQ(backend.pending.back(), tb2.get());
  backend.complete_next(Status::kOk, 64);
  EXPECT_EQ(ob2.status, Status::kOk);
}

TEST_F(TimesliceTest, UnplugAndLeavingTheModeGiveHeldUrbsBack) {
  Outcome oa, ob;
  auto ta = bulk(0x81, 64, oa), tb = bulk(0x81, 64, ob);
  a.submit(*ta);
  b.submit(*tb);
  shared.set_mode(SharedDevice::Mode::kShared);
  ASSERT_EQ(backend.pending.size(), 2u) << "shared: everyone sends";
  backend.complete_next(Status::kOk, 64);
  backend.complete_next(Status::kOk, 64);
  shared.set_mode(SharedDevice::Mode::kTimeslice);
  Outcome oa2, ob2;
  auto ta2 = bulk(0x81, 64, oa2), tb2 = bulk(0x81, 64, ob2);
  a.submit(*ta2);
  b.submit(*tb2);
  shared.set_backend(nullptr);
  EXPECT_EQ(ob2.status, Status::kNoDevice);
  backend.complete_next(Status::kNoDevice, 0);
  EXPECT_EQ(oa2.status, Status::kNoDevice);
}

class LongSliceTest : public TimesliceTest {
 protected:
  LongSliceTest() : TimesliceTest(std::chrono::hours(1)) {}
};

TEST_F(LongSliceTest, TheHolderKeepsTheDeviceWhileItIsBusy) {
  Outcome o[4];
  auto a1 = bulk(0x81, 64, o[0]), a2 = bulk(0x81, 64, o[1]), b1 = bulk(0x81, 64, o[2]),
       a3 = bulk(0x81, 64, o[3]);
  a.submit(*a1);
  a.submit(*a2);
  b.submit(*b1);
  backend.complete_next(Status::kOk, 64);
  a.submit(*a3);  // still vmA's turn: it is busy and its slice is not over
  EXPECT_EQ(shared.turn_holder(), "vmA");
  EXPECT_EQ(backend.pending.size(), 2u);
  backend.complete_next(Status::kOk, 64);
  backend.complete_next(Status::kOk, 64);  // idle now: vmB's turn
  EXPECT_EQ(shared.turn_holder(), "vmB");
  backend.complete_next(Status::kOk, 64);
  EXPECT_EQ(o[2].status, Status::kOk);
}

using State = TimeSlicePolicy::State;
using namespace std::chrono_literals;

constexpr State kStates[] = {State::kOff, State::kServing, State::kQuiescing, State::kRestoring,
                             State::kHandingOver};

TEST(TimeSlicePolicyStates, TheTransitionTable) {
  const std::set<std::pair<State, State>> legal = {
      {State::kOff, State::kServing},            // timeslice mode begins
      {State::kServing, State::kQuiescing},      // the holder's turn is over
      {State::kServing, State::kRestoring},      // a turn begins on an idle device
      {State::kQuiescing, State::kServing},      // the holder's URBs are back / device gone
      {State::kRestoring, State::kHandingOver},  // restored: the held URBs go out
      {State::kRestoring, State::kServing},      // its VM left meanwhile / abandoned
      {State::kHandingOver, State::kServing},    // the held URBs are out
      {State::kHandingOver, State::kRestoring},  // the holder left meanwhile: the next turn
      {State::kServing, State::kOff},            // leaving the mode, from any phase
      {State::kQuiescing, State::kOff},         {State::kRestoring, State::kOff},
      {State::kHandingOver, State::kOff},
  };
  for (State from : kStates)
    for (State to : kStates)
      EXPECT_EQ(TimeSlicePolicy::allowed(from, to), legal.contains({from, to}))
          << to_string(from) << " → " << to_string(to);
}

TEST(TimeSlicePolicyStates, AnIllegalTransitionIsRefusedAndTheStateStays) {
  ManualTimers timers;
  SharedDevice shared("gz", SharedDevice::Mode::kShared, timers.timer());
  TimeSlicePolicy policy(shared, 100ms, /*on=*/true);
  EXPECT_EQ(policy.state(), State::kServing);
  EXPECT_FALSE(policy.transition(State::kHandingOver)) << "held URBs go out only after a restore";
  EXPECT_EQ(policy.state(), State::kServing);
  EXPECT_FALSE(policy.transition(State::kServing)) << "no transition to the same state";
  EXPECT_TRUE(policy.transition(State::kQuiescing));
  EXPECT_FALSE(policy.transition(State::kRestoring)) << "a turn begins after the quiesce ends";
  EXPECT_EQ(policy.state(), State::kQuiescing);
  EXPECT_TRUE(policy.transition(State::kOff));
  EXPECT_FALSE(policy.transition(State::kOff));
  EXPECT_FALSE(policy.transition(State::kQuiescing)) << "off: only timeslice mode begins";
}

TEST_F(TimesliceTest, TheStateFollowsASwitch) {
  EXPECT_EQ(shared.timeslice_state(), State::kServing);
  Outcome oa, ob;
  auto ta = bulk(0x81, 64, oa), tb = bulk(0x81, 64, ob);
  a.submit(*ta);  // vmA's turn: restored (nothing to do) and handed over at once
  EXPECT_EQ(shared.timeslice_state(), State::kServing);
  b.submit(*tb);  // a slice of 0: vmA's turn is over, its URB is still at the device
  EXPECT_EQ(shared.timeslice_state(), State::kQuiescing);
  backend.complete_next(Status::kOk, 64);
  EXPECT_EQ(shared.timeslice_state(), State::kServing);
  EXPECT_EQ(shared.turn_holder(), "vmB");
  shared.set_mode(SharedDevice::Mode::kShared);
  EXPECT_EQ(shared.timeslice_state(), State::kOff);
  backend.complete_next(Status::kOk, 64);
  EXPECT_EQ(ob.status, Status::kOk);
}

TEST(TimeSliceClock, TheSliceIsMeasuredOnTheInjectedClock) {
  ManualTimers timers;
  auto now = std::chrono::steady_clock::time_point(std::chrono::seconds(1000));
  usb::testing::FakeDevice backend(gz_like());
  SharedDevice shared("gz", SharedDevice::Mode::kTimeslice, timers.timer(), 200ms, 100ms,
                      [&now] { return now; });
  shared.set_backend(&backend);
  DeviceView& a = shared.view("vmA", {});
  DeviceView& b = shared.view("vmB", {});
  ASSERT_TRUE(a.try_acquire());
  ASSERT_TRUE(b.try_acquire());
  Outcome oa1, oa2, ob;
  auto a1 = bulk(0x81, 64, oa1), a2 = bulk(0x81, 64, oa2), b1 = bulk(0x81, 64, ob);
  a.submit(*a1);
  a.submit(*a2);  // vmA is busy: two URBs at the device
  b.submit(*b1);  // waits: vmA's slice lasts until 100 ms on the injected clock
  backend.complete_next(Status::kOk, 64);
  EXPECT_EQ(shared.turn_holder(), "vmA") << "busy and within its slice";
  EXPECT_EQ(shared.timeslice_state(), State::kServing);
  now += 100ms;
  timers.fire_all();  // the slice timer: vmA's turn is over, its last URB is waited for
  EXPECT_EQ(shared.timeslice_state(), State::kQuiescing);
  backend.complete_next(Status::kOk, 64);
  EXPECT_EQ(shared.turn_holder(), "vmB");
  backend.complete_next(Status::kOk, 64);
  EXPECT_EQ(ob.status, Status::kOk);
  EXPECT_EQ(b.stats().held_time, std::chrono::nanoseconds(100ms)) << "on the injected clock";
}

}  // namespace
}  // namespace vusbd
