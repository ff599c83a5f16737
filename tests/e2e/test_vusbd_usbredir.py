#!/usr/bin/python3
"""e2e.vusbd_usbredir — guests with nothing installed use vusbd's devices through QEMU's usb-redir.

vusbd runs on the host with two VMs, each given its own Gadget Zero (emulated in vusbd) over
usbredir: `[[vm]] usbredir = [{ device = "gzN", listen = "127.0.0.1:PORT" }]`. Each guest's QEMU
7.2 gets exactly the arguments `vusbctl qemu-args --vm vmN [--controller ehci]` prints (the guest's
controller, `-chardev socket,host=127.0.0.1,port=PORT,reconnect=2` and `-device usb-redir,
chardev=...,bus=...`): QEMU connects to vusbd, vusbd announces the device, QEMU plugs it into the
guest's controller, and the guest's own kernel enumerates it and runs usbtest through QEMU's
usb-redir, vusbd's usbredir channel and its shared-device view. The two guests boot at once:

  vm1  qemu-xhci (xhci_hcd)   usbtest 0-14, 17-21, 27-29, then alt=1: 15, 16
  vm2  usb-ehci  (ehci_hcd)   usbtest 0-14, 17-21, 27-29 and 24, then alt=1: 16 (reported only:
                              QEMU's EHCI misses iso frames under TCG when the host is busy)

vm1's channel is TCP (`-chardev socket,host=127.0.0.1,port=P`), vm2's a UNIX socket
(`listen = "unix:PATH"`, `-chardev socket,path=PATH`).

Case 24 (unlink from a queue of bulk OUT URBs) runs on EHCI only: QEMU 7.2's xHCI loses every
transfer still in flight at a Stop Endpoint command (xhci_ep_nuke_xfers reports one and frees the
rest without rewinding the ring), and a usbredir device's bulk packets are in flight until the
host's answer comes back over the socket, so the uncancelled URBs of the queue never complete
there whatever the usbredir host does. Case 15 (iso OUT) runs on xHCI only: QEMU 7.2's EHCI
writes the bytes *left* (len - actual, 0 after a full packet) into an OUT iTD's length field,
which Linux's ehci_hcd reads as the bytes sent, so every iso OUT packet through any usbredir
host counts as a short, failed one there (docs/STATUS.md).

Checks: usbtest binds 0525:a4a0 in both guests, every case passes, vusbd shows the usbredir
adapter, and vusbd exits 0 on SIGTERM.

Usage: tests/e2e/test_vusbd_usbredir.py [--build DIR] [--cases 0,1,...] [--iso-cases 15,16]
                                        [--only xhci|ehci]
"""
import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
import lab  # noqa: E402

CASES = list(range(0, 15)) + [17, 18, 19, 20, 21, 27, 28, 29]
EHCI_ONLY = [24]  # see the docstring: QEMU's xHCI drops in-flight transfers at Stop Endpoint
ISO_CASES = {"xhci": [15, 16], "ehci": [16]}  # after usbtest binds again with alt=1
# Reported, not asserted: iso IN on QEMU's EHCI under TCG misses frames when the host is loaded
# (QEMU's frame timer falls behind; the guest's iTDs stay active and count as "too late"), so
# usbtest's 10% error budget holds on an idle machine (3 of 64) but not always under ASan.
INFORMATIONAL = {"xhci": [], "ehci": [16]}
GUESTS = {  # vm: (controller, guest modules)
    "vm1": ("xhci", ["xhci-pci", "usbtest"]),
    "vm2": ("ehci", ["ehci-pci", "usbtest"]),
}


