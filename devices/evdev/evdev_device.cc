#include "devices/evdev/evdev_device.h"

#include <fcntl.h>
#include <libevdev/libevdev.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace devices {

usb::Result<OpenedEvdev> open_evdev(const std::string& path, bool writable) {
  int fd = writable ? ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC) : -1;
  if (fd < 0) fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    return usb::Error::make(usb::Error::Code::kIo, "evdev " + path + ": " + std::strerror(errno));
  }
  libevdev* dev = nullptr;
  if (int rc = libevdev_new_from_fd(fd, &dev); rc < 0) {
    ::close(fd);
    return usb::Error::make(usb::Error::Code::kIo,
                            "evdev " + path + ": libevdev: " + std::strerror(-rc));
  }
  return OpenedEvdev{fd, dev};
}

std::vector<std::string> find_evdev(const std::function<bool(const libevdev*)>& wanted) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/dev/input", ec)) {
    if (e.path().filename().string().rfind("event", 0) != 0) continue;
    auto opened = open_evdev(e.path().string());
    if (!opened) continue;
    if (wanted(opened->dev)) out.push_back(e.path().string());
    libevdev_free(opened->dev);
    ::close(opened->fd);
  }
  std::sort(out.begin(), out.end());
  return out;
}

EvdevReader::EvdevReader(boost::asio::io_context& io, OpenedEvdev opened, std::string label)
    : fd_(io, opened.fd), dev_(opened.dev), label_(std::move(label)) {
  name_ = libevdev_get_name(dev_) ? libevdev_get_name(dev_) : "?";
}

EvdevReader::~EvdevReader() {
  *alive_ = false;
  boost::system::error_code ec;
  fd_.cancel(ec);
  libevdev_free(dev_);  // fd_ closes the descriptor (which also releases a grab)
}

void EvdevReader::start() {
  wait();
}

void EvdevReader::wait() {
  fd_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                 [this, alive = alive_](boost::system::error_code ec) {
                   if (!*alive || ec) return;
                   drain();
                 });
}

void EvdevReader::drain() {
  input_event ev{};
  unsigned flags = LIBEVDEV_READ_FLAG_NORMAL;
  auto alive = alive_;
  for (;;) {
    const int rc = libevdev_next_event(dev_, flags, &ev);
    if (rc == -EAGAIN) {
      if (flags == LIBEVDEV_READ_FLAG_SYNC) {
        flags = LIBEVDEV_READ_FLAG_NORMAL;  // resynchronised
        continue;
      }
      break;
    }
    if (rc == LIBEVDEV_READ_STATUS_SYNC && flags == LIBEVDEV_READ_FLAG_NORMAL) {
      // SYN_DROPPED: the kernel's buffer overflowed; what follows in sync mode is the difference.
      spdlog::warn("evdev: {} ('{}'): events dropped by the kernel; resynchronising", label_,
                   name_);
      flags = LIBEVDEV_READ_FLAG_SYNC;
      continue;
    }
    if (rc < 0) {
      if (!failed_) {
        failed_ = true;
        spdlog::warn("evdev: {} ('{}'): {}; reading stops", label_, name_, std::strerror(-rc));
        if (on_error) on_error(rc);  // may destroy this reader
      }
      return;
    }
    if (on_event) on_event(ev);
    if (!*alive) return;  // the consumer destroyed the reader
  }
  wait();
}

}  // namespace devices
