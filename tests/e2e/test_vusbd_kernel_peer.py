#!/usr/bin/python3
"""e2e.vusbd_kernel_peer — vusbd imports a device from a USB/IP server nobody here wrote.

Guest A (the peer) builds the kernel's own Gadget Zero (dummy_hcd + configfs SourceSink), binds
it to the kernel's `usbip-host` and runs Debian's `usbipd` on port 3240; QEMU forwards the host's
127.0.0.1:PA to guest A's 3240 (hostfwd). Guest A reports the gadget's bus id (`usbip list -l`)
on its console; the host then starts `vusbd` with one VM (vm1 on 127.0.0.1:P1) and the device
`usbip://127.0.0.1:PA/<busid>`, and waits for "vusbd: ready" (the import went through). Guest B
(the client, booted at the same time) waits at a host gate until then, attaches vm1's 1-1 with
Debian's usbip through vusbd and runs usbtest cases 1 2 9 10 13 14 (14: length 256, vary 1, as
the kernel gadget needs). Guest A holds (busybox nc on a host port) until guest B is done.

Passes when every case passes in guest B, guest A served to the end, and vusbd exits 0 on
SIGTERM with URBs/bytes in its stats. The kernel's usbip-host hangs on unlink cases 11/12
(LAB.md), so they are not run. On failure: both guests' failure reports and the vusbd log tail.

Usage: tests/e2e/test_vusbd_kernel_peer.py [--build DIR] [--vusbd PATH] [--cases 1,2,...]
                                           [--iterations N] [--timeout S] [--log-level debug]
                                           [--capture]
--capture records vusbd's two ports (NAME.pcapng; lab/usbip_flow.py CAPTURE PORT --ep0 lists
the URBs of one port by seqnum).
Logs: <build>/e2e-logs/vusbd_kernel_peer.{peer,vm1}.console.log, .vusbd.log, .vusbd.toml,
.stats.json
"""
import argparse
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab  # noqa: E402
from test_vusbd_shared import CRASH_SIGNALS  # noqa: E402

CASES = [1, 2, 9, 10, 13, 14]
DEVICE = "gz"
VM = "vm1"
VM_BUSID = "1-1"
PEER_USBIPD_PORT = 3240


def peer_script(hold_port: int) -> str:
    """Guest A: the kernel's Gadget Zero exported by usbip-host + Debian's usbipd."""
    return f"""
echo "LAB-PHASE export"
lab_modprobe usbip-host || {{ echo "LAB-FAIL modprobe usbip-host"; exit 30; }}
lab_gadget_zero || {{ echo "LAB-FAIL could not build the configfs Gadget Zero"; exit 31; }}
BUSID=$(lab_find_usb 0525 a4a0 10) || {{ echo "LAB-FAIL no Gadget Zero on the dummy_hcd bus"; lab_usb_tree; exit 32; }}
usbip list -l 2>&1
LISTED=$(usbip list -p -l 2>/dev/null | sed -n 's/^busid=\\([^#]*\\)#usbid=0525:a4a0#.*/\\1/p' | head -n 1)
echo "LAB-INFO usbip list -l: Gadget Zero at busid=${{LISTED:-none}} (sysfs $BUSID)"
[ "$LISTED" = "$BUSID" ] || {{ echo "LAB-FAIL usbip list -l does not show 0525:a4a0 at $BUSID"; exit 33; }}
usbipd -D --tcp-port {PEER_USBIPD_PORT} 2>&1 || {{ echo "LAB-FAIL usbipd did not start"; exit 34; }}
usbip bind -b $BUSID 2>&1 || {{ echo "LAB-FAIL usbip bind -b $BUSID"; exit 35; }}
lab_wait_for /sys/bus/usb/drivers/usbip-host/$BUSID 5 || {{ echo "LAB-FAIL $BUSID not bound to usbip-host"; exit 36; }}
i=0; while ! netstat -ltn 2>/dev/null | grep -q ':{PEER_USBIPD_PORT} ' && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
echo "LAB-INFO exported busid=$BUSID port={PEER_USBIPD_PORT}"
echo "LAB-PHASE hold"
held=$(timeout 170 nc 10.0.2.2 {hold_port} </dev/null 2>&1)
echo "LAB-INFO hold released: ${{held:-no answer}}"
echo "LAB-INFO usbip-host status: $(cat /sys/bus/usb/devices/$BUSID/usbip_status 2>/dev/null)"
exit 0
"""


