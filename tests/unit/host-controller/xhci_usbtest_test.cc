// The usbtest matrix through our xHCI: the reference driver (a register-level guest driver, see
// xhci_ref_driver.h) runs the equivalents of Linux usbtest cases 1, 2, 9, 10, 13, 14, 15 and 16
// against Gadget Zero, plus cancelling queued TDs with Stop Endpoint + Set TR Dequeue — on two
// VMs' register sets of one shared controller at once: each VM's driver on its own thread (a
// vCPU), the controller on its loop thread serving both VMs' rings through its fair queue.
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <mutex>
#include <thread>

#include "devices/emulated/gadget_zero.h"
#include "host-controller/xhci/regs.h"
#include "tests/unit/host-controller/controller_harness.h"

namespace hc::xhci::testing {
namespace {

using hc::testing::LoopThread;
using hc::testing::VmTarget;
using Clock = std::chrono::steady_clock;

// Gadget Zero's pattern 1: (i % wMaxPacketSize) % 63, counted per packet.
std::vector<uint8_t> mod63(size_t n, size_t mps) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i % mps) % 63);
  return v;
}

struct CaseTime {
  int number;
  Clock::time_point begin, end;
};

// One VM's run of the matrix; failures are recorded with the VM's name.
class Matrix {
 public:
  Matrix(XhciTarget& target, std::string name, std::latch& both_ready)
      : d_(target, VmTarget::driver_options()), name_(std::move(name)), ready_(both_ready) {}

  void run() {
    SCOPED_TRACE(name_);
    setup();
    ready_.arrive_and_wait();  // both VMs enumerated (or failed): the cases start together
    if (slot_ == 0 || config_.empty() || !configured_) return;
    cases();
  }
  void setup() {
    ASSERT_TRUE(d_.start());
    auto e = d_.enumerate(1);
    ASSERT_TRUE(e);
    slot_ = e->slot;
    EXPECT_EQ(e->device.vendor_id, 0x0525);
    EXPECT_EQ(e->speed, reg::kSpeedHigh);
    // The source/sink configuration (value 3), whichever index it has.
    for (uint8_t i = 0; i < e->device.num_configurations && config_.empty(); ++i) {
      auto [c, head] = d_.control_sync(slot_, {0x80, 6, static_cast<uint16_t>(0x0200 | i), 0, 9});
      ASSERT_EQ(c, Completion::kSuccess);
      if (head[5] != devices::GadgetZero::kSourceSinkConfig) continue;
      auto [c2, all] = d_.control_sync(slot_, {0x80, 6, static_cast<uint16_t>(0x0200 | i), 0,
                                               static_cast<uint16_t>(head[2] | (head[3] << 8))});
      ASSERT_EQ(c2, Completion::kSuccess);
      config_ = all;
    }
    ASSERT_FALSE(config_.empty());
    // As an OS sets a configuration: Configure Endpoint for alt 0, then SET_CONFIGURATION.
    auto eps = XhciRefDriver::endpoints_of(config_, 0, 0);
    ASSERT_EQ(eps.size(), 2u);
    ASSERT_EQ(d_.configure(slot_, eps), Completion::kSuccess);
    ASSERT_EQ(d_.control_sync(slot_, {0x00, 9, 3, 0, 0}).first, Completion::kSuccess);
    configured_ = true;
  }
  void cases() {
    timed(1, [&] { case1(); });
    timed(2, [&] { case2(); });
    timed(9, [&] { case9(); });
    timed(10, [&] { case10(); });
    timed(13, [&] { case13(); });
    timed(14, [&] { case14(); });
    timed(99, [&] { cancel(); });
    timed(15, [&] { case15(); });
    timed(16, [&] { case16(); });
  }
  const std::vector<CaseTime>& times() const { return times_; }

 private:
  static constexpr uint8_t kOut = 2, kIn = 3, kIsoOut = 4, kIsoIn = 5;  // DCIs
  template <typename F>
  void timed(int n, F f) {
    SCOPED_TRACE("case " + std::to_string(n));
    const auto begin = Clock::now();
    f();
    times_.push_back({n, begin, Clock::now()});
  }

