#!/usr/bin/python3
"""e2e.vusbd_shared — two Linux guests use ONE emulated Gadget Zero at the same time through vusbd.

Starts `vusb-stub --listen 127.0.0.1:P0 --emulate gadget-zero=1-1`, then `vusbd --config <toml>`
with two VMs (vm1 on 127.0.0.1:P1, vm2 on 127.0.0.1:P2) and the stub's 1-1 imported once as device
"gz", mode "shared", given to vm1 by the config; `vusbctl attach --vm vm2 -d gz` then gives it to
vm2 through the control API (it must land at vm2's bus id 1-1). Boots two guests concurrently (two QEMU TCG
processes, 1 vCPU each); each attaches its own VM port's bus id 1-1 with Debian's usbip, waits for
usbtest to bind, then waits at a host barrier (the guests cannot see each other: each one connects
to a host TCP port with busybox nc, and the host answers "go" to both once both are there) so the
usbtest runs start together and overlap. Each guest runs usbtest cases 1 2 3 4 9 10 13 14.

Then both guests reload usbtest with alt=1 and, after a second barrier, run the iso cases 15 and 16
(64 iterations) at once; vusbd fans the iso IN stream out (one VM's URBs drive the device, the
other receives copies), so the stats must show fanned-out packets (--no-iso skips this).

Passes when both guests pass every case, vusbd exits 0 on SIGTERM, and `vusbctl --json stats`
(taken before vusbd stops) shows URBs and bytes (in and out) for vm1 and vm2 on device gz
(cache_hits is reported, not asserted). Prints
a timeline of both guests (host clock) to show the overlap. On failure: each guest's failure report,
the vusbd log tail and the stub log tail.

--mode timeslice (e2e.vusbd_timeslice, with --no-iso) switches gz to timeslice mode with
`vusbctl share` before the guests start: the VMs take turns on the device and the stats must show
turns for both and switches.

--direct checks the two-guest harness without vusbd: vm1 and vm2 each talk to their own vusb-stub
(two stubs, one Gadget Zero each). Same guests, same cases, same barrier.

Usage: tests/e2e/test_vusbd_shared.py [--build DIR] [--stub PATH] [--vusbd PATH] [--direct]
                                      [--cases 1,2,...] [--iterations N] [--timeout S]
                                      [--guests 1|2] [--log-level debug] [--capture]
--guests 1 boots only vm1 (vusbd still serves both VMs): a failure that remains is not about
sharing. --capture records the stub and VM ports (NAME.pcapng); lab/usbip_flow.py CAPTURE PORT
--ep0 then lists that port's URBs by seqnum, in wire order.
Logs: <build>/e2e-logs/vusbd_shared.{vm1,vm2}.console.log, .vusbd.log, .stub.log, .stats.json,
.vusbd.toml (--direct: vusbd_direct.*; --name changes the prefix)
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
import lab  # noqa: E402

CASES = [1, 2, 3, 4, 9, 10, 13, 14]
ISO_CASES = [15, 16]  # after both guests reload usbtest with alt=1 (Gadget Zero's iso setting)
ISO_ITERATIONS = 64
VMS = ["vm1", "vm2"]
DEVICE = "gz"
STUB_BUSID = "1-1"
VM_BUSID = "1-1"  # the first (only) device each VM sees
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}


def vusbd_toml(stub_port: int, vm_ports: dict, control_port: int) -> str:
    out = ["[control]", f'listen = "127.0.0.1:{control_port}"', "", lab.control_token()]
    for vm in VMS:
        out += ["[[vm]]", f'name = "{vm}"', f'listen = "127.0.0.1:{vm_ports[vm]}"', ""]
    out += ["[[device]]", f'name = "{DEVICE}"',
            f'source = "usbip://127.0.0.1:{stub_port}/{STUB_BUSID}"', 'mode = "shared"',
            f'vms = ["{VMS[0]}"]', ""]
    return "\n".join(out)


# ---------------------------------------------------------------- the guests

def guest_script(vm: str, port: int, barrier_port: int, cases, iterations: int | None,
                 iso_barrier_port: int | None = None) -> str:
    specs = []
    for c in cases:
        base = lab.CASES.get(c, lab.Case(c))
        specs.append(lab.Case(base.num, iterations or base.iterations, base.length, base.vary,
                              base.sglen))
    return f"""
{lab.attach_usbtest(port, VM_BUSID)}
echo "LAB-PHASE barrier"
go=$(timeout 90 nc 10.0.2.2 {barrier_port} </dev/null 2>&1)
echo "LAB-INFO barrier: ${{go:-no answer}}"
{lab.usbtest_phase(specs) if iso_barrier_port is None else main_and_iso_phases(specs, iso_barrier_port)}
"""


def main_and_iso_phases(specs, iso_barrier_port: int) -> str:
    """The main cases, then usbtest reloaded with alt=1 and, after a second barrier, the iso cases
    in both guests at once (iso IN is fanned out by vusbd), then detach."""
    iso = [lab.Case(c, ISO_ITERATIONS, lab.CASES[c].length, lab.CASES[c].vary, lab.CASES[c].sglen)
           for c in ISO_CASES]
    return f"""echo "LAB-PHASE main"
