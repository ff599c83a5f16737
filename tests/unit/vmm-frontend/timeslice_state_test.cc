// Timeslice mode's state save/restore against an emulated Gadget Zero: each VM keeps its own
// configuration, alternate setting, halts and class state (Gadget Zero's 0x5b/0x5c control
// buffer) across the other VM's turns, as if it had the device to itself.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "devices/emulated/gadget_zero.h"
#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd {
namespace {

using devices::GadgetZero;
using usb::Status;
using usb::Transfer;

class TimesliceState : public ::testing::Test {
 protected:
  // `lock`: how long a class/vendor OUT keeps the turn waiting for its IN.
  explicit TimesliceState(std::chrono::milliseconds lock = std::chrono::milliseconds(200))
      : shared(
            "gz", SharedDevice::Mode::kTimeslice,
            [this](std::chrono::milliseconds, std::move_only_function<void()> fn) {
              timers.push_back(std::move(fn));
            },
            lock),
        a(shared.view("vmA", {})),
        b(shared.view("vmB", {})) {
    shared.set_backend(&gz);
    EXPECT_TRUE(a.try_acquire());
    EXPECT_TRUE(b.try_acquire());
  }
  ~TimesliceState() override { shared.set_backend(nullptr); }

  Status set_config(DeviceView& v, uint8_t value) {
    Status out = Status::kIoError;
    v.set_configuration(value, [&](Status s) { out = s; });
    return out;
  }
  Status set_alt(DeviceView& v, uint8_t alt) {
    Status out = Status::kIoError;
    v.set_interface(0, alt, [&](Status s) { out = s; });
    return out;
  }
  void fire_timers() {
    auto fns = std::move(timers);
    timers.clear();
    for (auto& f : fns) f();
  }
  // A vendor request through the view's control pipe (0x5b write / 0x5c read of Gadget Zero's
  // buffer); the outcome lands in `out` (and the data read in `in`) when it completes.
  struct Request {
    std::unique_ptr<Transfer> t;
    bool done = false;
    Status status = Status::kIoError;
    std::string in;
  };
  std::unique_ptr<Request> vendor(DeviceView& v, bool write, std::string_view data) {
    auto r = std::make_unique<Request>();
    const usb::SetupPacket s{static_cast<uint8_t>(write ? 0x40 : 0xc0),
                             write ? GadgetZero::kRequestWrite : GadgetZero::kRequestRead, 0, 0,
                             static_cast<uint16_t>(data.size())};
    r->t = Transfer::control(write ? 0x00 : 0x80, s);
    if (write) std::memcpy(r->t->buffer().data(), data.data(), data.size());
    r->t->set_completion([p = r.get()](Transfer& x) {
      p->status = x.status();
      p->done = true;
      p->in.assign(reinterpret_cast<const char*>(x.data().data()), x.data().size());
    });
    v.submit(*r->t);
    return r;
  }
  Status bulk_out(DeviceView& v, uint8_t fill) {
    Transfer t(GadgetZero::kBulkOut, usb::TransferType::kBulk, 512);
    std::memset(t.buffer().data(), fill, 512);
    Status out = Status::kIoError;
    t.set_completion([&](Transfer& x) { out = x.status(); });
    v.submit(t);
    return out;
  }

