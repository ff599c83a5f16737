// DeviceProcess: an emulated device run in a process of its own (vusb-devhost), started on demand,
// watched and restarted — the "device VM" of the seed documents at process granularity. The parent
// (vusbd) talks to it over a socketpair with the USB/IP protocol and sees it as a remote device
// (UsbipRemoteDevice). The child restricts itself with seccomp and dies with its parent.
//
// When the child dies (a crash, SIGKILL, a bug caught by seccomp) the socket closes: in-flight
// transfers complete with kNoDevice, the owner is told the device is gone (on_change(nullptr)),
// the exit status is reaped and logged, and a new child is started after a backoff (200 ms,
// doubling to 5 s; back to 200 ms once a child lived 10 s) and offered again (on_change(device)).
//
// Owned by vusbd's device registry; lives on vusbd's loop. Children are started with posix_spawn
// (safe in a multi-threaded parent).
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "devices/emulated/emulated_factory.h"
#include "devices/remote/usbip_remote_device.h"

namespace devices {

class DeviceProcess {
 public:
  using OnChange = std::function<void(usb::Device*)>;
  struct Options {
    EmulatedSpec device;
    std::string program;  // vusb-devhost's path (see default_devhost_path)
    bool seccomp = true;
    std::string log_level = "info";
  };
  struct Status {
    pid_t pid = 0;          // the running child, 0 while none
    uint64_t starts = 0;    // children started
    std::string last_exit;  // how the previous child ended ("killed by signal 9", ...)
  };

  DeviceProcess(boost::asio::io_context& io, Options options, OnChange on_change);
  ~DeviceProcess();  // kills the child (SIGKILL) and reaps it

  void start();
  usb::Device* device() const { return device_.get(); }
  const Status& status() const { return status_; }
  std::string describe() const { return "process:" + options_.device.type; }

  // vusb-devhost next to the running program (/proc/self/exe), unless $VUSB_DEVHOST names one.
  static std::string default_devhost_path();
  // "exited with status 2", "killed by signal 9 (Killed)".
  static std::string describe_exit(int wait_status);

 private:
  void spawn();
  void on_child_gone(const std::string& reason);
  void reap(int attempts_left);
  void restart_later();

  boost::asio::io_context& io_;
  Options options_;
  OnChange on_change_;
  std::unique_ptr<UsbipRemoteDevice> device_;
  boost::asio::steady_timer timer_;
  boost::asio::steady_timer import_deadline_;  // a child that never answers the import is killed
  std::chrono::milliseconds backoff_{200};
  std::chrono::steady_clock::time_point started_at_{};
  Status status_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace devices