def guest_script(cases, iso, informational=()) -> str:
    script = f"""
echo "LAB-PHASE enumerate"
b=$(lab_usbtest_bound 90) || {{ echo "LAB-FAIL usbtest did not bind a device from usb-redir"; lab_usb_tree; exit 21; }}
echo "LAB-INFO usbtest bound to $b"
lab_usb_tree
echo "LAB-PHASE usbtest"
{lab.usbtest_cmd(cases, timeout=60)}
[ $? -eq 3 ] && {{ echo "LAB-FAIL a usbtest case hung"; exit 23; }}
"""
    if iso:
        script += f"""echo "LAB-PHASE iso"
b=$(lab_usbtest_rebind alt=1) || {{ echo "LAB-FAIL usbtest did not bind again with alt=1"; exit 22; }}
{lab.usbtest_cmd(iso, timeout=60)}{" || echo 'LAB-WARN informational iso cases failed'" if set(iso) <= set(informational) else ""}
"""
    return script


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--cases", help="comma-separated usbtest cases (both guests)")
    ap.add_argument("--iso-cases", help="usbtest cases run with alt=1 ('' for none)")
    ap.add_argument("--only", choices=sorted(c for c, _ in GUESTS.values()),
                    help="boot only the guest with this controller")
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    plan = {}
    for vm, (controller, modules) in GUESTS.items():
        if a.only and a.only != controller:
            continue
        cases = ([int(c) for c in a.cases.split(",")] if a.cases
                 else CASES + (EHCI_ONLY if controller == "ehci" else []))
        iso = ([int(c) for c in a.iso_cases.split(",") if c] if a.iso_cases is not None
               else ISO_CASES[controller])
        plan[vm] = (controller, modules, cases, iso)
    bindir = lab.build_dir() / "bin"
    logs = lab.logs_dir()
    pc, p1, p2, r1 = lab.free_ports(4)
    # vm2's channel is a UNIX socket (QEMU: -chardev socket,path=...).
    sock = logs / "vusbd_usbredir.vm2.sock"
    sock.unlink(missing_ok=True)
    toml = logs / "vusbd_usbredir.toml"
    toml.write_text(f'[control]\nlisten = "127.0.0.1:{pc}"\n\n{lab.control_token()}'
                    f'[[vm]]\nname = "vm1"\nlisten = "127.0.0.1:{p1}"\n'
                    f'usbredir = [{{ device = "gz1", listen = "127.0.0.1:{r1}" }}]\n\n'
                    f'[[vm]]\nname = "vm2"\nlisten = "127.0.0.1:{p2}"\n'
                    f'usbredir = [{{ device = "gz2", listen = "unix:{sock}" }}]\n\n'
                    '[[device]]\nname = "gz1"\nsource = "emulated:gadget-zero"\nvms = ["vm1"]\n\n'
                    '[[device]]\nname = "gz2"\nsource = "emulated:gadget-zero"\nvms = ["vm2"]\n')
    log_path = logs / "vusbd_usbredir.vusbd.log"
    vusbd = lab.start_process([bindir / "vusbd", "--config", toml], log_path)
    problems = []
    passed = 0
    try:
        deadline = time.monotonic() + 15
        while not sock.exists() and time.monotonic() < deadline and vusbd.poll() is None:
            time.sleep(0.05)
        if not (lab.wait_listening(r1, vusbd, 15) and sock.exists()):
            print(f"FAIL: vusbd did not listen for usbredir\n{lab.tail(log_path)}")
            return 1
        t0 = time.monotonic()
        guests = {}
        for vm, (controller, modules, cases, iso) in plan.items():
            script = guest_script(cases, iso, INFORMATIONAL[controller])
            devices = lab.vusbd_qemu_args(bindir / "vusbctl", pc, vm, controller)
            g = lab.GuestThread(f"vusbd_usbredir.{vm}", script, t0, modules=modules,
                                devices=devices)
            guests[vm] = (g, g.start(a.timeout, 512))
        for g, th in guests.values():
            th.join()
        with urllib.request.urlopen(f"http://127.0.0.1:{pc}/api/v1/vms", timeout=5) as r:
            vms = {v["name"]: v for v in json.load(r)}
        lab.log(f"vusbd vms: {json.dumps(vms)}")
        for vm, (g, _) in guests.items():
            controller, _, cases, iso = plan[vm]
            info = [c for c in iso if c in INFORMATIONAL[controller]]
            expected = cases + [c for c in iso if c not in info]
            if g.error or not g.run:
                problems.append(f"{vm}: the guest did not run: {g.error}")
                continue
            run = g.run
            results = run.usbtest()
            print(f"--- {vm} ({controller}) ---\n{lab.usbtest_table(results, expected + info)}")
            if info:
                print(f"(informational on {controller}: {info}; failed: "
                      f"{lab.usbtest_failures(results, info)})")
            for m in run.find("LAB-FAIL"):
                problems.append(f"{vm}: guest: " + m.line[len("LAB-FAIL"):].strip())
            failed = lab.usbtest_failures(results, expected)
            if failed:
                problems.append(f"{vm} ({controller}): usbtest cases failed: {failed}")
            if not run.booted:
                problems.append(f"{vm}: the guest did not boot")
            elif not run.ok:
                problems.append(f"{vm}: guest script failed (rc={run.rc}, "
                                f"timed out: {run.timed_out})")
            if "usbredir" not in vms.get(vm, {}).get("adapters", []):
                problems.append(f"vusbd shows no usbredir adapter for {vm}")
            if problems:
                print(f"--- {vm} guest console tail ---\n{run.tail(40)}")
            passed += len(expected) - len(failed)
    except RuntimeError as e:
        problems.append(str(e))
    finally:
        rc = lab.stop_process(vusbd)
    if rc != 0:
        problems.append(f"vusbd exited {rc} on SIGTERM")
    text = log_path.read_text(errors="replace")
    if text.count("announced 0525:a4a0") < len(plan):
        problems.append("vusbd did not announce a device to every QEMU")
    if problems:
        print("FAIL: " + "; ".join(problems))
        print(f"--- vusbd log tail ---\n{lab.tail(log_path, 40)}")
        return 1
    print(f"PASS: {len(plan)} guests' own xhci_hcd/ehci_hcd and usbtest passed {passed} cases "
          "through QEMU's usb-redir and vusbd")
    return 0


if __name__ == "__main__":
    sys.exit(main())
