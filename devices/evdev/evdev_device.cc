#include "devices/evdev/evdev_device.h"

#include <fcntl.h>
#include <libevdev/libevdev.h>
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

}  // namespace devices
