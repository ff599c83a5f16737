// The usbtest matrix through our EHCI: the EHCI reference driver runs the equivalents of usbtest
// cases 1, 2, 9, 10, 13, 14, 15 and 16 against Gadget Zero on two VMs' EHCI functions of one
// shared controller at once — each VM's driver on its own thread, the controller (and its frame
// timer) on a loop thread.
#include <gtest/gtest.h>

#include <latch>
#include <thread>

#include "devices/emulated/gadget_zero.h"
#include "tests/unit/host-controller/controller_harness.h"
#include "tests/unit/host-controller/ehci_ref_driver.h"

namespace hc::ehci::testing {
namespace {

using hc::testing::LoopThread;
using hc::testing::VmTarget;
using Clock = std::chrono::steady_clock;

std::vector<uint8_t> mod63(size_t n, size_t mps) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i % mps) % 63);
  return v;
}

class EhciMatrix {
 public:
  EhciMatrix(Target& target, std::string name, std::latch& ready)
      : d_(target, options()), name_(std::move(name)), ready_(ready) {}
  static EhciRefDriver::Options options() {
    EhciRefDriver::Options o;
    o.ram_base = VmTarget::kRamBase;
    o.ram_size = VmTarget::kRamSize;
    o.timeout = std::chrono::milliseconds(20000);
    return o;
  }

  void run() {
    SCOPED_TRACE(name_);
    setup();
    ready_.arrive_and_wait();
    if (!ok_) return;
    begin_ = Clock::now();
    step(1, [&] { case1(); });
    step(2, [&] { case2(); });
    step(9, [&] { case9(); });
    step(10, [&] { case10(); });
    step(13, [&] { case13(); });
    step(14, [&] { case14(); });
    step(15, [&] { case15(); });
    step(16, [&] { case16(); });
    end_ = Clock::now();
  }
  int cases() const { return cases_; }
  Clock::time_point begin() const { return begin_; }
  Clock::time_point end() const { return end_; }

 private:
  static constexpr uint8_t kAddress = 2;
  template <typename F>
  void step(int n, F f) {
    SCOPED_TRACE("case " + std::to_string(n));
    f();
    if (!::testing::Test::HasFailure()) ++cases_;
  }
  void setup() {
    ASSERT_TRUE(d_.start());
    auto vid = d_.enumerate(1, kAddress);
    ASSERT_TRUE(vid);
    EXPECT_EQ(*vid, 0x0525);
    ASSERT_FALSE(d_.control(kAddress, {0x00, 9, 3, 0, 0}).halted);
    ok_ = true;
  }
  void case1() {
    for (int round = 0; round < 4; ++round)
      for (auto& r : d_.bulk_many(kAddress, 0x01, 4096, 16, mod63(4096, 512))) {
        EXPECT_FALSE(r.halted);
        EXPECT_EQ(r.actual, 4096u);
      }
  }
  void case2() {
    for (int round = 0; round < 4; ++round)
      for (auto& r : d_.bulk_many(kAddress, 0x81, 4096, 16)) {
        EXPECT_FALSE(r.halted);
        EXPECT_EQ(r.data, mod63(4096, 512));
      }
  }
  void case9() {
    for (int i = 0; i < 4; ++i) {
      auto dev = d_.control(kAddress, {0x80, 6, 0x0100, 0, 18});
      EXPECT_EQ(dev.actual, 18u);
      EXPECT_EQ(d_.control(kAddress, {0x80, 8, 0, 0, 1}).data, std::vector<uint8_t>{3});
      EXPECT_EQ(d_.control(kAddress, {0x81, 10, 0, 0, 1}).data, std::vector<uint8_t>{0});
      for (auto [type, index] : {std::pair{0x80, 0}, {0x81, 0}, {0x82, 0x81}, {0x82, 0x01}})
        EXPECT_EQ(d_.control(kAddress,
                             {static_cast<uint8_t>(type), 0, 0, static_cast<uint16_t>(index), 2})
                      .actual,
                  2u);
    }
  }
  void case10() {
    const std::vector<std::pair<usb::SetupPacket, bool>> reqs = {
        {{0x80, 6, 0x0100, 0, 18}, false}, {{0x80, 0, 0, 0, 2}, false},
        {{0x80, 6, 0x4200, 0, 8}, true},   {{0x82, 0, 0, 0x81, 2}, false},
        {{0x80, 6, 0x0200, 0, 9}, false},  {{0x82, 0, 0, 0x8f, 2}, true},
        {{0x81, 10, 0, 0, 1}, false},      {{0x80, 6, 0x0300, 0, 4}, false},
        {{0x80, 8, 0, 0, 1}, false},       {{0x80, 6, 0x0f00, 0, 5}, true},
        {{0x80, 6, 0x0100, 0, 18}, false}, {{0x82, 0, 0, 0x01, 2}, false},
    };
    std::vector<usb::SetupPacket> setups;
    for (auto& r : reqs) setups.push_back(r.first);
    for (int round = 0; round < 3; ++round) {
      auto results = d_.control_queue(kAddress, setups);
      ASSERT_EQ(results.size(), reqs.size());
      for (size_t i = 0; i < reqs.size(); ++i) {
        EXPECT_TRUE(results[i].done) << "request " << i;
        EXPECT_EQ(results[i].halted, reqs[i].second) << "request " << i;
      }
    }
  }
  void case13() {
    for (uint8_t ep : {uint8_t{0x81}, uint8_t{0x01}}) {
      auto status = [&] {
        auto r = d_.control(kAddress, {0x82, 0, 0, ep, 2});
        return r.data.size() == 2 ? r.data[0] : 0xff;
      };
      EXPECT_EQ(status(), 0);
      ASSERT_FALSE(d_.control(kAddress, {0x02, 3, 0, ep, 0}).halted);
      EXPECT_EQ(status(), 1);
      EXPECT_TRUE(d_.bulk(kAddress, ep, 512, mod63(512, 512)).halted);
      d_.clear_halt(kAddress, ep);
      ASSERT_FALSE(d_.control(kAddress, {0x02, 1, 0, ep, 0}).halted);
      EXPECT_EQ(status(), 0);
      EXPECT_FALSE(d_.bulk(kAddress, ep, 512, mod63(512, 512)).halted);
    }
  }
  void case14() {
    for (uint16_t len : {1, 7, 63, 64, 65, 255, 256, 1000, 4096}) {
      std::vector<uint8_t> data(len);
      for (size_t i = 0; i < len; ++i) data[i] = static_cast<uint8_t>(i * 5 + len + name_.size());
      ASSERT_FALSE(d_.control(kAddress, {0x40, 0x5b, 0, 0, len}, data).halted);
      EXPECT_EQ(d_.control(kAddress, {0xc0, 0x5c, 0, 0, len}).data, data) << len;
    }
  }
  // 15 / 16: alternate setting 1's iso endpoints, 32 iTDs per direction a few frames ahead.
  void case15() {
    ASSERT_FALSE(d_.control(kAddress, {0x01, 11, 1, 0, 0}).halted);
    ASSERT_TRUE(d_.start_periodic());
    const auto data = mod63(1024, 1024);
    const uint32_t f = d_.frame();
    std::vector<uint32_t> itds;
    for (uint32_t k = 0; k < 32; ++k)
      itds.push_back(d_.itd(kAddress, 0x02, 1024, f + 4 + k, 1, 1024, data));
    for (uint32_t a : itds) {
      auto r = d_.wait_itd(a);
      EXPECT_TRUE(r.done);
      EXPECT_EQ(r.status, 0u);
    }
  }
  void case16() {
    const uint32_t f = d_.frame();
    std::vector<uint32_t> itds;
    for (uint32_t k = 0; k < 32; ++k)
      itds.push_back(d_.itd(kAddress, 0x82, 1024, f + 4 + k, 1, 1024));
    for (uint32_t a : itds) {
      auto r = d_.wait_itd(a);
      EXPECT_TRUE(r.done);
      EXPECT_EQ(r.status, 0u);
      EXPECT_EQ(r.data, mod63(1024, 1024));
    }
  }

