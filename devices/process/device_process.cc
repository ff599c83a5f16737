#include "devices/process/device_process.h"
#include "usb/net/socket_stream.h"

#include <fcntl.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cstring>
#include <filesystem>
#include <vector>

extern char** environ;

namespace devices {

namespace asio = boost::asio;

namespace {
constexpr int kChildFd = 3;
constexpr auto kMaxBackoff = std::chrono::milliseconds(5000);
constexpr auto kHealthyAfter = std::chrono::seconds(10);
}  // namespace

DeviceProcess::DeviceProcess(asio::io_context& io, Options options, OnChange on_change)
    : io_(io),
      options_(std::move(options)),
      on_change_(std::move(on_change)),
      timer_(io),
      import_deadline_(io) {}

DeviceProcess::~DeviceProcess() {
  *alive_ = false;
  timer_.cancel();
  import_deadline_.cancel();
  if (device_) device_->close();
  if (status_.pid > 0) {
    ::kill(status_.pid, SIGKILL);
    int st = 0;
    ::waitpid(status_.pid, &st, 0);
  }
}

std::string DeviceProcess::default_devhost_path() {
  if (const char* env = std::getenv("VUSB_DEVHOST"); env && *env) return env;
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "vusb-devhost";
  return (self.parent_path() / "vusb-devhost").string();
}

std::string DeviceProcess::describe_exit(int st) {
  if (WIFEXITED(st)) return "exited with status " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) {
    const int sig = WTERMSIG(st);
    return "killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")" +
           (sig == SIGSYS ? ": a system call outside its seccomp allowlist" : "");
  }
  return "ended (status " + std::to_string(st) + ")";
}

void DeviceProcess::start() {
  spawn();
}

void DeviceProcess::spawn() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    spdlog::error("vusbd: {}: socketpair: {}", describe(), std::strerror(errno));
    return restart_later();
  }
  std::vector<std::string> args = {
      options_.program,         "--type",   options_.device.type,       "--fd",
      std::to_string(kChildFd), "--parent", std::to_string(::getpid()), "--log-level",
      options_.log_level};
  if (!options_.device.options.empty()) {
    args.push_back("--options");
    args.push_back(options_.device.options);
  }
  if (!options_.seccomp) args.push_back("--no-seccomp");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  // The child gets its end as fd 3 and nothing else of ours: dup2 clears close-on-exec on the
  // copy, and every other descriptor above 2 is closed.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], kChildFd);
  posix_spawn_file_actions_addclosefrom_np(&actions, kChildFd + 1);
  pid_t pid = 0;
  const int rc =
      ::posix_spawn(&pid, options_.program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    spdlog::error("vusbd: {}: cannot start {}: {}", describe(), options_.program,
                  std::strerror(rc));
    return restart_later();
  }
  status_.pid = pid;
  ++status_.starts;
  started_at_ = std::chrono::steady_clock::now();
  spdlog::info("vusbd: {}: started device process pid {}", describe(), pid);

  asio::generic::stream_protocol::socket socket(io_);
  boost::system::error_code ec;
  socket.assign(asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[0], ec);
  if (ec) {
    ::close(fds[0]);
    return on_child_gone("socket: " + ec.message());
  }
  auto stream =
      std::make_unique<usb::net::UnixStream>(std::move(socket), "device process " + std::to_string(pid));
  UsbipRemoteDevice::Options options;
  options.on_disconnect = [this, alive = alive_](const std::string& reason) {
    // Runs inside the client's failure path: act on the next loop turn.
    asio::post(io_, [this, alive, reason] {
      if (*alive && device_) on_child_gone(reason);
    });
  };
  import_deadline_.expires_after(std::chrono::seconds(10));
  import_deadline_.async_wait([this, alive = alive_, pid](boost::system::error_code e) {
    if (e || !*alive || status_.pid != pid || device_) return;
    ::kill(pid, SIGKILL);  // reaped by on_child_gone
    on_child_gone("no answer to the import within 10 s");
  });
  UsbipRemoteDevice::import(
      std::move(stream), "1-1", std::move(options),
      [this, alive = alive_, pid](usb::Result<std::unique_ptr<UsbipRemoteDevice>> result) {
        if (!*alive || status_.pid != pid) return;
        import_deadline_.cancel();
        if (!result) return on_child_gone(result.error().message);
        device_ = std::move(*result);
        spdlog::info("vusbd: {}: device process pid {} offers {:04x}:{:04x}", describe(), pid,
                     device_->descriptors().device.vendor_id,
                     device_->descriptors().device.product_id);
        on_change_(device_.get());
      });
}

void DeviceProcess::on_child_gone(const std::string& reason) {
  if (device_) {
    spdlog::warn("vusbd: {}: device process pid {} is gone ({})", describe(), status_.pid, reason);
    on_change_(nullptr);
    device_->close();
    device_.reset();
  } else {
    spdlog::warn("vusbd: {}: device process pid {} failed to start ({})", describe(), status_.pid,
                 reason);
  }
  if (std::chrono::steady_clock::now() - started_at_ > kHealthyAfter) {
    backoff_ = std::chrono::milliseconds(200);
  }
  reap(50);
}

void DeviceProcess::reap(int attempts_left) {
  // The socket closes when the child dies, a moment before the kernel lets us reap it; a child
  // that is alive but broke the protocol is killed after ~0.5 s.
  const pid_t pid = status_.pid;
  if (pid <= 0) return restart_later();
  int st = 0;
  const pid_t r = ::waitpid(pid, &st, WNOHANG);
  if (r == pid || (r < 0 && errno == ECHILD)) {
    status_.last_exit = r == pid ? describe_exit(st) : "reaped elsewhere";
    status_.pid = 0;
    spdlog::warn("vusbd: {}: device process pid {} {}; restarting in {} ms", describe(), pid,
                 status_.last_exit, backoff_.count());
    return restart_later();
  }
  if (attempts_left == 0) ::kill(pid, SIGKILL);
  timer_.expires_after(std::chrono::milliseconds(10));
  timer_.async_wait([this, alive = alive_, attempts_left](boost::system::error_code ec) {
    if (!ec && *alive) reap(std::max(attempts_left - 1, 0));
  });
}

void DeviceProcess::restart_later() {
  timer_.expires_after(backoff_);
  backoff_ =
      std::min(backoff_ * 2, std::chrono::duration_cast<std::chrono::milliseconds>(kMaxBackoff));
  timer_.async_wait([this, alive = alive_](boost::system::error_code ec) {
    if (!ec && *alive) spawn();
  });
}

}  // namespace devices
