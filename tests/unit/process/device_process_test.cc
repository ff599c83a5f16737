// DeviceProcess against the real vusb-devhost: a camera in its own seccomp-restricted process,
// imported over a socketpair, killed with SIGKILL and offered again; and the seccomp policy
// killing a child that makes a forbidden call.
#include "devices/process/device_process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <fstream>
#include <string>

#include "usb/core/transfer.h"

namespace devices {
namespace {

using std::chrono::milliseconds;

// Runs the loop until `done()` or `secs` pass.
template <typename Pred>
bool run_until(boost::asio::io_context& io, Pred done, double secs = 10) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(secs);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.run_for(milliseconds(20));
    io.restart();
  }
  return done();
}

std::string proc_status_field(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return line.substr(field.size() + 1);
  return "";
}

DeviceProcess::Options camera() {
  DeviceProcess::Options o;
  o.device.type = "uvc-camera";
  o.program = VUSB_DEVHOST_PATH;
  o.log_level = "warn";
  return o;
}

TEST(DeviceProcess, ACameraInItsOwnProcessIsImportedKilledAndOfferedAgain) {
  boost::asio::io_context io;
  std::vector<usb::Device*> changes;
  DeviceProcess proc(io, camera(), [&](usb::Device* d) { changes.push_back(d); });
  proc.start();
  ASSERT_TRUE(run_until(io, [&] { return changes.size() == 1; }));
  ASSERT_NE(changes[0], nullptr);
  EXPECT_EQ(changes[0]->descriptors().device.vendor_id, 0x1d6b);
  EXPECT_EQ(changes[0]->descriptors().device.product_id, 0x0102);
  const pid_t first = proc.status().pid;
  ASSERT_GT(first, 0);
  // Restricted: seccomp filter mode, and no way to reach the parent's files.
  EXPECT_NE(proc_status_field(first, "Seccomp").find('2'), std::string::npos);
  // Confined: few descriptors, no core dumps, and no longer root when started as root.
  std::ifstream limits("/proc/" + std::to_string(first) + "/limits");
  std::string text((std::istreambuf_iterator<char>(limits)), {});
  EXPECT_NE(text.find("Max open files            32"), std::string::npos) << text;
  EXPECT_NE(text.find("Max core file size        0"), std::string::npos) << text;
  if (::geteuid() == 0) {
    const std::string uid = proc_status_field(first, "Uid");
    EXPECT_EQ(uid.find("\t0\t"), std::string::npos) << "still root: Uid " << uid;
    EXPECT_NE(uid.find("65534"), std::string::npos) << uid;
  }

  // A control request through the process.
  auto t = usb::Transfer::control(0x80, {0x80, usb::request::kGetDescriptor, 0x0302, 0x0409, 64});
  bool done = false;
  t->set_completion([&](usb::Transfer& x) {
    done = true;
    EXPECT_EQ(x.status(), usb::Status::kOk);
    EXPECT_GT(x.actual_length(), 2u);  // "vusb Camera"
  });
  changes[0]->submit(*t);
  ASSERT_TRUE(run_until(io, [&] { return done; }));

  // SIGKILL: the device goes away, then a new process offers it again.
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(run_until(io, [&] { return changes.size() == 3; }));
  EXPECT_EQ(changes[1], nullptr);
  ASSERT_NE(changes[2], nullptr);
  EXPECT_EQ(proc.status().starts, 2u);
  EXPECT_NE(proc.status().pid, first);
  EXPECT_NE(proc.status().last_exit.find("signal 9"), std::string::npos) << proc.status().last_exit;
  EXPECT_EQ(changes[2]->descriptors().device.vendor_id, 0x1d6b);
}

TEST(DeviceProcess, AProgramThatCannotStartIsRetriedNotFatal) {
  boost::asio::io_context io;
  auto o = camera();
  o.program = "/nonexistent/vusb-devhost";
  int changes = 0;
  DeviceProcess proc(io, o, [&](usb::Device*) { ++changes; });
  proc.start();
  io.run_for(milliseconds(300));
  EXPECT_EQ(changes, 0);
  EXPECT_EQ(proc.status().pid, 0);
}

TEST(DeviceProcess, AnUnknownDeviceTypeEndsTheChildWithAnErrorStatus) {
  boost::asio::io_context io;
  auto o = camera();
  o.device.type = "toaster";
  DeviceProcess proc(io, o, [](usb::Device*) {});
  proc.start();
  ASSERT_TRUE(run_until(io, [&] { return !proc.status().last_exit.empty(); }));
  EXPECT_NE(proc.status().last_exit.find("status"), std::string::npos) << proc.status().last_exit;
}

TEST(Seccomp, AForbiddenSystemCallKillsTheDeviceProcess) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(fds[1], 3);
    ::execl(VUSB_DEVHOST_PATH, "vusb-devhost", "--type", "uvc-camera", "--fd", "3", "--log-level",
            "error", "--seccomp-selftest", nullptr);
    ::_exit(127);
  }
  ::close(fds[1]);
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  ::close(fds[0]);
  ASSERT_TRUE(WIFSIGNALED(st)) << DeviceProcess::describe_exit(st);
  EXPECT_EQ(WTERMSIG(st), SIGSYS);
  EXPECT_NE(DeviceProcess::describe_exit(st).find("seccomp"), std::string::npos);
}

}  // namespace
}  // namespace devices