  // 1: bulk OUT, 64 × 4 KiB in the sink's pattern, queued 16 deep.
  void case1() {
    const auto data = mod63(4096, 512);
    for (int round = 0; round < 4; ++round) {
      std::vector<Td> tds;
      for (int i = 0; i < 16; ++i) tds.push_back(d_.normal(slot_, kOut, 4096, data));
      ASSERT_TRUE(d_.wait_all(tds));
      for (auto& t : tds) {
        EXPECT_EQ(t->code, Completion::kSuccess);
        EXPECT_EQ(t->actual, 4096u);
      }
    }
  }
  // 2: bulk IN, 64 × 4 KiB, the source's pattern checked; TDs span two TRBs.
  void case2() {
    const auto want = mod63(4096, 512);
    for (int round = 0; round < 4; ++round) {
      std::vector<Td> tds;
      for (int i = 0; i < 16; ++i)
        tds.push_back(d_.normal(slot_, kIn, 4096, {}, true, /*trb_bytes=*/3000));
      ASSERT_TRUE(d_.wait_all(tds));
      for (auto& t : tds) {
        EXPECT_EQ(t->code, Completion::kSuccess);
        EXPECT_EQ(t->data, want);
      }
    }
  }
  // 9: chapter 9 requests a configured device answers.
  void case9() {
    for (int i = 0; i < 4; ++i) {
      auto [c1, dev] = d_.control_sync(slot_, {0x80, 6, 0x0100, 0, 18});
      EXPECT_EQ(c1, Completion::kSuccess);
      ASSERT_EQ(dev.size(), 18u);
      EXPECT_EQ(dev[1], 1);
      auto [c2, cfg] = d_.control_sync(slot_, {0x80, 8, 0, 0, 1});  // GET_CONFIGURATION
      EXPECT_EQ(c2, Completion::kSuccess);
      EXPECT_EQ(cfg, std::vector<uint8_t>{3});
      auto [c3, alt] = d_.control_sync(slot_, {0x81, 10, 0, 0, 1});  // GET_INTERFACE
      EXPECT_EQ(c3, Completion::kSuccess);
      EXPECT_EQ(alt, std::vector<uint8_t>{0});
      for (auto [type, index] : {std::pair{0x80, 0}, {0x81, 0}, {0x82, 0x81}, {0x82, 0x01}}) {
        auto [c, st] = d_.control_sync(
            slot_, {static_cast<uint8_t>(type), 0, 0, static_cast<uint16_t>(index), 2});
        EXPECT_EQ(c, Completion::kSuccess);
        EXPECT_EQ(st.size(), 2u);
      }
      auto [c4, lang] = d_.control_sync(slot_, {0x80, 6, 0x0300, 0, 255});  // string 0
      EXPECT_EQ(c4, Completion::kShortPacket);
      ASSERT_GE(lang.size(), 4u);
      EXPECT_EQ(lang[1], 3);
    }
  }
  // 10: control requests queued at once (one doorbell), some of which stall; after a stall the
  // driver resets EP0 and goes on with the next TD, and every request completes in order.
  void case10() {
    struct Req {
      usb::SetupPacket setup;
      bool stalls;
    };
    const std::vector<Req> reqs = {
        {{0x80, 6, 0x0100, 0, 18}, false}, {{0x80, 0, 0, 0, 2}, false},
        {{0x80, 6, 0x4200, 0, 8}, true},   {{0x82, 0, 0, 0x81, 2}, false},
        {{0x80, 6, 0x0200, 0, 9}, false},  {{0x82, 0, 0, 0x8f, 2}, true},
        {{0x81, 10, 0, 0, 1}, false},      {{0x80, 6, 0x0300, 0, 4}, false},
        {{0x80, 8, 0, 0, 1}, false},       {{0x80, 6, 0x0f00, 0, 5}, true},
        {{0x80, 6, 0x0100, 0, 18}, false}, {{0x82, 0, 0, 0x01, 2}, false},
    };
    for (int round = 0; round < 3; ++round) {
      std::vector<Td> tds;
      for (const auto& r : reqs) tds.push_back(d_.control(slot_, r.setup, {}, false));
      d_.doorbell(slot_, 1);
      for (size_t i = 0; i < tds.size(); ++i) {
        ASSERT_TRUE(d_.wait(tds[i])) << "request " << i;
        if (reqs[i].stalls) {
          EXPECT_EQ(tds[i]->code, Completion::kStallError) << "request " << i;
          ASSERT_EQ(d_.recover_halt(slot_, 1), Completion::kSuccess);
        } else {
          EXPECT_TRUE(tds[i]->code == Completion::kSuccess ||
                      tds[i]->code == Completion::kShortPacket)
              << "request " << i << " code " << static_cast<int>(tds[i]->code);
        }
      }
    }
  }
  // 13: SET_FEATURE(ENDPOINT_HALT) on each bulk endpoint: GET_STATUS says halted, a TD stalls
  // (Stall Error, endpoint Halted), Reset Endpoint + Set TR Dequeue, CLEAR_FEATURE(HALT),
  // GET_STATUS clear, the next TD passes.
  void case13() {
    for (uint8_t ep : {uint8_t{0x81}, uint8_t{0x01}}) {
      SCOPED_TRACE(ep);
      const uint8_t dci = dci_of(ep);
      auto status = [&] {
        auto [c, st] = d_.control_sync(slot_, {0x82, 0, 0, ep, 2});
        EXPECT_EQ(c, Completion::kSuccess);
        return st.size() == 2 ? st[0] : 0xff;
      };
      EXPECT_EQ(status(), 0);
      ASSERT_EQ(d_.control_sync(slot_, {0x02, 3, 0, ep, 0}).first, Completion::kSuccess);
      EXPECT_EQ(status(), 1);
      const auto data = mod63(512, 512);
      Td t = d_.normal(slot_, dci, 512, data);
      ASSERT_TRUE(d_.wait(t));
      EXPECT_EQ(t->code, Completion::kStallError);
      ASSERT_EQ(d_.recover_halt(slot_, dci), Completion::kSuccess);
      ASSERT_EQ(d_.control_sync(slot_, {0x02, 1, 0, ep, 0}).first, Completion::kSuccess);
      EXPECT_EQ(status(), 0);
      Td again = d_.normal(slot_, dci, 512, data);
      ASSERT_TRUE(d_.wait(again));
      EXPECT_EQ(again->code, Completion::kSuccess);
    }
  }
  // 14: vendor control writes and read-backs of varying lengths (Gadget Zero's 0x5b / 0x5c).
  void case14() {
    for (uint16_t len : {1, 7, 63, 64, 65, 255, 256, 1000, 4096}) {
      std::vector<uint8_t> data(len);
      for (size_t i = 0; i < len; ++i) data[i] = static_cast<uint8_t>(i * 7 + len + name_.size());
      ASSERT_EQ(d_.control_sync(slot_, {0x40, 0x5b, 0, 0, len}, data).first, Completion::kSuccess);
      auto [c, back] = d_.control_sync(slot_, {0xc0, 0x5c, 0, 0, len});
      EXPECT_EQ(c, Completion::kSuccess);
      EXPECT_EQ(back, data) << len << " bytes";
    }
  }
  // Cancelling: TDs queued without a doorbell are taken back with Stop Endpoint + Set TR Dequeue;
  // a later TD passes and none of the cancelled ones ran.
  void cancel() {
    std::vector<Td> tds;
    for (int i = 0; i < 4; ++i) tds.push_back(d_.normal(slot_, kIn, 512, {}, false));
    ASSERT_EQ(d_.stop_endpoint(slot_, kIn), Completion::kSuccess);
    ASSERT_EQ(d_.skip_queued(slot_, kIn), Completion::kSuccess);
    for (auto& t : tds) {
      EXPECT_TRUE(t->done);
      EXPECT_TRUE(t->events.empty()) << "a cancelled TD produced an event";
    }
    Td next = d_.normal(slot_, kIn, 512);
    ASSERT_TRUE(d_.wait(next));
    EXPECT_EQ(next->code, Completion::kSuccess);
  }
  // 15/16: iso endpoints of alternate setting 1 (Configure Endpoint, then SET_INTERFACE), 32
  // Isoch TDs of one packet each per direction; iso IN data in the source's pattern.
  void case15() {
    auto alt1 = XhciRefDriver::endpoints_of(config_, 0, 1);
    std::vector<usb::EndpointDescriptor> iso;
    for (auto& e : alt1)
      if ((e.attributes & 3) == 1) iso.push_back(e);
    ASSERT_EQ(iso.size(), 2u);
    ASSERT_EQ(d_.configure(slot_, iso), Completion::kSuccess);
    ASSERT_EQ(d_.control_sync(slot_, {0x01, 11, 1, 0, 0}).first, Completion::kSuccess);
    iso_packet_ = iso[0].max_packet() * iso[0].hs_transactions();
    const auto data = mod63(iso_packet_, iso[0].max_packet());
    std::vector<Td> tds;
    for (int i = 0; i < 32; ++i) tds.push_back(d_.isoch(slot_, kIsoOut, iso_packet_, data));
    ASSERT_TRUE(d_.wait_all(tds));
    for (auto& t : tds) EXPECT_EQ(t->code, Completion::kSuccess);
  }
  void case16() {
    ASSERT_GT(iso_packet_, 0u);
    std::vector<Td> tds;
    for (int i = 0; i < 32; ++i) tds.push_back(d_.isoch(slot_, kIsoIn, iso_packet_));
    ASSERT_TRUE(d_.wait_all(tds));
    const auto want = mod63(iso_packet_, 1024);
    for (auto& t : tds) {
      EXPECT_EQ(t->code, Completion::kSuccess);
      EXPECT_EQ(t->data, want);
    }
  }

