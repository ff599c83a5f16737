#!/usr/bin/python3
"""e2e.kernel_gadget_zero — the guest lab's self-test and the baseline vusb is compared against.

One guest builds the kernel's own Gadget Zero (dummy_hcd + configfs + SourceSink), lets usbtest
bind it, and runs the usbtest cases through usbtest-ioctl. Every case listed in EXPECTED_OK must
pass: this proves usbtest-ioctl, the initramfs, the guest /init and the host-side parsing, without
any vusb code. It also reloads usbtest (the path test_stub_usbtest.py uses for alt=1) and checks
that the driver binds again. Results are written to <logs>/kernel_gadget_zero.json.

Usage: tests/e2e/test_kernel_gadget_zero.py [--build DIR] [--timeout SECONDS]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
import lab  # noqa: E402

# Cases the kernel's Gadget Zero on dummy_hcd passes (LAB.md). 15/16 (iso) and 25/26 (interrupt)
# are not possible on dummy_hcd; 22/23 are iso too.
EXPECTED_OK = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 17, 18, 19, 20, 21, 24, 27, 28, 29]
AFTER_RELOAD = [1, 2]


def guest_script() -> str:
    return f"""
lab_gadget_zero || {{ echo "LAB-FAIL could not build the configfs Gadget Zero"; exit 10; }}
b=$(lab_usbtest_bound 20) || {{ echo "LAB-FAIL usbtest did not bind"; lab_usb_tree; exit 11; }}
echo "LAB-INFO usbtest bound to $b"
lab_usb_tree
{lab.usbtest_cmd(EXPECTED_OK, timeout=60)}
echo "LAB-PHASE reload"
b=$(lab_usbtest_rebind alt=0) || {{ echo "LAB-FAIL usbtest did not bind after reload"; exit 12; }}
echo "LAB-INFO usbtest rebound to $b"
{lab.usbtest_cmd(AFTER_RELOAD, timeout=60)}
exit 0
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--timeout", type=float, default=240, help="guest wall-clock limit")
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())

    t0 = time.monotonic()
    if not lab.ready():
        return 1
    t_prep = time.monotonic() - t0

    run = lab.run_guest(guest_script(), name="kernel_gadget_zero", modules=["usbtest"],
                        timeout=a.timeout)
    main_results = run.usbtest("main")
    reload_results = run.usbtest("reload")

    print("usbtest against the kernel's Gadget Zero (dummy_hcd):")
    print(lab.usbtest_table(main_results, EXPECTED_OK))
    print("after rmmod/modprobe usbtest:")
    print(lab.usbtest_table(reload_results, AFTER_RELOAD))

    failed = lab.usbtest_failures(main_results, EXPECTED_OK)
    failed_reload = lab.usbtest_failures(reload_results, AFTER_RELOAD)
    summary = {
        "test": "e2e.kernel_gadget_zero",
        "device": "kernel Gadget Zero (configfs SourceSink on dummy_hcd)",
        "results": main_results,
        "after_reload": reload_results,
        "failed": failed + [f"reload:{c}" for c in failed_reload],
        "guest_secs": round(run.wall_secs, 2),
        "prepare_secs": round(t_prep, 2),
        "console_log": str(run.log_path),
    }
    out = lab.logs_dir() / "kernel_gadget_zero.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")

    total = time.monotonic() - t0
    print(f"timing: prepare {t_prep:.1f}s, guest {run.wall_secs:.1f}s, total {total:.1f}s; "
          f"results in {out}")
    if run.timed_out or not run.booted or run.rc is None or failed or failed_reload:
        why = []
        if failed:
            why.append(f"cases {failed} did not pass")
        if failed_reload:
            why.append(f"cases {failed_reload} after the usbtest reload did not pass")
        print("FAIL: " + ("; ".join(why) or "the guest run failed"))
        print(run.failure_report())
        return 1
    print(f"PASS: {len(EXPECTED_OK)} usbtest cases against the kernel's Gadget Zero")
    return 0


if __name__ == "__main__":
    sys.exit(main())
