// vusb-devhost: one emulated device in a process of its own (devices/process). Started by vusbd
// (DeviceProcess) with the device's type and options and one end of a socketpair as fd 3; not
// meant to be run by hand except to debug a device model.
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>

#include "devices/process/device_host.h"

#if defined(__SANITIZE_ADDRESS__)
// Sanitizer builds: LeakSanitizer's exit-time check stops the process's threads with ptrace,
// which the seccomp filter forbids (and must); the device code is leak-checked in process by
// the unit tests instead.
extern "C" const char* __asan_default_options() {
  return "detect_leaks=0";
}
#endif

int main(int argc, char** argv) {
  devices::DeviceHostOptions o;
  std::string log_level = "info";
  pid_t parent = 0;
  CLI::App app{
      "vusb-devhost: one emulated device in its own process, served to the parent over "
      "a socketpair (USB/IP), restricted with seccomp",
      "vusb-devhost"};
  app.add_option("--type", o.device.type, "Device type (gadget-zero, uvc-camera)")->required();
  app.add_option("--options", o.device.options, "The type's options, key=value,...");
  app.add_option("--fd", o.fd, "The connected stream to the parent")->default_val(3);
  app.add_option("--parent", parent, "The parent's pid: exit if it is not (or no longer) ours");
  app.add_flag("!--no-seccomp", o.seccomp, "Do not restrict system calls (debugging only)");
  app.add_flag("--seccomp-selftest", o.seccomp_selftest,
               "Make a forbidden system call once restricted (the process must die of SIGSYS)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %l vusb-devhost[%P]: %v");
  // Die with the parent; if it already died between fork and here, leave now.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (parent != 0 && ::getppid() != parent) return 1;
  std::signal(SIGPIPE, SIG_IGN);
  return devices::run_device_host(o);
}
