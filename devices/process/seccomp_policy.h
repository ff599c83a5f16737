// The system-call allowlist of a device process (devices/process): once its device exists and its
// socket to the parent is open, a device process needs only to move bytes on that socket, keep
// time, allocate memory and exit. Everything else — opening files, making sockets, connecting,
// executing programs, forking, signalling other processes, ptrace — kills it (SIGSYS), so a bug
// an attacker finds in a device model through a hostile guest gains nothing.
//
// Built with libseccomp; installed with no_new_privs. Applies to the calling thread and the
// threads it starts afterwards (a device process has one). Call prepare_for_seccomp() first:
// what libc and the device libraries do once, lazily (read the time zone for log timestamps,
// give stdout its buffer, libjpeg-turbo's CPU probe on some architectures), must be done while
// files may still be opened.
#pragma once

#include "usb/core/error.h"

namespace devices {

void prepare_for_seccomp();
usb::Result<void> install_device_process_seccomp();

}  // namespace devices
