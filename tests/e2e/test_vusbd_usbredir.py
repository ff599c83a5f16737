#!/usr/bin/python3
"""e2e.vusbd_usbredir — a guest with nothing installed uses vusbd's device through QEMU's usb-redir.

vusbd runs on the host with one VM whose Gadget Zero (emulated in vusbd) is given over usbredir:
`[[vm]] usbredir = [{ device = "gz", listen = "127.0.0.1:PORT" }]`. The guest's QEMU 7.2 gets the
arguments `vusbctl qemu-args --vm vm1` prints (a qemu-xhci, `-chardev socket,host=127.0.0.1,
port=PORT,reconnect=2` and `-device usb-redir,chardev=...,bus=vusb-xhci.0`): QEMU
connects to vusbd, vusbd announces the device, QEMU plugs it into the guest's xHCI, and the
guest's own kernel (xhci_hcd, usbtest) enumerates it and runs the usbtest cases below through
QEMU's usb-redir, vusbd's usbredir channel and its shared-device view. Checks: usbtest binds
0525:a4a0, every case passes, vusbd reports the channel connected and announced, and vusbd exits
0 on SIGTERM.

Usage: tests/e2e/test_vusbd_usbredir.py [--build DIR] [--cases 0,1,...]
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
import lab  # noqa: E402

CASES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--cases", help="comma-separated usbtest cases")
    ap.add_argument("--timeout", type=float, default=240)
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    cases = [int(c) for c in a.cases.split(",")] if a.cases else CASES
    bindir = lab.build_dir() / "bin"
    logs = lab.logs_dir()
    pc, p1, pr = lab.free_ports(3)
    toml = logs / "vusbd_usbredir.toml"
    toml.write_text(f'[control]\nlisten = "127.0.0.1:{pc}"\n\n'
                    f'[[vm]]\nname = "vm1"\nlisten = "127.0.0.1:{p1}"\n'
                    f'usbredir = [{{ device = "gz", listen = "127.0.0.1:{pr}" }}]\n\n'
                    '[[device]]\nname = "gz"\nsource = "emulated:gadget-zero"\nvms = ["vm1"]\n')
    log_path = logs / "vusbd_usbredir.vusbd.log"
    vusbd = lab.start_process([bindir / "vusbd", "--config", toml], log_path)
    problems = []
    try:
        if not lab.wait_listening(pr, vusbd, 15):
            print(f"FAIL: vusbd did not listen for usbredir\n{lab.tail(log_path)}")
            return 1
        script = f"""
echo "LAB-PHASE enumerate"
b=$(lab_usbtest_bound 90) || {{ echo "LAB-FAIL usbtest did not bind a device from usb-redir"; lab_usb_tree; exit 21; }}
echo "LAB-INFO usbtest bound to $b"
lab_usb_tree
echo "LAB-PHASE usbtest"
{lab.usbtest_cmd(cases, timeout=60)}
"""
        # The QEMU arguments are vusbd's own (`vusbctl qemu-args --vm vm1`), as a user gets them.
        r = subprocess.run([str(bindir / "vusbctl"), "--api", f"127.0.0.1:{pc}", "--json",
                            "qemu-args", "--vm", "vm1"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30)
        if r.returncode != 0:
            print(f"FAIL: vusbctl qemu-args: {r.stderr.strip()}")
            return 1
        argv = json.loads(r.stdout)["qemu"]
        lab.log("vusbctl qemu-args --vm vm1: " + " ".join(argv))
        if f"port={pr}" not in " ".join(argv):
            problems.append(f"qemu-args do not name vusbd's usbredir port {pr}: {argv}")
        devices = [v if k == "-device" else f"{k} {v}" for k, v in zip(argv[::2], argv[1::2])]
        run = lab.run_guest(script, name="vusbd_usbredir.vm1", modules=["xhci-pci", "usbtest"],
                            devices=devices, timeout=a.timeout)
        results = run.usbtest()
        print(lab.usbtest_table(results, cases))
        for m in run.find("LAB-FAIL"):
            problems.append("guest: " + m.line[len("LAB-FAIL"):].strip())
        failed = lab.usbtest_failures(results, cases)
        if failed:
            problems.append(f"usbtest cases failed: {failed}")
        if not run.booted:
            problems.append("the guest did not boot")
        with urllib.request.urlopen(f"http://127.0.0.1:{pc}/api/v1/vms", timeout=5) as r:
            vms = json.load(r)
        lab.log(f"vusbd vms: {json.dumps(vms)}")
        redir = vms[0].get("usbredir", [{}])[0]
        if not run.ok:
            problems.append(f"guest script failed (rc={run.rc}, timed out: {run.timed_out})")
        if "usbredir" not in vms[0].get("adapters", []):
            problems.append("vusbd shows no usbredir adapter for vm1")
        if problems:
            print(f"--- guest console tail ---\n{run.tail(60)}")
    finally:
        rc = lab.stop_process(vusbd)
    if rc != 0:
        problems.append(f"vusbd exited {rc} on SIGTERM")
    text = log_path.read_text(errors="replace")
    if "announced 0525:a4a0" not in text:
        problems.append("vusbd never announced the device to QEMU")
    if problems:
        print("FAIL: " + "; ".join(problems))
        print(f"--- vusbd log tail ---\n{lab.tail(log_path, 40)}")
        return 1
    print(f"PASS: a guest's own xhci_hcd and usbtest ran {len(cases)} cases through QEMU's "
          f"usb-redir and vusbd (channel {redir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
