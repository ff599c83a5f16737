#!/usr/bin/python3
"""e2e.usbip_list — Debian's usbip client lists what vusb-stub exports (host only, no guest).

Starts `vusb-stub --listen 127.0.0.1:PORT --emulate gadget-zero=1-1` on a free loopback port and
checks that `usbip --tcp-port PORT list -r 127.0.0.1` shows bus id 1-1 as 0525:a4a0 with a
vendor-specific interface (ff/00/00). Always stops the stub; prints its log on failure.

Usage: tests/e2e/test_usbip_list.py [--stub PATH] [--build DIR]
       tests/e2e/test_usbip_list.py --server HOST:PORT   # check an already running server
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
import lab  # noqa: E402

BUSID = "1-1"
VIDPID = "0525:a4a0"
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}


def check_listing(text: str, busid: str = BUSID, vidpid: str = VIDPID) -> list:
    """Problems found in `usbip list -r` output (empty list = as expected). The format is
    usbip-utils' (tools/usb/usbip/src/usbip_list.c):
        1-1: <vendor> : <product> (0525:a4a0)
           : /sys/devices/...
           : <class> (ff/00/00)            device class
           :  0 - <class> (ff/00/00)       one line per interface
    """
    lines = text.splitlines()
    head = [i for i, l in enumerate(lines) if re.match(rf"\s*{re.escape(busid)}:\s", l)]
    if not head:
        return [f"bus id {busid} not listed"]
    i = head[0]
    problems = []
    if f"({vidpid})" not in lines[i]:
        problems.append(f"{busid} is not shown as {vidpid}: {lines[i].strip()!r}")
    block = []
    for l in lines[i + 1:]:
        if not re.match(r"\s*:", l):
            break
        block.append(l)
    ifaces = [l for l in block if re.match(r"\s*:\s*\d+\s+-\s", l)]
    if not ifaces:
        problems.append(f"no interface lines under {busid}")
    elif not any("(ff/00/00)" in l for l in ifaces):
        problems.append(f"interface 0 is not vendor specific ff/00/00: {ifaces[0].strip()!r}")
    return problems


def usbip_list(host: str, port: int) -> subprocess.CompletedProcess:
    return subprocess.run(["usbip", "--tcp-port", str(port), "list", "-r", host],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--stub", help="vusb-stub binary (default: <build>/bin/vusb-stub)")
    ap.add_argument("--server", help="HOST:PORT of a running server instead of starting the stub")
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    if not Path("/usr/sbin/usbip").exists():
        print("FAIL: /usr/sbin/usbip missing (scripts/deps.sh installs the usbip package)")
        return 1

    t0 = time.monotonic()
    proc = None
    stub_log = lab.logs_dir() / "usbip_list.stub.log"
    try:
        if a.server:
            host, port = a.server.rsplit(":", 1)
            port = int(port)
        else:
            stub = Path(a.stub) if a.stub else lab.build_dir() / "bin" / "vusb-stub"
            if not stub.is_file():
                print(f"FAIL: {stub} not found (build the vusb-stub target first)")
                return 1
            host, port = "127.0.0.1", lab.free_port()
            cmd = [str(stub), "--listen", f"{host}:{port}", "--emulate", f"gadget-zero={BUSID}"]
            with open(stub_log, "w") as logf:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                        stderr=subprocess.STDOUT)
            if not lab.wait_listening(port, proc, 15, host):
                print(f"FAIL: vusb-stub did not listen on {host}:{port} "
                      f"(exit status {proc.poll()})")
                print(lab.tail(stub_log, 60))
                return 1
        res = usbip_list(host, port)
    finally:
        stub_rc = None
        if proc is not None:
            stub_rc = lab.stop_process(proc)

    print(f"$ usbip --tcp-port {port} list -r {host}   (exit status {res.returncode})")
    print(res.stdout.rstrip())
    problems = check_listing(res.stdout)
    if res.returncode != 0:
        problems.insert(0, f"usbip list exited {res.returncode}")
    if stub_rc is not None and -stub_rc in CRASH_SIGNALS:
        problems.append(f"vusb-stub died with signal {-stub_rc}")
    if proc is not None:
        log_text = stub_log.read_text(errors="replace")
        if "AddressSanitizer" in log_text or "runtime error:" in log_text:
            problems.append("vusb-stub reported a sanitizer error")
    print(f"timing: {time.monotonic() - t0:.1f}s")
    if problems:
        print("FAIL: " + "; ".join(problems))
        if proc is not None:
            print(f"--- vusb-stub log ({stub_log}, exit status {stub_rc}) ---")
            print("\n".join(stub_log.read_text(errors="replace").splitlines()[-60:]))
        return 1
    print(f"PASS: usbip lists {BUSID} as {VIDPID} with a vendor-specific interface")
    return 0


if __name__ == "__main__":
    sys.exit(main())