  XhciRefDriver d_;
  std::string name_;
  std::latch& ready_;
  bool configured_ = false;
  uint8_t slot_ = 0;
  std::vector<uint8_t> config_;
  uint32_t iso_packet_ = 0;
  std::vector<CaseTime> times_;
};

devices::GadgetZeroOptions pattern1() {
  devices::GadgetZeroOptions o;
  o.pattern = 1;
  return o;
}

TEST(XhciUsbtest, TwoVmsRunTheMatrixAtOnceOnTheirOwnRegisterSets) {
  LoopThread loop;
  Controller controller([&](std::function<void()> f) { loop.post(std::move(f)); },
                        [] { return Clock::now(); });
  // The devices live on the controller's loop, as every usb::Device lives on its loop.
  std::unique_ptr<devices::GadgetZero> gz1, gz2;
  loop.call([&] {
    gz1 = std::make_unique<devices::GadgetZero>(pattern1());
    gz2 = std::make_unique<devices::GadgetZero>(pattern1());
  });
  {
    VmTarget vm1(loop, controller, "vm1"), vm2(loop, controller, "vm2");
    loop.call([&] {
      controller.xhci(vm1.id())->attach(1, *gz1);
      controller.xhci(vm2.id())->attach(1, *gz2);
    });
    std::latch ready(2);
    Matrix m1(vm1, "vm1", ready), m2(vm2, "vm2", ready);
    std::thread t1([&] { m1.run(); });
    std::thread t2([&] { m2.run(); });
    t1.join();
    t2.join();
    ASSERT_EQ(m1.times().size(), 9u);
    ASSERT_EQ(m2.times().size(), 9u);
    // Both VMs were at the controller at the same time: their runs overlap.
    const auto overlap = std::min(m1.times().back().end, m2.times().back().end) -
                         std::max(m1.times().front().begin, m2.times().front().begin);
    EXPECT_GT(overlap.count(), 0) << "the two VMs' matrices did not overlap";
    auto [s1, s2] = loop.call([&] {
      return std::pair{*controller.stats(vm1.id()), *controller.stats(vm2.id())};
    });
    EXPECT_GT(s1.tds, 300u);
    EXPECT_GT(s2.tds, 300u);
    loop.call([&] {
      controller.xhci(vm1.id())->detach(1);
      controller.xhci(vm2.id())->detach(1);
    });
  }
  loop.call([&] {
    gz1.reset();
    gz2.reset();
  });
}

}  // namespace
}  // namespace hc::xhci::testing