def client_script(vm_port: int, gate_port: int, cases, iterations: int) -> str:
    """Guest B: attaches vm1's 1-1 through vusbd and runs the usbtest cases."""
    specs = []
    for c in cases:
        base = lab.CASES.get(c, lab.Case(c))
        specs.append(lab.Case(base.num, iterations or base.iterations, base.length, base.vary,
                              base.sglen))
    return f"""
echo "LAB-PHASE gate"
go=$(timeout 120 nc 10.0.2.2 {gate_port} </dev/null 2>&1)
echo "LAB-INFO gate: ${{go:-no answer}}"
[ "$go" = go ] || {{ echo "LAB-FAIL the host never said vusbd was ready"; exit 19; }}
{lab.attach_usbtest(vm_port, VM_BUSID)}
{lab.usbtest_phase(specs)}
"""


class Guest(lab.GuestThread):
    """A guest on its own thread; the peer reports the bus id it exported."""

    def __init__(self, role: str, name: str, script: str, t0: float, modules, hostfwd=()):
        super().__init__(name, script, t0, modules=modules, hostfwd=hostfwd)
        self.role = role
        self.exported = threading.Event()
        self.busid: str | None = None

    def on_marker(self, line: str) -> None:
        e = re.match(r"LAB-INFO exported busid=(\S+)", line)
        if e:
            self.busid = e.group(1)
            self.exported.set()


