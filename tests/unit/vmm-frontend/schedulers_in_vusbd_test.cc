// The schedulers as vusbd uses them, against emulated Gadget Zeros on simulated time:
//  - bandwidth admission: a second heavy iso alternate setting on a bus is refused with -ENOSPC
//    (kNoBandwidth) while the first VM keeps its reservation;
//  - fair shares: two VMs keep 8 bulk URBs each in flight on a bus-speed-capped Gadget Zero; the
//    bytes each is served follow the weights (1:1, 3:1) within 3%.
#include <gtest/gtest.h>

#include <map>

#include "devices/emulated/gadget_zero.h"
#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd {
namespace {

using namespace std::chrono_literals;
using usb::Status;
using usb::Transfer;

// Timers and a clock the test advances.
struct SimTime {
  std::chrono::steady_clock::time_point now{};
  std::multimap<std::chrono::steady_clock::time_point, std::move_only_function<void()>> timers;
  auto timer() {
    return [this](std::chrono::milliseconds d, std::move_only_function<void()> fn) {
      timers.emplace(now + d, std::move(fn));
    };
  }
  auto clock() {
    return [this] { return now; };
  }
  void run_until(std::chrono::steady_clock::time_point end) {
    while (!timers.empty() && timers.begin()->first <= end) {
      auto it = timers.begin();
      now = std::max(now, it->first);
      auto fn = std::move(it->second);
      timers.erase(it);
      fn();
    }
    now = end;
  }
};

std::unique_ptr<devices::GadgetZero> gadget_zero(devices::GadgetZeroOptions o, SimTime& time) {
  auto gz = std::make_unique<devices::GadgetZero>(o);
  gz->set_pacing(time.timer(), time.clock());
  gz->set_configuration(devices::GadgetZero::kSourceSinkConfig, [](Status) {});
  return gz;
}

Status set_interface(DeviceView& v, uint8_t alt) {
  Status out = Status::kIoError;
  v.set_interface(0, alt, [&](Status s) { out = s; });
  return out;
}

TEST(BandwidthAdmission, ASecondHeavyIsoSettingOnTheBusIsRefusedWithENOSPC) {
  SimTime time;
  sched::BusReservations book;
  devices::GadgetZeroOptions heavy;
  heavy.isoc_mult = 1;  // 2 × 1024 bytes per microframe, IN and OUT: ~82 of 100 µs
  heavy.isoc_interval = 1;
  auto gz1 = gadget_zero(heavy, time), gz2 = gadget_zero(heavy, time);
  SharedDevice d1("gz1", SharedDevice::Mode::kShared, time.timer());
  SharedDevice d2("gz2", SharedDevice::Mode::kShared, time.timer());
  d1.set_bandwidth(&book, "lab");
  d2.set_bandwidth(&book, "lab");
  d1.set_backend(gz1.get());
  d2.set_backend(gz2.get());
  DeviceView& v1 = d1.view("vm1", {});
  DeviceView& v2 = d2.view("vm2", {});
  ASSERT_TRUE(v1.try_acquire());
  ASSERT_TRUE(v2.try_acquire());
  Status st = Status::kIoError;
  v1.set_configuration(3, [&](Status s) { st = s; });
  EXPECT_EQ(st, Status::kOk);
  v2.set_configuration(3, [&](Status s) { st = s; });
  EXPECT_EQ(st, Status::kOk);

  EXPECT_EQ(set_interface(v1, 1), Status::kOk);
  EXPECT_EQ(set_interface(v2, 1), Status::kNoBandwidth);
  EXPECT_EQ(usb::to_linux_errno(Status::kNoBandwidth), -28);  // -ENOSPC
  EXPECT_EQ(v2.stats().refused, 1u);
  EXPECT_EQ(gz2->alternate_setting(0), 0) << "the device was not switched";
  EXPECT_EQ(v2.alternate_setting(0), 0);
  EXPECT_EQ(v1.alternate_setting(0), 1);
  // The light setting still fits; when vm1 lets go, the heavy one does too.
  EXPECT_EQ(set_interface(v2, 0), Status::kOk);
  v1.release();
  EXPECT_EQ(set_interface(v2, 1), Status::kOk);
  ASSERT_EQ(book.holdings().size(), 1u);
  EXPECT_EQ(book.holdings()[0]->device, "gz2");
}

// Two VMs, each keeping `depth` bulk OUT URBs of 16 KiB in flight on one paced Gadget Zero.
class PacedShares : public ::testing::Test {
 protected:
  static constexpr size_t kUrb = 16384;
  PacedShares()
      : shared("gz", SharedDevice::Mode::kShared, time.timer(), 200ms, 100ms, time.clock()) {
    devices::GadgetZeroOptions o;
    o.bulk_rate = 1'000'000;  // 1 MB/s: the device is the bottleneck
    gz = gadget_zero(o, time);
    shared.set_backend(gz.get());
    for (const char* vm : {"vm1", "vm2"}) {
      DeviceView& v = shared.view(vm, {});
      EXPECT_TRUE(v.try_acquire());
      for (int i = 0; i < 8; ++i) {
        urbs.push_back(std::make_unique<Transfer>(0x01, usb::TransferType::kBulk, kUrb));
        std::ranges::fill(urbs.back()->buffer(), 0);  // Gadget Zero's pattern 0
        submit(v, *urbs.back());
      }
    }
  }
  ~PacedShares() override {
    running = false;
    gz->disconnect();  // its URBs come back while the views and the URBs exist
    shared.set_backend(nullptr);
  }
  // The guest keeps its queue full: a completed URB goes back (right after its completion).
  void submit(DeviceView& v, Transfer& t) {
    t.set_completion([this, &v](Transfer& x) {
      bytes[v.vm()] += x.actual_length();
      if (!running || x.status() != Status::kOk) return;
      time.timers.emplace(time.now, [this, &v, &x] {
        x.rearm();
        submit(v, x);
      });
    });
    v.submit(t);
  }
  // Share of vm1 over `seconds` of simulated time, after a second to settle.
  double share_of_vm1(int seconds) {
    time.run_until(time.now + 1s);
    bytes.clear();
    time.run_until(time.now + std::chrono::seconds(seconds));
    return static_cast<double>(bytes["vm1"]) / static_cast<double>(bytes["vm1"] + bytes["vm2"]);
  }
  SimTime time;
  std::unique_ptr<devices::GadgetZero> gz;
  SharedDevice shared;
  std::vector<std::unique_ptr<Transfer>> urbs;
  std::map<std::string, uint64_t> bytes;
  bool running = true;
};

TEST_F(PacedShares, EqualWeightsHalfEach) {
  const double s = share_of_vm1(10);
  EXPECT_NEAR(s, 0.5, 0.5 * 0.03);
  EXPECT_NEAR(static_cast<double>(bytes["vm1"] + bytes["vm2"]), 10e6, 10e6 * 0.03)
      << "the device runs at its cap";
}

TEST_F(PacedShares, WeightThreeToOne) {
  shared.set_weight("vm1", 3);
  const double s = share_of_vm1(10);
  EXPECT_NEAR(s, 0.75, 0.75 * 0.03);
  EXPECT_GT(shared.find_view("vm2")->stats().queue_wait.count(), 0);
}

}  // namespace
}  // namespace vusbd
