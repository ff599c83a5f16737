// vusb-bench xhci: in-process throughput of Gadget Zero bulk IN through our xHCI (hc::Controller
// with one VM function), driven by the register-level reference driver the tests use: 32 TDs
// queued per doorbell, waited for, again. Reports bytes/s, TDs/s, events/s and the cost per TRB.
// Baselines in the same run: the same transfers submitted straight to Gadget Zero (what the
// device costs without a controller) and a memcpy of the same bytes (the data-copy floor).
#include <benchmark/benchmark.h>

#include <cstring>
#include <deque>
#include <functional>
#include <memory>

#include "devices/emulated/gadget_zero.h"
#include "host-controller/controller.h"
#include "tests/unit/host-controller/xhci_ref_driver.h"
#include "usb/core/transfer.h"

namespace {

using hc::xhci::testing::Td;
using hc::xhci::testing::XhciRefDriver;

constexpr uint64_t kRamBase = 0x100000;
constexpr size_t kRamSize = 48u << 20;
constexpr int kTdsPerRound = 32;

struct NullIrq : hc::IrqLine {
  void set_level(bool) override {}
  void message(uint16_t) override {}
};

// One VM on a controller whose loop is a queue the driver runs while it waits.
class Bench : public hc::xhci::testing::XhciTarget {
 public:
  Bench()
      : ram_(kRamSize, kRamBase),
        controller_([this](std::function<void()> f) { tasks_.push_back(std::move(f)); },
                    [] { return std::chrono::steady_clock::now(); }) {
    vm_ = controller_.add_vm("bench", ram_, irq_);
    controller_.xhci(vm_)->attach(1, gz_);
    XhciRefDriver::Options o;
    o.ram_base = kRamBase;
    o.ram_size = kRamSize;
    o.max_td_bytes = 64 * 1024;
    o.buffers_per_endpoint = kTdsPerRound;
    o.transfer_trbs = 1024;  // 32 TDs of up to 16 TRBs in flight
    o.zero_allocations = false;
    o.copy_in_data = false;  // a guest's driver leaves the data where the controller put it
    driver_ = std::make_unique<XhciRefDriver>(*this, o);
    ok_ = driver_->start();
    auto e = ok_ ? driver_->enumerate(1) : std::nullopt;
    ok_ = e.has_value();
    if (!ok_) return;
    slot_ = e->slot;
    ok_ = driver_->configure(slot_, XhciRefDriver::endpoints_of(e->configuration, 0, 0)) ==
              hc::xhci::Completion::kSuccess &&
          driver_->control_sync(slot_, {0x00, 9, 3, 0, 0}).first == hc::xhci::Completion::kSuccess;
  }
  uint32_t read32(uint32_t off) override {
    return static_cast<uint32_t>(controller_.mmio_read(vm_, off, 4));
  }
  void write32(uint32_t off, uint32_t v) override { controller_.mmio_write(vm_, off, v, 4); }
  hc::GuestMemory& memory() override { return ram_; }
  void idle() override {
    while (!tasks_.empty()) {
      auto f = std::move(tasks_.front());
      tasks_.pop_front();
      f();
    }
  }
  bool ok() const { return ok_; }
  XhciRefDriver& driver() { return *driver_; }
  uint8_t slot() const { return slot_; }

 private:
  hc::InMemoryGuestMemory ram_;
  NullIrq irq_;
  std::deque<std::function<void()>> tasks_;
  devices::GadgetZero gz_{devices::GadgetZeroOptions{}};
  hc::Controller controller_;
  hc::Controller::VmId vm_ = 0;
  std::unique_ptr<XhciRefDriver> driver_;
  uint8_t slot_ = 0;
  bool ok_ = false;
};

// args: TD bytes, bytes per TRB.
void BM_XhciBulkIn(benchmark::State& state) {
  const auto td_bytes = static_cast<uint32_t>(state.range(0));
  const auto trb_bytes = static_cast<uint32_t>(state.range(1));
  Bench b;
  if (!b.ok()) {
    state.SkipWithError("enumeration through the xHCI failed");
    return;
  }
  XhciRefDriver& d = b.driver();
  const uint64_t events_before = d.events_seen();
  uint64_t tds = 0;
  for (auto _ : state) {
    std::vector<Td> round;
    round.reserve(kTdsPerRound);
    for (int i = 0; i < kTdsPerRound; ++i)
      round.push_back(d.normal(b.slot(), 3, td_bytes, {}, false, trb_bytes));
    d.doorbell(b.slot(), 3);
    if (!d.wait_all(round)) {
      state.SkipWithError("a TD did not complete");
      return;
    }
    tds += kTdsPerRound;
  }
  const uint64_t trbs = tds * ((td_bytes + trb_bytes - 1) / trb_bytes);
  state.SetBytesProcessed(static_cast<int64_t>(tds * td_bytes));
  state.SetItemsProcessed(static_cast<int64_t>(tds));
  state.counters["events/s"] =
      benchmark::Counter(double(d.events_seen() - events_before), benchmark::Counter::kIsRate);
  state.counters["ns/TRB"] =
      benchmark::Counter(double(trbs), benchmark::Counter::kIsRate | benchmark::Counter::kInvert,
                         benchmark::Counter::OneK::kIs1000);
}

// The same transfers straight into Gadget Zero: the device's own cost.
void BM_GadgetZeroDirect(benchmark::State& state) {
  const auto td_bytes = static_cast<uint32_t>(state.range(0));
  devices::GadgetZero gz{devices::GadgetZeroOptions{}};
  bool ok = false;
  gz.set_configuration(3, [&](usb::Status s) { ok = s == usb::Status::kOk; });
  if (!ok) {
    state.SkipWithError("SET_CONFIGURATION failed");
    return;
  }
  usb::Transfer t(0x81, usb::TransferType::kBulk, td_bytes);
  // "Guest memory" 64 bytes past a page boundary: a copy between two page-aligned buffers
  // would measure 4 KiB store-forwarding aliasing, not the device.
  std::vector<uint8_t> guest_ram(td_bytes + 4096 + 64);
  uint8_t* guest = guest_ram.data() + 64;
  for (auto _ : state) {
    bool done = false;
    t.set_completion([&](usb::Transfer&) { done = true; });
    gz.submit(t);
    if (!done) {
      state.SkipWithError("Gadget Zero did not complete inline");
      return;
    }
    std::memcpy(guest, t.data().data(), t.actual_length());  // into "guest memory"
    benchmark::DoNotOptimize(guest);
    t.rearm();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * td_bytes);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_MemcpyFloor(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> a(n + 128, 1), b(n + 128);
  for (auto _ : state) {
    std::memcpy(b.data() + 64, a.data(), n);  // not 4 KiB-aliased
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
}

BENCHMARK(BM_XhciBulkIn)
    ->Args({512, 512})
    ->Args({4096, 4096})
    ->Args({65536, 65536})
    ->Args({65536, 4096})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_GadgetZeroDirect)->Arg(512)->Arg(4096)->Arg(65536)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MemcpyFloor)->Arg(512)->Arg(4096)->Arg(65536);

}  // namespace
