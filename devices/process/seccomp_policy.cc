#include "devices/process/seccomp_policy.h"

#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "devices/emulated/test_pattern.h"

namespace devices {

namespace {

// What Boost.Asio's epoll reactor, glibc's allocator, libstdc++, spdlog (stderr) and the device
// models call after start-up.
constexpr int kAllowed[] = {
    // the socket to the parent, stderr
    SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(recvfrom),
    SCMP_SYS(recvmsg), SCMP_SYS(sendto), SCMP_SYS(sendmsg), SCMP_SYS(shutdown), SCMP_SYS(close),
    SCMP_SYS(fcntl),
    // the loop
    SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_ctl), SCMP_SYS(timerfd_settime),
    SCMP_SYS(timerfd_gettime), SCMP_SYS(poll), SCMP_SYS(ppoll),
    // time
    SCMP_SYS(clock_gettime), SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep), SCMP_SYS(gettimeofday),
    // memory, threads' futexes
    SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(brk), SCMP_SYS(madvise),
    SCMP_SYS(mprotect), SCMP_SYS(futex), SCMP_SYS(sched_yield),
    // signals and exit
    SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigaction), SCMP_SYS(getpid),
    SCMP_SYS(gettid), SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(restart_syscall),
    SCMP_SYS(getrandom)};
// Not allowed, though they once were: newfstatat and fstat (newfstatat takes a path: it would let
// a compromised device probe the file system). stdio's one fstat happens in prepare_for_seccomp.

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
// Sanitizer builds only (make asan): the AddressSanitizer runtime probes whether memory is
// readable through a pipe, and when it reports it reads /proc/self/maps and its own path and
// may switch to an alternate signal stack. Without these a report would die of SIGSYS instead.
constexpr int kSanitizerRuntime[] = {
    SCMP_SYS(pipe2),     SCMP_SYS(pipe),        SCMP_SYS(openat),
    SCMP_SYS(readlink),  SCMP_SYS(sigaltstack), SCMP_SYS(prctl),
    SCMP_SYS(getrlimit), SCMP_SYS(prlimit64),   SCMP_SYS(sched_getaffinity),
    SCMP_SYS(lseek),     SCMP_SYS(getppid)};
#endif

struct Filter {
  scmp_filter_ctx ctx;
  ~Filter() { seccomp_release(ctx); }
};

usb::Result<void> fail(const char* what, int rc) {
  return usb::Error::make(usb::Error::Code::kIo,
                          std::string("seccomp: ") + what + ": " + std::strerror(-rc));
}

}  // namespace

void prepare_for_seccomp() {
  ::tzset();  // the first localtime_r would open /etc/localtime
  time_t t = ::time(nullptr);
  struct tm tm_buf {};
  ::localtime_r(&t, &tm_buf);
  // A buffer of our own: glibc would otherwise probe the descriptor (isatty) at the first write.
  static char stdout_buffer[BUFSIZ];
  std::setvbuf(stdout, stdout_buffer, _IOLBF, sizeof stdout_buffer);
  // libjpeg-turbo probes the CPU (on aarch64 by reading /proc/cpuinfo) at its first encode.
  std::vector<uint8_t> grey(16 * 16 * 2, 128);
  (void)encode_jpeg(grey, 16, 16, 75);
}

usb::Result<void> install_device_process_seccomp() {
  Filter f{seccomp_init(SCMP_ACT_KILL_PROCESS)};
  if (!f.ctx) return usb::Error::make(usb::Error::Code::kIo, "seccomp: seccomp_init failed");
  for (int nr : kAllowed) {
    if (int rc = seccomp_rule_add(f.ctx, SCMP_ACT_ALLOW, nr, 0); rc < 0) {
      return fail("rule", rc);
    }
  }
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  for (int nr : kSanitizerRuntime) {
    if (int rc = seccomp_rule_add(f.ctx, SCMP_ACT_ALLOW, nr, 0); rc < 0) {
      return fail("sanitizer rule", rc);
    }
  }
#endif
  // ioctl only to make a descriptor (non-)blocking, as Asio does.
  scmp_arg_cmp fionbio{};
  fionbio.arg = 1;
  fionbio.op = SCMP_CMP_EQ;
  fionbio.datum_a = FIONBIO;
  fionbio.datum_b = 0;
  if (int rc = seccomp_rule_add(f.ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, fionbio); rc < 0) {
    return fail("ioctl rule", rc);
  }
  // abort() raises SIGABRT at its own thread: tgkill, on this process only.
  scmp_arg_cmp own{};
  own.arg = 0;
  own.op = SCMP_CMP_EQ;
  own.datum_a = static_cast<scmp_datum_t>(::getpid());
  own.datum_b = 0;
  if (int rc = seccomp_rule_add(f.ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1, own); rc < 0) {
    return fail("tgkill rule", rc);
  }
  if (int rc = seccomp_attr_set(f.ctx, SCMP_FLTATR_CTL_NNP, 1); rc < 0) return fail("nnp", rc);
  if (int rc = seccomp_load(f.ctx); rc < 0) return fail("load", rc);
  return {};
}

}  // namespace devices
