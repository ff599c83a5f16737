// The system-call allowlist of a device process (devices/process): once its device exists and its
// socket to the parent is open, a device process needs only to move bytes on that socket, keep
// time, allocate memory and exit. Everything else — opening files, making sockets, connecting,
// executing programs, forking, signalling other processes, ptrace — kills it (SIGSYS), so a bug
// an attacker finds in a device model through a hostile guest gains nothing.
//
// Built with libseccomp; installed with no_new_privs. Applies to the calling thread and the
// threads it starts afterwards (a device process has one).
#pragma once

#include "usb/core/error.h"

namespace devices {

usb::Result<void> install_device_process_seccomp();

}  // namespace devices
