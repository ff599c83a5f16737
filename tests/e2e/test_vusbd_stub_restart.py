#!/usr/bin/python3
"""e2e.vusbd_stub_restart — the server vusbd imports from dies mid-transfer and comes back.

vusb-stub (Gadget Zero, 127.0.0.1:P0) -> vusbd (vm1 on 127.0.0.1:P1) -> one guest. The guest
attaches vm1's 1-1 and starts a long bulk usbtest case (default case 1, 100000 x 4096 bytes:
minutes of work). Once it runs, the host SIGKILLs vusb-stub. Asserted:
  - the guest does not hang: the usbtest case returns, with an error (its errno is recorded),
    within --max-return seconds of the kill, and the guest's vhci-hcd sees the port disconnect
    (the attached device leaves /sys/bus/usb/devices);
  - vusbd logs the device gone, and after the host restarts vusb-stub on the same port (about
    --restart-after s after the kill) logs it imported and offered to vm1 again;
  - the guest attaches again (`usbip attach`, retried until vusbd offers the device) and usbtest
    cases 1 and 2 pass;
  - vusbd exits 0 on SIGTERM, nothing crashed.
Prints a timeline on the host clock (kill, usbtest return, vhci disconnect, vusbd gone / import
/ offer, re-attach, pass), the guest kernel's lines about the disconnect (usbtest's status, e.g.
-108 = ESHUTDOWN from the in-flight URBs vusbd completed) placed on the host clock too.

Usage: tests/e2e/test_vusbd_stub_restart.py [--build DIR] [--stub PATH] [--vusbd PATH]
           [--long 1:100000:4096] [--kill-after S] [--restart-after S] [--max-return S]
           [--timeout S] [--log-level debug] [--capture]
--capture records the VM port and the stub port (NAME.pcapng) and lists the RET_SUBMITs that
carried an error to the guest (seqnum, status), decoded by lab/usbip_flow.py.
Logs: <build>/e2e-logs/vusbd_stub_restart.{vm1.console.log,vusbd.log,vusbd.toml,stub.log,
stub2.log,stats.json}
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab  # noqa: E402
from test_vusbd_shared import CRASH_SIGNALS  # noqa: E402

DEVICE = "gz"
VM = "vm1"
STUB_BUSID = "1-1"
VM_BUSID = "1-1"
AFTER = [1, 2]
DEFAULT_LONG = "27:20000:16384:0:8"  # queued 16 KiB OUT URBs: several on the wire at the kill


class LogFollower:
    """Stamps each new line of a log file with the host clock (polled every 20 ms)."""

    def __init__(self, path: Path, t0: float):
        self.path, self.t0 = path, t0
        self.lines: list = []  # (host secs since t0, line)
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self) -> None:
        pos, buf = 0, ""
        while True:
            stopping = self._stop.is_set()
            try:
                with open(self.path, errors="replace") as f:
                    f.seek(pos)
                    data = f.read()
                    pos = f.tell()
            except OSError:
                data = ""
            if data:
                now = time.monotonic() - self.t0
                buf += data
                *done, buf = buf.split("\n")
                self.lines += [(now, line) for line in done]
            if stopping:
                return
            self._stop.wait(0.02)

    def first(self, text: str, after: float = 0.0):
        """(time, line) of the first line containing text at or after `after`, else None."""
        for t, line in self.lines:
            if t >= after and text in line:
                return t, line
        return None

    def close(self) -> None:
        self._stop.set()
        self._th.join(timeout=2)


def guest_script(vm_port: int, long_spec: str, max_reattach: float) -> str:
    return f"""
