#!/usr/bin/python3
"""e2e.vusbd_usbredir_shared — one Gadget Zero shared by a USB/IP guest and usb-redir guests;
a QEMU killed mid-transfer and started again; vusbd dialling a QEMU that listens.

vusbd emulates one Gadget Zero ("gz", shared mode) and gives it to three VMs:

  vmA  USB/IP: the guest runs Debian's `usbip attach` (vhci-hcd)
  vmB  usb-redir, vusbd listens: QEMU `-chardev socket,...,reconnect=2` (libvirt mode='connect')
  vmC  usb-redir, vusbd dials: QEMU `-chardev socket,...,server=on,wait=off` (libvirt mode='bind')

vmB's and vmC's QEMU arguments are exactly what `vusbctl qemu-args` prints. The three guests boot
at once, meet at a host barrier and run usbtest cases 1 2 3 4 9 10 13 14 on the shared device at
the same time. Then vmA and vmB meet again: vmA runs a longer bulk phase while vmB starts an
endless bulk read; once vmB is streaming the test SIGKILLs vmB's QEMU. Checks: vusbd sees vmB's
channel close and releases vmB's view within a second of the kill, vmA's usbtest passes
undisturbed, and a new QEMU for vmB started with the same arguments gets the device back by
itself (reconnect=2): its usbtest binds and passes again.

Usage: tests/e2e/test_vusbd_usbredir_shared.py [--build DIR] [--timeout S]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
import lab  # noqa: E402

NAME = "vusbd_usbredir_shared"
CASES = [1, 2, 3, 4, 9, 10, 13, 14]
LONG_A = [lab.Case(1, 8000, 4096), lab.Case(2, 8000, 4096)]  # vmA while vmB is killed
ENDLESS_B = lab.Case(2, 1000000, 4096)                      # vmB: reads until its QEMU dies
AGAIN_B = [1, 2, 9]                                         # vmB's second QEMU


def shared_phase(barrier: int, specs) -> str:
    return f"""echo "LAB-PHASE barrier"
go=$(timeout 120 nc 10.0.2.2 {barrier} </dev/null 2>&1)
echo "LAB-INFO barrier: ${{go:-no answer}}"
echo "LAB-PHASE shared"
{lab.usbtest_cmd(specs, timeout=60)}
[ $? -eq 3 ] && {{ echo "LAB-FAIL a usbtest case hung"; exit 23; }}
"""


def redir_bound() -> str:
    return """echo "LAB-PHASE enumerate"
b=$(lab_usbtest_bound 90) || { echo "LAB-FAIL usbtest did not bind a device from usb-redir"; lab_usb_tree; exit 21; }
echo "LAB-INFO usbtest bound to $b"
"""


def script_a(port: int, barrier: int, kill_barrier: int) -> str:
    return f"""{lab.attach_usbtest(port, "1-1")}
{shared_phase(barrier, CASES)}
echo "LAB-PHASE kill-barrier"
go=$(timeout 120 nc 10.0.2.2 {kill_barrier} </dev/null 2>&1)
echo "LAB-PHASE long"
echo "LAB-INFO long-start"
{lab.usbtest_cmd(LONG_A, timeout=120)}
rc=$?
echo "LAB-INFO long-end rc=$rc"
usbip detach -p 0 2>&1 || echo "LAB-WARN usbip detach failed"
exit $rc
"""


def script_b(barrier: int, kill_barrier: int) -> str:
    return f"""{redir_bound()}
{shared_phase(barrier, CASES)}
echo "LAB-PHASE kill-barrier"
go=$(timeout 120 nc 10.0.2.2 {kill_barrier} </dev/null 2>&1)
echo "LAB-PHASE endless"
sleep 0.5
echo "LAB-INFO endless-start"
{lab.usbtest_cmd([ENDLESS_B], timeout=600)}
echo "LAB-FAIL the endless read ended: this QEMU should have been killed"
exit 30
"""


def script_b_again() -> str:
    return f"""{redir_bound()}
