#include "devices/process/confine.h"

#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace devices {

namespace {

usb::Result<void> limit(int resource, rlim_t value, const char* name) {
  rlimit r{value, value};
  if (::setrlimit(resource, &r) != 0)
    return usb::Error::make(usb::Error::Code::kIo,
                            std::string("setrlimit ") + name + ": " + std::strerror(errno));
  return {};
}

}  // namespace

usb::Result<std::string> confine_device_process(const Confinement& c) {
  std::string done;
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // Sanitizer runtimes reserve terabytes of shadow address space: no RLIMIT_AS there.
  if (auto r = limit(RLIMIT_AS, c.address_space, "RLIMIT_AS"); !r) return std::unexpected(r.error());
  done += "RLIMIT_AS " + std::to_string(c.address_space >> 20) + " MiB, ";
#endif
  if (auto r = limit(RLIMIT_NOFILE, c.descriptors, "RLIMIT_NOFILE"); !r)
    return std::unexpected(r.error());
  if (auto r = limit(RLIMIT_CORE, 0, "RLIMIT_CORE"); !r) return std::unexpected(r.error());
  done += "RLIMIT_NOFILE " + std::to_string(c.descriptors) + ", no core dumps";
  if (::geteuid() == 0) {
    uid_t uid = 65534;
    gid_t gid = 65534;
    if (const passwd* pw = ::getpwnam("nobody")) {
      uid = pw->pw_uid;
      gid = pw->pw_gid;
    }
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 ||
        ::setresuid(uid, uid, uid) != 0)
      return usb::Error::make(usb::Error::Code::kIo,
                              std::string("dropping root: ") + std::strerror(errno));
    if (::setuid(0) == 0)
      return usb::Error::make(usb::Error::Code::kIo, "dropping root: setuid(0) still works");
    done = "uid " + std::to_string(uid) + " gid " + std::to_string(gid) + ", " + done;
  }
  // Not traceable or dumpable by other processes of the same user.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  return done;
}

}  // namespace devices