  std::vector<std::move_only_function<void()>> timers;
  GadgetZero gz;
  SharedDevice shared;
  DeviceView& a;
  DeviceView& b;
};

TEST_F(TimesliceState, EachVmKeepsItsOwnConfigurationAndAlternateSetting) {
  EXPECT_EQ(set_config(a, GadgetZero::kSourceSinkConfig), Status::kOk);
  // In shared mode this would be refused: here vmB just records it for its turn.
  EXPECT_EQ(set_config(b, GadgetZero::kLoopbackConfig), Status::kOk);
  EXPECT_EQ(gz.active_configuration(), GadgetZero::kSourceSinkConfig);
  EXPECT_EQ(b.active_configuration(), GadgetZero::kLoopbackConfig);
  EXPECT_EQ(set_alt(a, 1), Status::kOk);
  EXPECT_EQ(gz.alternate_setting(0), 1);

  EXPECT_EQ(bulk_out(b, 0), Status::kOk);  // vmB's turn: the loopback configuration
  EXPECT_EQ(gz.active_configuration(), GadgetZero::kLoopbackConfig);
  EXPECT_EQ(shared.turn_holder(), "vmB");
  EXPECT_EQ(bulk_out(a, 0), Status::kOk);  // vmA's turn again: source/sink, alt 1
  EXPECT_EQ(gz.active_configuration(), GadgetZero::kSourceSinkConfig);
  EXPECT_EQ(gz.alternate_setting(0), 1);
  EXPECT_EQ(a.alternate_setting(0), 1);
  EXPECT_EQ(b.alternate_setting(0), 0);
  EXPECT_GE(a.stats().turns, 1u);
  EXPECT_GE(b.stats().turns, 1u);
}

TEST_F(TimesliceState, AClassTransactionKeepsTheTurnUntilItsIn) {
  ASSERT_EQ(set_config(a, GadgetZero::kSourceSinkConfig), Status::kOk);
  ASSERT_EQ(set_config(b, GadgetZero::kSourceSinkConfig), Status::kOk);
  auto aw = vendor(a, true, "AAAA");
  EXPECT_TRUE(aw->done);
  auto bw = vendor(b, true, "BBBB");
  EXPECT_FALSE(bw->done) << "vmB waits: vmA is between its OUT and its IN";
  auto ar = vendor(a, false, "....");
  ASSERT_TRUE(ar->done);
  EXPECT_EQ(ar->in, "AAAA");
  EXPECT_TRUE(bw->done) << "vmA's IN closed the transaction: vmB's turn";
  EXPECT_EQ(bw->status, Status::kOk);
}

class TimesliceShortLock : public TimesliceState {
 protected:
  TimesliceShortLock() : TimesliceState(std::chrono::milliseconds(1)) {}
};

TEST_F(TimesliceShortLock, ClassStateRoundTripsAcrossTheOtherVmsTurn) {
  ASSERT_EQ(set_config(a, GadgetZero::kSourceSinkConfig), Status::kOk);
  ASSERT_EQ(set_config(b, GadgetZero::kSourceSinkConfig), Status::kOk);
  auto aw = vendor(a, true, "AAAA");
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // vmA's transaction times out
  auto bw = vendor(b, true, "BBBB");  // vmB's turn: it overwrites the device's buffer
  fire_timers();
  ASSERT_TRUE(bw->done);
  EXPECT_EQ(bw->status, Status::kOk);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto ar = vendor(a, false, "....");
  fire_timers();
  ASSERT_TRUE(ar->done);
  EXPECT_EQ(ar->in, "AAAA") << "vmA reads back what it wrote, not vmB's bytes";
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto br = vendor(b, false, "....");
  fire_timers();
  ASSERT_TRUE(br->done);
  EXPECT_EQ(br->in, "BBBB");
}

TEST_F(TimesliceState, ADeviceHaltStaysWithTheVmThatCausedIt) {
  ASSERT_EQ(set_config(a, GadgetZero::kSourceSinkConfig), Status::kOk);
  ASSERT_EQ(set_config(b, GadgetZero::kSourceSinkConfig), Status::kOk);
  EXPECT_EQ(bulk_out(a, 0x55), Status::kOk);  // bad pattern: the sink halts its OUT endpoint
  EXPECT_TRUE(gz.endpoint_halted(GadgetZero::kBulkOut));
  EXPECT_EQ(bulk_out(a, 0), Status::kStall);
  EXPECT_EQ(bulk_out(b, 0), Status::kOk) << "vmB's turn: the device halt was cleared for it";
  EXPECT_EQ(bulk_out(a, 0), Status::kStall) << "vmA still sees its halt";
  Status st = Status::kIoError;
  a.clear_halt(GadgetZero::kBulkOut, [&](Status s) { st = s; });
  EXPECT_EQ(st, Status::kOk);
  EXPECT_EQ(bulk_out(a, 0), Status::kOk);
}

}  // namespace
}  // namespace vusbd