  EhciRefDriver d_;
  std::string name_;
  std::latch& ready_;
  bool ok_ = false;
  int cases_ = 0;
  Clock::time_point begin_{}, end_{};
};

devices::GadgetZeroOptions pattern1() {
  devices::GadgetZeroOptions o;
  o.pattern = 1;
  return o;
}

TEST(EhciUsbtest, TwoVmsRunTheMatrixAtOnceOnTheirOwnEhciFunctions) {
  LoopThread loop;
  Controller controller([&](std::function<void()> f) { loop.post(std::move(f)); },
                        [] { return Clock::now(); }, Controller::Options{},
                        [&](std::chrono::nanoseconds d, std::function<void()> f) {
                          loop.post_after(d, std::move(f));
                        });
  std::unique_ptr<devices::GadgetZero> gz1, gz2;
  loop.call([&] {
    gz1 = std::make_unique<devices::GadgetZero>(pattern1());
    gz2 = std::make_unique<devices::GadgetZero>(pattern1());
  });
  {
    VmTarget vm1(loop, controller, "vm1", 1, Controller::Model::kEhci);
    VmTarget vm2(loop, controller, "vm2", 1, Controller::Model::kEhci);
    loop.call([&] {
      ASSERT_TRUE(controller.attach(vm1.id(), 1, *gz1));
      ASSERT_TRUE(controller.attach(vm2.id(), 1, *gz2));
    });
    EXPECT_EQ(loop.call([&] { return controller.config_read(vm1.id(), 8, 4) >> 8; }), 0x0c0320u)
        << "an EHCI PCI function";
    std::latch ready(2);
    EhciMatrix m1(vm1, "vm1", ready), m2(vm2, "vm2", ready);
    std::thread t1([&] { m1.run(); });
    std::thread t2([&] { m2.run(); });
    t1.join();
    t2.join();
    EXPECT_EQ(m1.cases(), 8);
    EXPECT_EQ(m2.cases(), 8);
    EXPECT_LT(std::max(m1.begin(), m2.begin()), std::min(m1.end(), m2.end()))
        << "the two VMs' matrices overlapped";
    loop.call([&] {
      controller.detach(vm1.id(), 1);
      controller.detach(vm2.id(), 1);
    });
  }
  loop.call([&] {
    gz1.reset();
    gz2.reset();
  });
}

}  // namespace
}  // namespace hc::ehci::testing
