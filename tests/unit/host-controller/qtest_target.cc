#include "tests/unit/host-controller/qtest_target.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

extern char** environ;

namespace hc::xhci::testing {

namespace {

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace

QtestTarget::QtestTarget(const std::vector<std::string>& extra_devices) {
  char tmpl[] = "/tmp/vusb-qtest-XXXXXX";
  if (!mkdtemp(tmpl)) {
    error_ = "mkdtemp failed";
    return;
  }
  dir_ = tmpl;
  const std::string path = dir_ + "/qtest.sock";
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listener, 1) != 0) {
    error_ = "cannot listen on " + path;
    if (listener >= 0) close(listener);
    return;
  }
  std::vector<std::string> args = {"qemu-system-x86_64",
                                   "-machine",
                                   "q35",
                                   "-S",
                                   "-m",
                                   "256M",
                                   "-display",
                                   "none",
                                   "-nodefaults",
                                   "-serial",
                                   "none",
                                   "-monitor",
                                   "none",
                                   "-qtest",
                                   "unix:" + path,
                                   "-qtest-log",
                                   "/dev/null",
                                   "-device",
                                   "qemu-xhci,id=xhci"};
  for (const auto& d : extra_devices) {
    args.push_back("-device");
    args.push_back(d);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (posix_spawnp(&pid_, argv[0], &fa, nullptr, argv.data(), environ) != 0) {
    pid_ = -1;
    error_ = "cannot start qemu-system-x86_64 (scripts/deps.sh installs qemu-system-x86)";
  }
  posix_spawn_file_actions_destroy(&fa);
  if (pid_ > 0) {
    pollfd p{listener, POLLIN, 0};
    if (poll(&p, 1, 20000) == 1) fd_ = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd_ < 0) error_ = "qemu did not connect to the qtest socket";
  }
  close(listener);
  if (!ok()) return;
  // Find qemu-xhci (class 0x0c0330) on bus 0, place BAR 0 (64-bit memory) and enable memory
  // space and bus mastering, as firmware does.
  for (uint32_t dev = 0; dev < 32; ++dev) {
    const uint32_t id = pci_read(dev, 0);
    if (id == 0xffffffff || (pci_read(dev, 8) >> 8) != 0x0c0330) continue;
    vendor_ = id & 0xffff;
    device_ = id >> 16;
    pci_write(dev, 0x10, static_cast<uint32_t>(kBar));
    pci_write(dev, 0x14, 0);
    pci_write(dev, 0x04, pci_read(dev, 0x04) | 0x6);
    return;
  }
  error_ = "no xHCI controller on PCI bus 0";
}

QtestTarget::~QtestTarget() {
  if (fd_ >= 0) close(fd_);
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (!dir_.empty()) std::filesystem::remove_all(dir_);
}

std::string QtestTarget::command(const std::string& line) const {
  if (fd_ < 0) return {};
  const std::string out = line + "\n";
  for (size_t sent = 0; sent < out.size();) {
    const ssize_t n = ::write(fd_, out.data() + sent, out.size() - sent);
    if (n <= 0) return {};
    sent += static_cast<size_t>(n);
  }
  for (;;) {
    const size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string reply = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (reply.starts_with("IRQ")) continue;
      return reply;
    }
    char b[65536];
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 20000) != 1) return {};
    const ssize_t n = ::read(fd_, b, sizeof b);
    if (n <= 0) return {};
    buffer_.append(b, static_cast<size_t>(n));
  }
}

uint32_t QtestTarget::pci_read(uint32_t dev, uint32_t reg) const {
  command("outl 0xcf8 " + hex(0x80000000u | (dev << 11) | reg));
  const std::string r = command("inl 0xcfc");
  return r.starts_with("OK ") ? static_cast<uint32_t>(std::strtoul(r.c_str() + 3, nullptr, 16))
                              : 0xffffffff;
}

void QtestTarget::pci_write(uint32_t dev, uint32_t reg, uint32_t value) const {
  command("outl 0xcf8 " + hex(0x80000000u | (dev << 11) | reg));
  command("outl 0xcfc " + hex(value));
}

uint32_t QtestTarget::read32(uint32_t offset) {
  const std::string r = command("readl " + hex(kBar + offset));
  return r.starts_with("OK ") ? static_cast<uint32_t>(std::strtoull(r.c_str() + 3, nullptr, 16))
                              : 0xffffffff;
}

void QtestTarget::write32(uint32_t offset, uint32_t value) {
  command("writel " + hex(kBar + offset) + " " + hex(value));
}

void QtestTarget::idle() {
  std::this_thread::sleep_for(std::chrono::microseconds(200));
}

bool QtestTarget::read(uint64_t addr, std::span<uint8_t> out) const {
  if (out.empty()) return true;
  const std::string r = command("read " + hex(addr) + " " + hex(out.size()));
  if (!r.starts_with("OK 0x") || r.size() != 5 + 2 * out.size()) return false;
  for (size_t i = 0; i < out.size(); ++i) {
    const char pair[3] = {r[5 + 2 * i], r[6 + 2 * i], 0};
    out[i] = static_cast<uint8_t>(std::strtoul(pair, nullptr, 16));
  }
  return true;
}

bool QtestTarget::write(uint64_t addr, std::span<const uint8_t> in) {
  if (in.empty()) return true;
  static const char* digits = "0123456789abcdef";
  std::string line = "write " + hex(addr) + " " + hex(in.size()) + " 0x";
  line.reserve(line.size() + 2 * in.size());
  for (uint8_t b : in) {
    line.push_back(digits[b >> 4]);
    line.push_back(digits[b & 15]);
  }
  return command(line) == "OK";
}

}  // namespace hc::xhci::testing