echo "LAB-INFO usbtest-start"
{lab.usbtest_cmd(specs, timeout=30)}
rc=$?
echo "LAB-INFO usbtest-end rc=$rc"
[ $rc -eq 3 ] && {{ echo "LAB-FAIL a usbtest case hung"; exit 23; }}
echo "LAB-PHASE iso-setup"
b=$(lab_usbtest_rebind alt=1) || {{ echo "LAB-FAIL usbtest did not bind again with alt=1"; exit 22; }}
go=$(timeout 90 nc 10.0.2.2 {iso_barrier_port} </dev/null 2>&1)
echo "LAB-INFO iso barrier: ${{go:-no answer}}"
echo "LAB-PHASE iso"
echo "LAB-INFO iso-start"
{lab.usbtest_cmd(iso, timeout=30)}
rc2=$?
echo "LAB-INFO iso-end rc=$rc2"
[ $rc2 -eq 3 ] && {{ echo "LAB-FAIL an iso usbtest case hung"; exit 24; }}
echo "LAB-PHASE detach"
usbip detach -p 0 2>&1 || echo "LAB-WARN usbip detach failed"
[ $rc -eq 0 ] && [ $rc2 -eq 0 ]"""


class Guest(lab.GuestThread):
    """A usbtest guest; when it ends, nobody waits for it at the barriers any more."""

    def __init__(self, vm: str, name: str, script: str, t0: float, barriers: list):
        super().__init__(name, script, t0, modules=["usbtest", "vhci-hcd"])
        self.vm, self.barriers = vm, barriers

    def on_finish(self) -> None:
        for b in self.barriers:
            b.release()


def timeline(guests) -> str:
    rows = []
    for g in guests:
        for t, line in g.events:
            if line.startswith("USBTEST case="):
                f = dict(x.split("=", 1) for x in line.split()[1:] if "=" in x)
                line = f"case {f.get('case')} {f.get('result')} secs={f.get('secs')}"
            rows.append((t, g.vm, line))
    rows.sort()
    return "\n".join(f"  {t:7.2f}s  {vm}  {line}" for t, vm, line in rows)


def overlap(guests) -> tuple:
    """(start, end) of each guest's usbtest run on the host clock, and their overlap in seconds."""
    spans = {}
    for g in guests:
        s, e = g.at("LAB-INFO usbtest-start"), g.at("LAB-INFO usbtest-end")
        if s is not None and e is not None:
            spans[g.vm] = (s, e)
    if len(spans) < 2:
        return spans, None
    lo = max(s for s, _ in spans.values())
    hi = min(e for _, e in spans.values())
    return spans, hi - lo


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--stub", help="vusb-stub binary (default: <build>/bin/vusb-stub)")
    ap.add_argument("--vusbd", help="vusbd binary (default: <build>/bin/vusbd)")
    ap.add_argument("--vusbctl", help="vusbctl binary (default: <build>/bin/vusbctl)")
    ap.add_argument("--direct", action="store_true",
                    help="no vusbd: each guest talks to its own vusb-stub (harness self-check)")
    ap.add_argument("--cases", help="comma-separated usbtest cases (default: %s)"
                    % ",".join(map(str, CASES)))
    ap.add_argument("--iterations", type=int, default=50, help="iterations per case")
    ap.add_argument("--timeout", type=float, default=150, help="wall-clock limit per guest")
    ap.add_argument("--memory", type=int, default=256, help="guest memory (MiB)")
    ap.add_argument("--log-level", default="info", help="vusbd --log-level")
    ap.add_argument("--guests", type=int, choices=(1, 2), default=2,
                    help="boot only vm1 with 1 (vusbd still serves both VMs): tells a sharing "
                         "problem from a plain forwarding one")
    ap.add_argument("--capture", action="store_true",
                    help="dumpcap the stub and VM ports into <logs>/NAME.pcapng (decode with "
                         "lab/usbip_flow.py CAPTURE PORT --ep0)")
    ap.add_argument("--mode", choices=("shared", "timeslice"), default="shared",
                    help="timeslice: switch gz to timeslice mode with vusbctl share before the "
                         "guests start; the VMs then take turns (the stats must show turns for "
                         "both VMs and switches)")
    ap.add_argument("--no-iso", action="store_true",
                    help="skip the alt=1 reload and the concurrent iso cases 15, 16")
    ap.add_argument("--name", help="log name prefix (default: vusbd_shared, or vusbd_direct)")
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    cases = [int(c) for c in a.cases.split(",")] if a.cases else list(CASES)
    name = a.name or ("vusbd_direct" if a.direct else f"vusbd_{a.mode}")
    logs = lab.logs_dir()
    booted = VMS[:a.guests]

    t0 = time.monotonic()
    if not lab.ready():
        return 1
    t_prep = time.monotonic() - t0

    stub = Path(a.stub) if a.stub else lab.build_dir() / "bin" / "vusb-stub"
    vusbd = Path(a.vusbd) if a.vusbd else lab.build_dir() / "bin" / "vusbd"
    vusbctl = Path(a.vusbctl) if a.vusbctl else lab.build_dir() / "bin" / "vusbctl"
    for binary in [stub] + ([] if a.direct else [vusbd, vusbctl]):
        if not binary.is_file():
            print(f"FAIL: {binary} not found (build it first)")
            return 1

    stubs: dict = {}       # label -> (proc, log path)
    vusbd_proc = None
    vusbd_rc = None
    vusbd_log = logs / f"{name}.vusbd.log"
    stats_path = logs / f"{name}.stats.json"
    stub_rcs: dict = {}
    guests: list = []
    barrier = None
    iso_barrier = None
    problems: list = []
    t_guests = 0.0
    cap_proc = None
    cap_path = logs / f"{name}.pcapng"
    p0, p1, p2, pc = lab.free_ports(4)
    stats = None
    vm_ports = {"vm1": p1, "vm2": p2}
    try:
        if a.capture:
            cap_path.unlink(missing_ok=True)
            cap_proc = lab.start_capture([p1, p2] if a.direct else [p0, p1, p2], cap_path)
        if a.direct:
            for vm in VMS:
                log_path = logs / f"{name}.stub-{vm}.log"
                stubs[vm] = (lab.start_process([stub, "--listen", f"127.0.0.1:{vm_ports[vm]}", "--emulate",
                                    f"gadget-zero={STUB_BUSID}"], log_path), log_path)
            for vm in VMS:
                proc, log_path = stubs[vm]
                if not lab.wait_listening(vm_ports[vm], proc, 15):
                    print(f"FAIL: vusb-stub ({vm}) did not listen on 127.0.0.1:{vm_ports[vm]} "
                          f"(exit status {proc.poll()})\n{lab.tail(log_path)}")
                    return 1
        else:
            log_path = logs / f"{name}.stub.log"
            stubs["stub"] = (lab.start_process([stub, "--listen", f"127.0.0.1:{p0}", "--emulate",
                                    f"gadget-zero={STUB_BUSID}"], log_path), log_path)
            if not lab.wait_listening(p0, stubs["stub"][0], 15):
                print(f"FAIL: vusb-stub did not listen on 127.0.0.1:{p0} "
                      f"(exit status {stubs['stub'][0].poll()})\n{lab.tail(log_path)}")
                return 1
            toml = logs / f"{name}.vusbd.toml"
            toml.write_text(vusbd_toml(p0, vm_ports, pc))
            stats_path.unlink(missing_ok=True)
            vusbd_proc = lab.start_process([vusbd, "--config", toml, "--log-level", a.log_level], vusbd_log)
            if not lab.wait_log_line(vusbd_log, "vusbd: ready", vusbd_proc, 20):
                print(f"FAIL: vusbd did not log 'vusbd: ready' within 20 s "
                      f"(exit status {vusbd_proc.poll()})\n--- vusbd log ({vusbd_log}) ---\n"
                      f"{lab.tail(vusbd_log, 60)}\n--- config ---\n{toml.read_text()}")
                return 1
            lab.log(f"vusbd ready: vm1 on {p1}, vm2 on {p2}, importing {STUB_BUSID} from {p0}")
            ctl = [vusbctl, "--api", f"127.0.0.1:{pc}"]
            r = subprocess.run(ctl + ["--json", "attach", "--vm", VMS[1], "-d", DEVICE],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=20)
            lab.log(f"vusbctl attach --vm {VMS[1]} -d {DEVICE}: exit {r.returncode}")
            try:
                busid = json.loads(r.stdout).get("busid") if r.returncode == 0 else None
            except ValueError:
                busid = None
            if busid == STUB_BUSID and a.mode != "shared":
                r2 = subprocess.run(ctl + ["share", "-d", DEVICE, "--mode", a.mode],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    timeout=20)
                lab.log(f"vusbctl share -d {DEVICE} --mode {a.mode}: exit {r2.returncode}")
                if r2.returncode != 0:
                    print(f"FAIL: vusbctl share --mode {a.mode}: {r2.stdout}")
                    return 1
            if busid != STUB_BUSID:
                print(f"FAIL: vusbctl attach --vm {VMS[1]} -d {DEVICE} exited {r.returncode}, "
                      f"bus id {busid!r} (expected {STUB_BUSID}):\n{r.stdout}\n"
                      f"{lab.tail(vusbd_log, 40)}")
                return 1

        barrier = lab.Barrier(len(booted), 60)
        iso_barrier = lab.Barrier(len(booted), 60)
        tg = time.monotonic()
        threads = []
        for vm in booted:
            g = Guest(vm, f"{name}.{vm}",
                      guest_script(vm, vm_ports[vm], barrier.port, cases, a.iterations,
                                   None if a.no_iso else iso_barrier.port), t0,
                      [barrier, iso_barrier])
            guests.append(g)
            threads.append(g.start(a.timeout, a.memory))
        for th in threads:
            th.join()
        t_guests = time.monotonic() - tg
        if vusbd_proc is not None:
            r = subprocess.run(ctl + ["--json", "stats"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=20)
            stats_path.write_text(r.stdout)
            try:
                stats = json.loads(r.stdout) if r.returncode == 0 else None
            except ValueError:
                stats = None
            if stats is None:
                problems.append(f"vusbctl --json stats exited {r.returncode}: {r.stdout[:300]}")
    finally:
        for b in (barrier, iso_barrier):
            if b is not None:
                b.close()
        if vusbd_proc is not None:
            vusbd_rc = lab.stop_process(vusbd_proc)
        for label, (proc, _) in stubs.items():
            stub_rcs[label] = lab.stop_process(proc)
        if cap_proc is not None:
            cap_proc.terminate()
            cap_proc.wait(timeout=10)
    t_total = time.monotonic() - t0

    # ---- results
    for g in guests:
        print(f"{g.vm} ({'own vusb-stub' if a.direct else 'vusbd'} port {vm_ports[g.vm]}):")
        res = g.run.usbtest("main") if g.run else []
        print(lab.usbtest_table(res, cases))
        if g.error:
            problems.append(f"{g.vm}: run_guest raised {g.error}")
            continue
        run = g.run
        failed = lab.usbtest_failures(res, cases)
        if failed:
            problems.append(f"{g.vm}: cases {failed} did not pass")
        if not a.no_iso:
            iso_res = run.usbtest("iso")
            print(f"  after reloading usbtest with alt=1, at the same time in both guests:")
            print(lab.usbtest_table(iso_res, ISO_CASES))
            iso_failed = lab.usbtest_failures(iso_res, ISO_CASES)
            if iso_failed:
                problems.append(f"{g.vm}: iso cases {iso_failed} did not pass")
        if run.timed_out:
            problems.append(f"{g.vm}: the guest timed out after {run.wall_secs:.0f}s")
        elif run.panicked:
            problems.append(f"{g.vm}: the guest kernel panicked")
        elif run.rc is None:
            problems.append(f"{g.vm}: the guest script did not finish")
        elif run.rc != 0 and not failed:
            problems.append(f"{g.vm}: the guest script exited {run.rc}")
        for m in run.find("LAB-FAIL"):
            problems.append(f"{g.vm} guest: " + m.line[len("LAB-FAIL"):].strip())

    print("timeline (host clock, seconds since start):")
    print(timeline(guests))
    spans, ov = overlap(guests)
    for vm, (s, e) in sorted(spans.items()):
        print(f"  {vm} usbtest run: {s:.2f}s .. {e:.2f}s ({e - s:.2f}s)")
    if ov is None:
        print("  overlap: unknown (a guest did not run its cases)")
    elif ov > 0:
        print(f"  overlap: {ov:.2f}s (both guests' usbtest runs were in flight together)")
    else:
        print(f"  WARN: no overlap ({ov:.2f}s): the usbtest runs did not run at the same time")
    if barrier is not None:
        print(f"  barrier: {barrier.arrivals} guest(s) arrived, released "
              + (f"at {barrier.released_at - t0:.2f}s" if barrier.released_at else "never"))

    # ---- host processes
    for label, (proc, log_path) in stubs.items():
        rc = stub_rcs.get(label)
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if rc is not None and -rc in CRASH_SIGNALS:
            problems.append(f"vusb-stub ({label}) died with signal {-rc}")
        if "AddressSanitizer" in text or "runtime error:" in text:
            problems.append(f"vusb-stub ({label}) reported a sanitizer error")
    if not a.direct:
        text = vusbd_log.read_text(errors="replace") if vusbd_log.exists() else ""
        if vusbd_rc != 0:
            problems.append(f"vusbd exited {vusbd_rc} on SIGTERM (expected 0)")
        if "AddressSanitizer" in text or "runtime error:" in text:
            problems.append("vusbd reported a sanitizer error")
        if stats is not None:
            print(f"vusbctl stats ({stats_path}):")
            for vm in booted:
                s = (stats.get("vms", {}).get(vm) or {}).get(DEVICE)
                if not isinstance(s, dict):
                    problems.append(f"vusbd stats: no entry vms.{vm}.{DEVICE}")
                    print(f"  {vm}/{DEVICE}: missing")
                    continue
                print(f"  {vm}/{DEVICE}: " + " ".join(f"{k}={s.get(k)}" for k in
                                                      ("urbs", "bytes_in", "bytes_out",
                                                       "cache_hits", "errors", "refused",
                                                       "iso_fanout_packets",
                                                       "iso_fanout_dropped")
                                                      if k in s))
                for k in ("urbs", "bytes_in", "bytes_out"):
                    if not isinstance(s.get(k), int) or s[k] <= 0:
                        problems.append(f"vusbd stats: vms.{vm}.{DEVICE}.{k} = {s.get(k)!r}, "
                                        "expected > 0")
                if not s.get("cache_hits"):
                    print(f"  note: {vm}/{DEVICE} cache_hits = {s.get('cache_hits')!r} "
                          "(expected > 0, not asserted)")
            if a.mode == "timeslice" and len(booted) == 2:
                dev = stats.get("devices", {}).get(DEVICE, {})
                turns = {vm: ((stats.get("vms", {}).get(vm) or {}).get(DEVICE) or {}).get("turns", 0)
                         for vm in booted}
                print(f"  timeslice: {dev.get('switches')} switches, turns {turns}, "
                      f"held ms " + ", ".join(
                          f"{vm} {((stats.get('vms', {}).get(vm) or {}).get(DEVICE) or {}).get('held_ms', 0):.0f}"
                          for vm in booted))
                if dev.get("mode") != "timeslice":
                    problems.append(f"gz is in mode {dev.get('mode')!r}, not timeslice")
                if not dev.get("switches") or any(t <= 0 for t in turns.values()):
                    problems.append("timeslice: the VMs did not take turns (switches "
                                    f"{dev.get('switches')!r}, turns {turns})")
            if not a.no_iso and a.mode == "shared" and len(booted) == 2:
                fanned = sum(((stats.get("vms", {}).get(vm) or {}).get(DEVICE) or {})
                             .get("iso_fanout_packets", 0) for vm in booted)
                if fanned <= 0:
                    problems.append("vusbd stats: no iso IN packet was fanned out while both "
                                    "guests ran case 16")

    if cap_proc is not None:
        flow = Path(__file__).resolve().parent / "lab" / "usbip_flow.py"
        print(f"capture: {cap_path}; URB flow per port: " + "; ".join(
            f"{flow} {cap_path} {p} --ep0   # {who}" for who, p in
            list(vm_ports.items()) + ([] if a.direct else [("vusbd <-> stub", p0)])))
    walls = ", ".join(f"{g.vm} {g.run.wall_secs:.1f}s" for g in guests if g.run)
    print(f"timing: prepare {t_prep:.1f}s, guests {t_guests:.1f}s ({walls}), total {t_total:.1f}s")
    if problems:
        print("FAIL: " + "; ".join(problems))
        for g in guests:
            print(f"=== {g.vm} ===")
            print(g.run.failure_report(60) if g.run else g.error)
        if not a.direct:
            print(f"--- vusbd log tail ({vusbd_log}, exit status {vusbd_rc}) ---")
            print(lab.tail(vusbd_log, 80))
        for label, (_, log_path) in stubs.items():
            print(f"--- vusb-stub ({label}) log tail ({log_path}, exit status "
                  f"{stub_rcs.get(label)}) ---")
            print(lab.tail(log_path, 40))
        return 1
    print(f"PASS: {len(booted)} guest(s) x {len(cases)} usbtest cases at once "
          + ("(each on its own vusb-stub)" if a.direct else
             f"through vusbd, one Gadget Zero in {a.mode} mode"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