echo "LAB-PHASE again"
{lab.usbtest_cmd(AGAIN_B, timeout=60)}
"""


def script_c(barrier: int) -> str:
    return f"""{redir_bound()}
{shared_phase(barrier, CASES)}
"""


def api_get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.load(r)


def view_of(api: int, vm: str) -> dict:
    for d in api_get(api, "/api/v1/devices"):
        if d.get("name") == "gz":
            for v in d.get("vms", []):
                if v.get("vm") == vm:
                    return v
    return {}


def redir_state(api: int, vm: str) -> dict:
    for v in api_get(api, "/api/v1/vms"):
        if v["name"] == vm:
            return (v.get("usbredir") or [{}])[0]
    return {}


class Guest(lab.GuestThread):
    """Releases the barriers when it ends, so nobody waits for a guest that is gone."""

    def __init__(self, *args, barriers=(), **kw):
        super().__init__(*args, **kw)
        self.barriers = barriers

    def on_finish(self) -> None:
        for b in self.barriers:
            b.release()


def qemu_pid(name: str) -> int | None:
    """The pid of the QEMU booting guest `name` (its initrd path is unique)."""
    r = subprocess.run(["pgrep", "-f", f"{name}.initrd"], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in r.stdout.split()]
    return pids[0] if pids else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--timeout", type=float, default=240)
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    if not lab.ready():
        return 1
    bindir = lab.build_dir() / "bin"
    logs = lab.logs_dir()
    pc, pa, pb, pcc, rb, rc_ = lab.free_ports(6)
    toml = logs / f"{NAME}.toml"
    toml.write_text(
        f'[control]\nlisten = "127.0.0.1:{pc}"\n\n{lab.control_token()}'
        f'[[vm]]\nname = "vmA"\nlisten = "127.0.0.1:{pa}"\n\n'
        f'[[vm]]\nname = "vmB"\nlisten = "127.0.0.1:{pb}"\n'
        f'usbredir = [{{ device = "gz", listen = "127.0.0.1:{rb}" }}]\n\n'
        f'[[vm]]\nname = "vmC"\nlisten = "127.0.0.1:{pcc}"\n'
        f'usbredir = [{{ device = "gz", connect = "127.0.0.1:{rc_}" }}]\n\n'
        '[[device]]\nname = "gz"\nsource = "emulated:gadget-zero"\nmode = "shared"\n'
        'vms = ["vmA", "vmB", "vmC"]\n')
    log_path = logs / f"{NAME}.vusbd.log"
    vusbd = lab.start_process([bindir / "vusbd", "--config", toml], log_path)
    problems: list = []
    barrier, kill_barrier = lab.Barrier(3, 150), lab.Barrier(2, 150)
    guests: dict = {}
    release_secs = None
    kill_at = None  # host secs since t0
    again = None
    try:
        if not lab.wait_log_line(log_path, "vusbd: ready", vusbd, 20):
            print(f"FAIL: vusbd did not get ready\n{lab.tail(log_path)}")
            return 1
        args_b = lab.vusbd_qemu_args(bindir / "vusbctl", pc, "vmB")
        args_c = lab.vusbd_qemu_args(bindir / "vusbctl", pc, "vmC")
        if not any("server=on" in x for x in args_c):
            problems.append(f"vmC's chardev does not listen: {args_c}")
        t0 = time.monotonic()
        bars = (barrier, kill_barrier)
        guests["vmA"] = Guest(f"{NAME}.vmA", script_a(pa, barrier.port, kill_barrier.port), t0,
                              modules=["vhci-hcd", "usbtest"], barriers=bars)
        guests["vmB"] = Guest(f"{NAME}.vmB", script_b(barrier.port, kill_barrier.port), t0,
                              modules=["xhci-pci", "usbtest"], devices=args_b, barriers=bars)
        guests["vmC"] = Guest(f"{NAME}.vmC", script_c(barrier.port), t0,
                              modules=["xhci-pci", "usbtest"], devices=args_c, barriers=bars)
        threads = {vm: g.start(a.timeout, 256) for vm, g in guests.items()}

        # Wait for vmB's endless read, let it run, then kill its QEMU.
        deadline = time.monotonic() + a.timeout
        while guests["vmB"].at("LAB-INFO endless-start") is None and time.monotonic() < deadline:
            if guests["vmB"].finished.is_set():
                break
            time.sleep(0.1)
        if guests["vmB"].at("LAB-INFO endless-start") is None:
            problems.append("vmB never started its endless read")
        else:
            time.sleep(1.5)
            pid = qemu_pid(f"{NAME}.vmB")
            before = view_of(pc, "vmB")
            if not pid:
                problems.append("vmB's QEMU was not found to kill")
            else:
                lab.log(f"killing vmB's QEMU (pid {pid}) mid-transfer; its view: {before}")
                t_kill = time.monotonic()
                kill_at = t_kill - t0
                os.kill(pid, signal.SIGKILL)
                while time.monotonic() - t_kill < 5:
                    if (not redir_state(pc, "vmB").get("connected") and
                            not view_of(pc, "vmB").get("imported")):
                        release_secs = time.monotonic() - t_kill
                        break
                    time.sleep(0.02)
                lab.log(f"vmB released {release_secs} s after the kill: {view_of(pc, 'vmB')}")
                if release_secs is None or release_secs > 1.0:
                    problems.append(f"vmB's view was not released within 1 s of the kill "
                                    f"({release_secs})")
        for th in threads.values():
            th.join()
        # vmB's QEMU again, same arguments: reconnect=2 brings the device back by itself.
        again = Guest(f"{NAME}.vmB-again", script_b_again(), time.monotonic(),
                      modules=["xhci-pci", "usbtest"], devices=args_b)
        again.start(a.timeout, 256).join()
    except RuntimeError as e:
        problems.append(str(e))
    finally:
        barrier.close()
        kill_barrier.close()
        rc = lab.stop_process(vusbd)

    def check(vm: str, g, phase: str, cases) -> None:
        if g is None or g.run is None:
            problems.append(f"{vm}: did not run ({g.error if g else ''})")
            return
        res = g.run.usbtest(phase)
        print(f"--- {vm} {phase} ---\n{lab.usbtest_table(res, cases)}")
        failed = lab.usbtest_failures(res, cases)
        if failed:
            problems.append(f"{vm} {phase}: usbtest cases failed: {failed}")

    check("vmA", guests.get("vmA"), "shared", CASES)
    check("vmB", guests.get("vmB"), "shared", CASES)
    check("vmC", guests.get("vmC"), "shared", CASES)
    check("vmA", guests.get("vmA"), "long", [c.num for c in LONG_A])
    check("vmB (second QEMU)", again, "again", AGAIN_B)
    ga = guests.get("vmA")
    if ga and ga.run and not ga.run.ok:
        problems.append(f"vmA: guest script failed (rc={ga.run.rc})")
    if ga:
        s, e = ga.at("LAB-INFO long-start"), ga.at("LAB-INFO long-end")
        if s is None or e is None or kill_at is None or not (s < kill_at < e):
            problems.append(f"vmA's long phase ({s}..{e} s) did not span vmB's kill "
                            f"(at {kill_at} s)")
        else:
            print(f"vmA's long phase {s:.1f}..{e:.1f} s spans vmB's kill at {kill_at:.1f} s")
    if again and again.run and not again.run.ok:
        problems.append(f"vmB's second QEMU: guest script failed (rc={again.run.rc})")
    if rc != 0:
        problems.append(f"vusbd exited {rc} on SIGTERM")
    if problems:
        print("FAIL: " + "; ".join(problems))
        for vm, g in list(guests.items()) + [("vmB-again", again)]:
            if vm != "vmB" and g and g.run and not g.run.ok:
                print(f"--- {vm} ---\n{g.run.failure_report()}")
        print(f"--- vusbd log tail ---\n{lab.tail(log_path, 40)}")
        return 1
    print(f"PASS: one Gadget Zero shared by a USB/IP guest and two usb-redir guests (vusbd "
          f"listening and dialling); vmB's QEMU killed mid-transfer, its view released in "
          f"{release_secs:.2f} s, vmA undisturbed, vmB's new QEMU got the device back")
    return 0


if __name__ == "__main__":
    sys.exit(main())