up() {{ cut -d' ' -f1 /proc/uptime; }}
{lab.attach_usbtest(vm_port, VM_BUSID)}
dev=${{b%%:*}}
echo "LAB-PHASE long"
echo "LAB-INFO long-start uptime=$(up)"
usbtest-ioctl -w 10 -t 30 {long_spec}
rc=$?
echo "LAB-INFO long-end rc=$rc uptime=$(up)"
i=0; while [ -e /sys/bus/usb/devices/$dev ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
if [ -e /sys/bus/usb/devices/$dev ]; then
  echo "LAB-FAIL vhci-hcd still shows $dev 15 s after the usbtest case returned"; usbip port 2>&1; exit 24
fi
echo "LAB-INFO vhci-disconnect dev=$dev uptime=$(up)"
usbip port 2>&1
echo "LAB-PHASE reattach"
n=0; t=$(( {int(max_reattach * 10)} ))
while ! usbip --tcp-port {vm_port} attach -r 10.0.2.2 -b {VM_BUSID} >/tmp/attach.out 2>&1; do
  n=$((n + 1)); [ $n -ge $t ] && break; sleep 0.1
done
cat /tmp/attach.out
[ $n -ge $t ] && {{ echo "LAB-FAIL usbip attach did not succeed again within {max_reattach:g} s"; exit 25; }}
echo "LAB-INFO reattached tries=$((n + 1)) uptime=$(up)"
b=$(lab_usbtest_bound 30) || {{ echo "LAB-FAIL usbtest did not bind the re-attached device"; lab_usb_tree; exit 26; }}
echo "LAB-INFO usbtest bound again to $b uptime=$(up)"
echo "LAB-PHASE after"
{lab.usbtest_cmd(AFTER, timeout=30)}
rc=$?
echo "LAB-INFO after-end rc=$rc uptime=$(up)"
echo "LAB-PHASE detach"
usbip detach -p 0 2>&1 || echo "LAB-WARN usbip detach failed"
[ $rc -eq 0 ]
"""


class Console(lab.MarkerLog):
    """The guest's markers on the host clock; tells when the long case has started."""

    def __init__(self, t0: float):
        super().__init__(t0)
        self.long_started = threading.Event()
        self.done = self.finished

    def on_marker(self, line: str) -> None:
        if line.startswith("LAB-INFO long-start"):
            self.long_started.set()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--stub", help="vusb-stub binary (default: <build>/bin/vusb-stub)")
    ap.add_argument("--vusbd", help="vusbd binary (default: <build>/bin/vusbd)")
    ap.add_argument("--long", default=DEFAULT_LONG,
                    help="the long usbtest case, CASE:ITER[:LEN[:VARY[:SGLEN]]] (default %(default)s)")
    ap.add_argument("--kill-after", type=float, default=2.0,
                    help="seconds of the long case before vusb-stub is SIGKILLed")
    ap.add_argument("--restart-after", type=float, default=1.0,
                    help="seconds after the kill when vusb-stub starts again on the same port")
    ap.add_argument("--max-return", type=float, default=8.0,
                    help="the usbtest case must return within this many seconds of the kill")
    ap.add_argument("--timeout", type=float, default=120, help="guest wall-clock limit")
    ap.add_argument("--log-level", default="info", help="vusbd --log-level")
    ap.add_argument("--capture", action="store_true",
                    help="dumpcap the VM and stub ports; show the error RET_SUBMITs to the guest")
    ap.add_argument("--name", default="vusbd_stub_restart", help="log name prefix")
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    name = a.name
    logs = lab.logs_dir()

    t0 = time.monotonic()
    if not lab.ready():
        return 1
    t_prep = time.monotonic() - t0
    stub = Path(a.stub) if a.stub else lab.build_dir() / "bin" / "vusb-stub"
    vusbd = Path(a.vusbd) if a.vusbd else lab.build_dir() / "bin" / "vusbd"
    for binary in (stub, vusbd):
        if not binary.is_file():
            print(f"FAIL: {binary} not found (build it first)")
            return 1

    p0, p1 = lab.free_ports(2)
    stub_logs = [logs / f"{name}.stub.log", logs / f"{name}.stub2.log"]
    stub_cmd = [stub, "--listen", f"127.0.0.1:{p0}", "--emulate", f"gadget-zero={STUB_BUSID}"]
    vusbd_log = logs / f"{name}.vusbd.log"
    stats_path = logs / f"{name}.stats.json"
    toml = logs / f"{name}.vusbd.toml"
    problems: list = []
    marks: list = []  # (host secs, what)
    stubs: list = []  # Popen, in start order
    stub_rcs: list = []
    vusbd_proc = None
    vusbd_rc = None
    follower = None
    console = Console(t0)
    result: dict = {}
    t_kill = None
    cap_proc = None
    cap_path = logs / f"{name}.pcapng"

    def mark(what: str) -> float:
        t = time.monotonic() - t0
        marks.append((t, what))
        lab.log(f"{t:7.2f}s {what}")
        return t

    try:
        if a.capture:
            cap_path.unlink(missing_ok=True)
            cap_proc = lab.start_capture([p0, p1], cap_path)
        stubs.append(lab.start_process(stub_cmd, stub_logs[0]))
        if not lab.wait_listening(p0, stubs[0], 15):
            print(f"FAIL: vusb-stub did not listen on 127.0.0.1:{p0} (exit status "
                  f"{stubs[0].poll()})\n{lab.tail(stub_logs[0])}")
            return 1
        toml.write_text("\n".join([
            "[[vm]]", f'name = "{VM}"', f'listen = "127.0.0.1:{p1}"', "",
            "[[device]]", f'name = "{DEVICE}"',
            f'source = "usbip://127.0.0.1:{p0}/{STUB_BUSID}"', 'mode = "shared"',
            f'vms = ["{VM}"]', ""]))
        stats_path.unlink(missing_ok=True)
        vusbd_log.unlink(missing_ok=True)
        vusbd_proc = lab.start_process([vusbd, "--config", toml, "--stats-json", stats_path,
                            "--log-level", a.log_level], vusbd_log)
        follower = LogFollower(vusbd_log, t0)
        if not lab.wait_log_line(vusbd_log, "vusbd: ready", vusbd_proc, 20):
            print(f"FAIL: vusbd did not log 'vusbd: ready' within 20 s (exit status "
                  f"{vusbd_proc.poll()})\n{lab.tail(vusbd_log, 60)}")
            return 1

        def body() -> None:
            try:
                result["run"] = lab.run_guest(
                    guest_script(p1, a.long, 30), name=f"{name}.{VM}",
                    modules=["usbtest", "vhci-hcd"], timeout=a.timeout, on_line=console.on_line)
            except Exception as e:  # noqa: BLE001 - reported below
                result["error"] = f"{type(e).__name__}: {e}"
            console.done.set()

        th = threading.Thread(target=body, name="guest")
        tg = time.monotonic()
        th.start()
        while not console.long_started.is_set() and not console.done.is_set():
            console.long_started.wait(0.1)
        if console.long_started.is_set():
            time.sleep(a.kill_after)
            if console.first("LAB-INFO long-end"):
                problems.append(f"the long usbtest case ({a.long}) ended before the kill: "
                                "make it longer")
            stubs[0].kill()  # SIGKILL: no goodbye on the wire
            t_kill = mark(f"SIGKILL vusb-stub (pid {stubs[0].pid})")
            stubs[0].wait()
            time.sleep(max(0.0, t_kill + a.restart_after - (time.monotonic() - t0)))
            stubs.append(lab.start_process(stub_cmd, stub_logs[1]))
            mark(f"vusb-stub restarted on 127.0.0.1:{p0} (pid {stubs[1].pid})")
            if lab.wait_listening(p0, stubs[1], 15):
                mark("vusb-stub listening again")
            else:
                problems.append(f"the restarted vusb-stub did not listen on 127.0.0.1:{p0} "
                                f"(exit status {stubs[1].poll()})")
        th.join()
        t_guests = time.monotonic() - tg
    finally:
        if vusbd_proc is not None:
            vusbd_rc = lab.stop_process(vusbd_proc)
        for p in stubs:
            stub_rcs.append(lab.stop_process(p))
        if follower is not None:
            follower.close()
        if cap_proc is not None:
            cap_proc.terminate()
            cap_proc.wait(timeout=10)
    t_total = time.monotonic() - t0

    run = result.get("run")
    if run is None:
        problems.append(f"the guest did not run: {result.get('error')}")
    # ---- the long case: returned, with an error, soon after the kill
    long_res = run.usbtest("long") if run else []
    end = console.first("LAB-INFO long-end")
    disc = console.first("LAB-INFO vhci-disconnect")
    if t_kill is None:
        problems.append("the long usbtest case never started, nothing was killed")
    else:
        if not long_res:
            problems.append("no USBTEST line for the long case")
        elif long_res[0]["result"] == "ok":
            problems.append("the long usbtest case passed although its device was killed")
        elif long_res[0]["result"] == "timeout":
            problems.append("the long usbtest case hung (usbtest-ioctl's 30 s timeout)")
        if end is None:
            problems.append("the long usbtest case never returned")
        elif end[0] - t_kill > a.max_return:
            problems.append(f"the long usbtest case returned {end[0] - t_kill:.2f}s after the "
                            f"kill (limit {a.max_return:g}s)")
        if disc is None:
            problems.append("the guest's vhci-hcd never showed the port disconnect")
    # ---- vusbd: gone, imported again, offered again
    gone = follower.first(" is gone (", t_kill or 0) if follower and t_kill is not None else None
    imported = follower.first("vusbd: imported", gone[0]) if gone else None
    offered = follower.first(f"vusbd: {DEVICE} offered to vm {VM}", imported[0]) \
        if imported else None
    if t_kill is not None:
        if gone is None:
            problems.append("vusbd never logged the device gone")
        elif imported is None:
            problems.append("vusbd never re-imported the device after vusb-stub came back")
        elif offered is None:
            problems.append("vusbd re-imported the device but never offered it to vm1 again")
    # ---- the re-attached device works
    after = run.usbtest("after") if run else []
    failed = lab.usbtest_failures(after, AFTER)
    if failed:
        problems.append(f"after re-attaching, cases {failed} did not pass")
    if run is not None:
        if run.timed_out:
            problems.append(f"the guest timed out after {run.wall_secs:.0f}s")
        elif run.panicked:
            problems.append("the guest kernel panicked")
        elif run.rc is None:
            problems.append("the guest script did not finish")
        elif run.rc != 0 and not failed:
            problems.append(f"the guest script exited {run.rc}")
        for m in run.find("LAB-FAIL"):
            problems.append("guest: " + m.line[len("LAB-FAIL"):].strip())

    # ---- report
    print(f"long case (device killed under it), phase 'long':")
    print(lab.usbtest_table(long_res))
    print(f"after re-attaching, phase 'after':")
    print(lab.usbtest_table(after, AFTER))
    rows = [(t, "host", what) for t, what in marks]
    for t, line in console.events:
        if line.startswith("LAB-PHASE"):
            continue
        if line.startswith("USBTEST case="):
            f = dict(x.split("=", 1) for x in line.split()[1:] if "=" in x)
            line = (f"usbtest case {f.get('case')} {f.get('result')} errno={f.get('errno')} "
                    f"secs={f.get('secs')} iter={f.get('iter')}")
        rows.append((t, "vm1", line))
    if follower is not None:
        for t, line in follower.lines:
            if re.search(r"vusbd: (imported|.* is gone|.* offered|ready|cannot import)"
                         r"|imported 1-1|disconnected|closed", line):
                rows.append((t, "vusbd", re.sub(r"^\S+ \S+ ", "", line)))
    # The guest kernel's lines about the disconnect, on the host clock via the long-end marker
    # (host arrival time minus the guest uptime it printed).
    dm_rows = []
    if run is not None and end is not None:
        up = re.search(r"uptime=([\d.]+)", end[1])
        if up:
            off = end[0] - float(up.group(1))
            for line in run.dmesg().splitlines():
                m = re.match(r"\[\s*([\d.]+)\]\s*(.*)", line)
                if m and re.search(r"vhci|usbtest .*(fail|error|-\d+)|disconnect|usbip|-108",
                                   m.group(2), re.I) and float(m.group(1)) + off >= \
                        (t_kill or 0) - 3:
                    dm_rows.append((float(m.group(1)) + off, "dmesg",
                                    f"[{float(m.group(1)):9.3f}] {m.group(2)}"))
    rows += dm_rows
    print("timeline (host clock, seconds since start; dmesg placed via the guest's uptime):")
    for t, who, line in sorted(rows, key=lambda r: r[0]):
        print(f"  {t:7.2f}s  {who:<5}  {line}")
    if t_kill is not None:
        def rel(x):
            return f"{x[0] - t_kill:+.2f}s" if x else "never"
        errno = long_res[0]["errno"] if long_res else None
        print("relative to the kill: "
              f"usbtest returned {rel(end)} (errno {errno}), vhci disconnect {rel(disc)}, "
              f"vusbd gone {rel(gone)}, re-imported {rel(imported)}, offered {rel(offered)}, "
              f"re-attached {rel(console.first('LAB-INFO reattached'))}, "
              f"cases 1,2 passed {rel(console.first('LAB-INFO after-end rc=0'))}")
        if dm_rows:
            shut = [r for r in dm_rows if "-108" in r[2]]
            print("in-flight URBs' -108 (ESHUTDOWN) in the guest: "
                  + (shut[0][2] if shut else f"not in dmesg; usbtest-ioctl errno {errno}"))

    if cap_proc is not None:
        flow = Path(__file__).resolve().parent / "lab" / "usbip_flow.py"
        fp = subprocess.run([sys.executable, str(flow), str(cap_path), str(p1)],
                            capture_output=True, text=True)
        bad = [line for line in fp.stdout.splitlines()
               if "RET_SUBMIT" in line and "status=0 " not in line + " "]
        print(f"capture {cap_path}: RET_SUBMITs vusbd sent the guest with an error status "
              f"({len(bad)}; `{flow} {cap_path} {p1}` lists all):")
        print("\n".join("  " + line for line in bad[:20]) or f"  none {fp.stderr.strip()}")

    for i, (p, rc) in enumerate(zip(stubs, stub_rcs)):
        text = stub_logs[i].read_text(errors="replace") if stub_logs[i].exists() else ""
        if i > 0 and rc is not None and -rc in CRASH_SIGNALS:
            problems.append(f"the restarted vusb-stub died with signal {-rc}")
        if "AddressSanitizer" in text or "runtime error:" in text:
            problems.append(f"vusb-stub ({stub_logs[i].name}) reported a sanitizer error")
    text = vusbd_log.read_text(errors="replace") if vusbd_log.exists() else ""
    if vusbd_rc is not None and -vusbd_rc in CRASH_SIGNALS:
        problems.append(f"vusbd died with signal {-vusbd_rc}")
    elif vusbd_rc != 0:
        problems.append(f"vusbd exited {vusbd_rc} on SIGTERM (expected 0)")
    if "AddressSanitizer" in text or "runtime error:" in text:
        problems.append("vusbd reported a sanitizer error")
    try:
        stats = json.loads(stats_path.read_text())
        s = (stats.get("vms", {}).get(VM) or {}).get(DEVICE) or {}
        print(f"vusbd stats ({stats_path}): {VM}/{DEVICE}: "
              + " ".join(f"{k}={s.get(k)}" for k in ("urbs", "bytes_in", "bytes_out", "stalls",
                                                     "errors", "refused")))
    except (OSError, ValueError) as e:
        problems.append(f"vusbd stats JSON {stats_path} unreadable: {e}")

    print(f"timing: prepare {t_prep:.1f}s, guest {run.wall_secs if run else 0:.1f}s, "
          f"total {t_total:.1f}s")
    if problems:
        print("FAIL: " + "; ".join(problems))
        print(run.failure_report(80) if run else result.get("error"))
        print(f"--- vusbd log tail ({vusbd_log}, exit status {vusbd_rc}) ---")
        print(lab.tail(vusbd_log, 80))
        for i, rc in enumerate(stub_rcs):
            print(f"--- vusb-stub log tail ({stub_logs[i]}, exit status {rc}) ---")
            print(lab.tail(stub_logs[i], 30))
        return 1
    print("PASS: vusb-stub killed under a running usbtest case: the guest got its error and the "
          "port disconnect, vusbd re-imported the restarted stub, the guest re-attached and "
          "cases 1, 2 passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
