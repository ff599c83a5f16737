// Test harness for the shared controller: a loop thread that owns hc::Controller (MMIO, doorbells
// and the pump run there, as on vusbd's loop), guest RAM that a VM's driver thread and the loop
// thread may touch at once (a mutex per access, as a VMM's RAM is shared between vCPUs and
// device models), an IRQ line that wakes the VM's driver, and the XhciTarget a reference driver
// programs — each VM's driver on a thread of its own, like a vCPU.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "host-controller/controller.h"
#include "tests/unit/host-controller/xhci_ref_driver.h"

namespace hc::testing {

class LoopThread {
 public:
  LoopThread() : thread_([this] { run(); }) {}
  ~LoopThread() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void post(std::function<void()> f) {
    {
      std::lock_guard lock(mu_);
      tasks_.push_back(std::move(f));
    }
    cv_.notify_all();
  }
  // Runs `f` on the loop after `delay` (the controller's Timer).
  void post_after(std::chrono::nanoseconds delay, std::function<void()> f) {
    {
      std::lock_guard lock(mu_);
      timers_.emplace(std::chrono::steady_clock::now() + delay, std::move(f));
    }
    cv_.notify_all();
  }
  // Runs `f` on the loop and waits for its result.
  template <typename F>
  auto call(F f) -> decltype(f()) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    post([&task] { task(); });
    return result.get();
  }
  bool on_loop() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  void run() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock lock(mu_);
        for (;;) {
          if (!tasks_.empty()) {
            f = std::move(tasks_.front());
            tasks_.pop_front();
            break;
          }
          if (!timers_.empty() && timers_.begin()->first <= std::chrono::steady_clock::now()) {
            f = std::move(timers_.begin()->second);
            timers_.erase(timers_.begin());
            break;
          }
          if (stop_) return;
          if (timers_.empty())
            cv_.wait(lock);
          else
            cv_.wait_until(lock, timers_.begin()->first);
        }
      }
      f();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> timers_;
  bool stop_ = false;
  std::thread thread_;
};

class SharedRam : public GuestMemory {
 public:
  SharedRam(size_t size, uint64_t base) : ram_(size, base) {}
  bool read(uint64_t addr, std::span<uint8_t> out) const override {
    std::lock_guard lock(mu_);
    return ram_.read(addr, out);
  }
  bool write(uint64_t addr, std::span<const uint8_t> in) override {
    std::lock_guard lock(mu_);
    return ram_.write(addr, in);
  }

 private:
  mutable std::mutex mu_;
  InMemoryGuestMemory ram_;
};

class WakingIrq : public IrqLine {
 public:
  void set_level(bool asserted) override {
    if (asserted) kick();
  }
  void message(uint16_t) override { kick(); }
  // Waits up to `max` for an interrupt raised since the last wait.
  void wait(std::chrono::microseconds max) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, max, [&] { return raised_; });
    raised_ = false;
  }

 private:
  void kick() {
    {
      std::lock_guard lock(mu_);
      raised_ = true;
    }
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool raised_ = false;
};

// One VM of the shared controller, as its driver sees it: RAM, IRQ, MMIO through the loop.
class VmTarget : public xhci::testing::XhciTarget {
 public:
  static constexpr uint64_t kRamBase = 0x100000;
  static constexpr size_t kRamSize = 24u << 20;
  VmTarget(LoopThread& loop, Controller& controller, std::string name, uint32_t weight = 1,
           Controller::Model model = Controller::Model::kXhci)
      : loop_(loop), controller_(controller), ram_(kRamSize, kRamBase) {
    id_ = loop_.call([&] { return controller_.add_vm(name, ram_, irq_, weight, model); });
  }
  ~VmTarget() override {
    loop_.call([&] { controller_.remove_vm(id_); });
  }
  uint32_t read32(uint32_t offset) override {
    return loop_.call([&] { return static_cast<uint32_t>(controller_.mmio_read(id_, offset, 4)); });
  }
  void write32(uint32_t offset, uint32_t value) override {
    loop_.call([&] { controller_.mmio_write(id_, offset, value, 4); });
  }
  GuestMemory& memory() override { return ram_; }
  void idle() override { irq_.wait(std::chrono::microseconds(500)); }
  Controller::VmId id() const { return id_; }
  static xhci::testing::XhciRefDriver::Options driver_options() {
    xhci::testing::XhciRefDriver::Options o;
    o.ram_base = kRamBase;
    o.ram_size = kRamSize;
    return o;
  }

 private:
  LoopThread& loop_;
  Controller& controller_;
  SharedRam ram_;
  WakingIrq irq_;
  Controller::VmId id_ = 0;
};

}  // namespace hc::testing