def vusbd_toml(peer_port: int, busid: str, vm_port: int) -> str:
    return "\n".join(["[[vm]]", f'name = "{VM}"', f'listen = "127.0.0.1:{vm_port}"', "",
                      "[[device]]", f'name = "{DEVICE}"',
                      f'source = "usbip://127.0.0.1:{peer_port}/{busid}"', 'mode = "shared"',
                      f'vms = ["{VM}"]', ""])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--stub", help="accepted for symmetry with the other vusbd tests; unused")
    ap.add_argument("--vusbd", help="vusbd binary (default: <build>/bin/vusbd)")
    ap.add_argument("--cases", help="comma-separated usbtest cases (default: %s)"
                    % ",".join(map(str, CASES)))
    ap.add_argument("--iterations", type=int, default=50, help="iterations per case")
    ap.add_argument("--timeout", type=float, default=150, help="wall-clock limit per guest")
    ap.add_argument("--memory", type=int, default=256, help="guest memory (MiB)")
    ap.add_argument("--log-level", default="info", help="vusbd --log-level")
    ap.add_argument("--capture", action="store_true",
                    help="dumpcap vusbd's ports into <logs>/NAME.pcapng")
    ap.add_argument("--name", default="vusbd_kernel_peer", help="log name prefix")
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    cases = [int(c) for c in a.cases.split(",")] if a.cases else list(CASES)
    if {11, 12} & set(cases):
        print("note: cases 11/12 hang the kernel's own usbip-host (LAB.md); expect a hang")
    name = a.name
    logs = lab.logs_dir()

    t0 = time.monotonic()
    if not lab.ready():
        return 1
    t_prep = time.monotonic() - t0
    vusbd = Path(a.vusbd) if a.vusbd else lab.build_dir() / "bin" / "vusbd"
    if not vusbd.is_file():
        print(f"FAIL: {vusbd} not found (build it first)")
        return 1

    pa, p1 = lab.free_ports(2)
    hold = lab.Barrier(99, 600)   # guest A waits here until the host releases it
    gate = lab.Barrier(99, 600)   # guest B waits here until vusbd has imported the peer's device
    vusbd_log = logs / f"{name}.vusbd.log"
    stats_path = logs / f"{name}.stats.json"
    toml = logs / f"{name}.vusbd.toml"
    cap_path = logs / f"{name}.pcapng"
    vusbd_proc = None
    vusbd_rc = None
    cap_proc = None
    problems: list = []
    marks: dict = {}
    during = ""
    t_guests = 0.0
    peer = Guest("peer", f"{name}.peer", peer_script(hold.port), t0, ["usbip-host"],
                 hostfwd=[f"tcp:127.0.0.1:{pa}-:{PEER_USBIPD_PORT}"])
    client = Guest("vm1", f"{name}.{VM}", client_script(p1, gate.port, cases, a.iterations), t0,
                   ["usbtest", "vhci-hcd"])
    threads = []
    try:
        if a.capture:
            cap_path.unlink(missing_ok=True)
            cap_proc = lab.start_capture([pa, p1], cap_path)
        tg = time.monotonic()
        threads.append(peer.start(a.timeout, a.memory))
        threads.append(client.start(a.timeout, a.memory))
        # Wait for guest A's export (or for it to give up).
        while not peer.exported.is_set() and not peer.finished.is_set():
            peer.exported.wait(0.2)
        if not peer.exported.is_set():
            problems.append("guest A (peer) never exported its Gadget Zero")
        else:
            marks["peer exported"] = time.monotonic() - t0
            lab.log(f"peer exports busid {peer.busid}; host 127.0.0.1:{pa} -> guest A:"
                    f"{PEER_USBIPD_PORT}")
            toml.write_text(vusbd_toml(pa, peer.busid, p1))
            stats_path.unlink(missing_ok=True)
            vusbd_proc = lab.start_process([vusbd, "--config", toml, "--stats-json", stats_path,
                                "--log-level", a.log_level], vusbd_log)
            if not lab.wait_log_line(vusbd_log, "vusbd: ready", vusbd_proc, 30):
                problems.append(f"vusbd did not log 'vusbd: ready' within 30 s (exit status "
                                f"{vusbd_proc.poll()}): it could not import "
                                f"usbip://127.0.0.1:{pa}/{peer.busid}")
            else:
                marks["vusbd ready (imported)"] = time.monotonic() - t0
                lab.log(f"vusbd ready: vm1 on {p1}, importing {peer.busid} from the peer")
                gate.release()
        if problems:
            gate.release()  # guest B then sees no device and fails fast
        client.finished.wait(a.timeout + 30)
        marks["client done"] = time.monotonic() - t0
        # What vusbd said while guest B ran (guest A going away afterwards is expected).
        during = vusbd_log.read_text(errors="replace") if vusbd_log.exists() else ""
        hold.release()
        for th in threads:
            th.join()
        t_guests = time.monotonic() - tg
    finally:
        gate.release()
        hold.release()
        gate.close()
        hold.close()
        if vusbd_proc is not None:
            vusbd_rc = lab.stop_process(vusbd_proc)
        if cap_proc is not None:
            cap_proc.terminate()
            cap_proc.wait(timeout=10)
    t_total = time.monotonic() - t0

    # ---- results
    res = client.run.usbtest("main") if client.run else []
    print(f"guest B (vm1 through vusbd port {p1}, device imported from guest A's kernel "
          f"usbipd busid {peer.busid} via 127.0.0.1:{pa}):")
    print(lab.usbtest_table(res, cases))
    failed = lab.usbtest_failures(res, cases)
    if failed:
        problems.append(f"guest B: cases {failed} did not pass")
    for g in (peer, client):
        if g.error:
            problems.append(f"{g.role}: run_guest raised {g.error}")
            continue
        run = g.run
        if run.timed_out:
            problems.append(f"{g.role}: the guest timed out after {run.wall_secs:.0f}s")
        elif run.panicked:
            problems.append(f"{g.role}: the guest kernel panicked")
        elif run.rc is None:
            problems.append(f"{g.role}: the guest script did not finish")
        elif run.rc != 0 and not (g is client and failed):
            problems.append(f"{g.role}: the guest script exited {run.rc}")
        for m in run.find("LAB-FAIL"):
            problems.append(f"{g.role} guest: " + m.line[len("LAB-FAIL"):].strip())
    if peer.run and client.run:
        a_end = peer.run.find("LAB-RESULT")
        held = [t for t, line in peer.events if line.startswith("LAB-INFO hold released")]
        c_end = [t for t, line in client.events if line.startswith("LAB-INFO usbtest-end")]
        if held and c_end and held[0] < c_end[0]:
            problems.append("guest A stopped holding before guest B finished its cases")
        if not a_end:
            problems.append("guest A did not finish its script")

    print("timeline (host clock, seconds since start):")
    rows = [(t, g.role, line) for g in (peer, client) for t, line in g.events]
    rows += [(t, "host", what) for what, t in marks.items()]
    for t, who, line in sorted(rows):
        if line.startswith("USBTEST case="):
            f = dict(x.split("=", 1) for x in line.split()[1:] if "=" in x)
            line = f"case {f.get('case')} {f.get('result')} errno={f.get('errno')} " \
                   f"secs={f.get('secs')}"
        print(f"  {t:7.2f}s  {who:<4}  {line}")

    text = vusbd_log.read_text(errors="replace") if vusbd_log.exists() else ""
    if vusbd_proc is not None:
        if vusbd_rc is not None and -vusbd_rc in CRASH_SIGNALS:
            problems.append(f"vusbd died with signal {-vusbd_rc}")
        elif vusbd_rc != 0:
            problems.append(f"vusbd exited {vusbd_rc} on SIGTERM (expected 0)")
        if "AddressSanitizer" in text or "runtime error:" in text:
            problems.append("vusbd reported a sanitizer error")
        if " is gone (" in during:
            problems.append("vusbd lost the peer's device while guest B ran: "
                            + next(l for l in during.splitlines() if " is gone (" in l))
        try:
            stats = json.loads(stats_path.read_text())
            s = (stats.get("vms", {}).get(VM) or {}).get(DEVICE) or {}
            print(f"vusbd stats ({stats_path}): {VM}/{DEVICE}: "
                  + " ".join(f"{k}={s.get(k)}" for k in ("urbs", "bytes_in", "bytes_out",
                                                         "cache_hits", "stalls", "errors",
                                                         "refused", "avg_latency_us")))
            for k in ("urbs", "bytes_in", "bytes_out"):
                if not isinstance(s.get(k), int) or s[k] <= 0:
                    problems.append(f"vusbd stats: vms.{VM}.{DEVICE}.{k} = {s.get(k)!r}, "
                                    "expected > 0")
        except (OSError, ValueError) as e:
            problems.append(f"vusbd stats JSON {stats_path} unreadable: {e}")
    if cap_proc is not None:
        flow = Path(__file__).resolve().parent / "lab" / "usbip_flow.py"
        print(f"capture: {cap_path}; {flow} {cap_path} {p1} --ep0  # guest B <-> vusbd; "
              f"{flow} {cap_path} {pa} --ep0  # vusbd <-> guest A's usbipd")
    walls = ", ".join(f"{g.role} {g.run.wall_secs:.1f}s" for g in (peer, client) if g.run)
    print(f"timing: prepare {t_prep:.1f}s, guests {t_guests:.1f}s ({walls}), "
          f"total {t_total:.1f}s")
    if problems:
        print("FAIL: " + "; ".join(problems))
        for g in (peer, client):
            print(f"=== {g.role} ===")
            print(g.run.failure_report(60) if g.run else g.error)
        print(f"--- vusbd log tail ({vusbd_log}, exit status {vusbd_rc}) ---")
        print(lab.tail(vusbd_log, 80))
        return 1
    print(f"PASS: {len(cases)} usbtest cases in guest B through vusbd against the kernel's "
          f"Gadget Zero exported by guest A's usbip-host + usbipd (busid {peer.busid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
