#!/usr/bin/python3
"""e2e.vusbd_device_process — the camera in a process of its own survives SIGKILL.

vusbd's config gives both VMs `camera = "emulated"`: no backend provides a camera, so vusbd starts
one — an emulated UVC camera in a seccomp-restricted vusb-devhost process, imported over a
socketpair — and shares it with vm1 and vm2. vm1 is also given an in-process Gadget Zero ("gz").
Both guests attach the camera (VM bus id 1-1; vm1 also gz at 1-2), meet at a barrier and stream
MJPEG 640x480 with the project's V4L2 capture program in ride-out mode (-R: on a disconnect it
waits for the camera to come back and captures on). Once both stream, the host SIGKILLs the camera
process (its pid from `vusbctl --json stats`). Then:
  - both guests see the disconnect (V4L2-DISCONNECT) and, after vusbd restarts the process and
    offers the camera again and a watcher in each guest re-attaches it, a reconnect
    (V4L2-RECONNECT); each capture completes with its frames whole and in order within each
    stream (counters restart with the new process), none dropped, duplicated or bad;
  - vusbd's stats show the process started twice, the first one "killed by signal 9";
  - the child runs under seccomp (Seccomp: 2 in /proc/PID/status);
  - vusbd's other device keeps working: vm1 runs usbtest cases 1 and 2 on gz after the kill;
  - vusbd exits 0 on SIGTERM.

Usage: tests/e2e/test_vusbd_device_process.py [--build DIR] [--frames N] [--timeout S]
Logs: <build>/e2e-logs/vusbd_devproc.{vm1,vm2}.console.log, .vusbd.log, .stats.json
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "lab"))
sys.path.insert(0, str(HERE))
import lab  # noqa: E402
from test_vusbd_camera import Guest  # noqa: E402

VMS = ["vm1", "vm2"]
NAME = "vusbd_devproc"


def vusbd_toml(vm_ports: dict, control_port: int) -> str:
    out = ["[control]", f'listen = "127.0.0.1:{control_port}"', "", lab.control_token()]
    for vm in VMS:
        out += ["[[vm]]", f'name = "{vm}"', f'listen = "127.0.0.1:{vm_ports[vm]}"',
                'camera = "emulated"', ""]
    out += ["[[device]]", 'name = "gz"', 'source = "emulated:gadget-zero"', 'mode = "shared"',
            'vms = ["vm1"]', "ports = { vm1 = 2 }", ""]
    return "\n".join(out)


def guest_script(vm: str, port: int, barrier: int, frames: int) -> str:
    gz = ""
    if vm == "vm1":
        gz = f"""usbip --tcp-port {port} attach -r 10.0.2.2 -b 1-2 2>&1 || {{ echo "LAB-FAIL gz attach failed"; exit 22; }}
b=$(lab_usbtest_bound 30) || {{ echo "LAB-FAIL usbtest did not bind gz"; exit 23; }}"""
        after = f"""echo "LAB-PHASE gz"
{lab.usbtest_cmd([1, 2], timeout=30)}
rc2=$?"""
    else:
        after = "rc2=0"
    return f"""
echo "LAB-PHASE attach"
usbip --tcp-port {port} attach -r 10.0.2.2 -b 1-1 2>&1 || {{ echo "LAB-FAIL usbip attach failed"; exit 20; }}
lab_wait_for /dev/video0 30 || {{ echo "LAB-FAIL uvcvideo made no /dev/video0"; lab_usb_tree; exit 21; }}
{gz}
# Re-attach the camera whenever it is gone (a USB/IP device does not come back by itself).
( while [ ! -e /tmp/stop ]; do
    if ! ls /sys/bus/usb/drivers/uvcvideo/ 2>/dev/null | grep -q ':'; then
      if usbip --tcp-port {port} attach -r 10.0.2.2 -b 1-1 >/dev/null 2>&1; then
        echo "LAB-INFO camera re-attached"; sleep 3
      fi
    fi
    sleep 0.3
  done ) &
echo "LAB-PHASE barrier"
go=$(timeout 90 nc 10.0.2.2 {barrier} </dev/null 2>&1)
echo "LAB-PHASE capture"
echo "LAB-INFO capture-start"
v4l2-capture -d /dev/video0 -f mjpeg -s 640x480 -r 30 -n {frames} -t 100 -R
rc=$?
echo "LAB-INFO capture-end rc=$rc"
touch /tmp/stop
{after}
[ $rc -eq 0 ] && [ $rc2 -eq 0 ]
"""


def vusbctl_stats(vusbctl: Path, port: int) -> dict | None:
    r = subprocess.run([vusbctl, "--api", f"127.0.0.1:{port}", "--json", "stats"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20)
    return json.loads(r.stdout) if r.returncode == 0 else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--max-dropped", type=int, default=0,
                    help="dropped frames tolerated per capture (sanitizer builds)")
    ap.add_argument("--frames", type=int, default=180)
    ap.add_argument("--timeout", type=float, default=200, help="wall-clock limit per guest")
    ap.add_argument("--kill-after", type=float, default=2.5,
                    help="seconds after both captures started")
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    if not lab.ready():
        return 1
    logs = lab.logs_dir()
    bindir = lab.build_dir() / "bin"
    vusbd_bin, vusbctl = bindir / "vusbd", bindir / "vusbctl"
    vusbd_log, stats_path = logs / f"{NAME}.vusbd.log", logs / f"{NAME}.stats.json"
    p1, p2, pc = lab.free_ports(3)
    vm_ports = {"vm1": p1, "vm2": p2}
    problems: list = []
    guests: list = []
    barrier = lab.Barrier(2, 120)
    vusbd = None
    killed = {}
    stats = None
    try:
        toml = logs / f"{NAME}.vusbd.toml"
        toml.write_text(vusbd_toml(vm_ports, pc))
        vusbd = lab.start_process([vusbd_bin, "--config", toml], vusbd_log)
        if not lab.wait_log_line(vusbd_log, "offers 1d6b:0102", vusbd, 20):
            print(f"FAIL: vusbd did not start the camera process\n{lab.tail(vusbd_log, 60)}")
            return 1
        t0 = time.monotonic()
        for vm in VMS:
            script = guest_script(vm, vm_ports[vm], barrier.port, a.frames)
            script = script.replace("v4l2-capture ", f"v4l2-capture -D {a.max_dropped} ")
            g = Guest(vm, script, t0, [barrier], NAME)
            g.modules = ["vhci-hcd", "uvcvideo", "usbtest"]
            guests.append(g)
        threads = [g.start(a.timeout, 256) for g in guests]

        def killer() -> None:
            deadline = time.monotonic() + a.timeout
            while time.monotonic() < deadline:
                if all(g.at("LAB-INFO capture-start") is not None for g in guests):
                    break
                if any(g.finished.is_set() for g in guests):
                    return
                time.sleep(0.1)
            time.sleep(a.kill_after)
            st = vusbctl_stats(vusbctl, pc) or {}
            proc = st.get("devices", {}).get("camera", {}).get("process", {})
            pid = proc.get("pid", 0)
            if not pid:
                killed["error"] = f"no camera process in stats: {proc}"
                return
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                killed["seccomp"] = next((l.split(":")[1].strip() for l in status.splitlines()
                                          if l.startswith("Seccomp:")), "?")
            except OSError as e:
                killed["seccomp"] = f"unreadable: {e}"
            os.kill(pid, signal.SIGKILL)
            killed["pid"], killed["at"] = pid, time.monotonic() - t0
            lab.log(f"SIGKILL camera process pid {pid} at {killed['at']:.1f}s")

        kt = threading.Thread(target=killer, daemon=True)
        kt.start()
        for th in threads:
            th.join()
        kt.join(timeout=5)
        stats = vusbctl_stats(vusbctl, pc)
        if stats:
            stats_path.write_text(json.dumps(stats, indent=2))
        else:
            problems.append("vusbctl stats failed")
    finally:
        barrier.close()
        vusbd_rc = lab.stop_process(vusbd) if vusbd else None

    # --- verdict
    if "pid" not in killed:
        problems.append(f"the camera process was not killed: {killed.get('error', 'guests ended')}")
    elif killed.get("seccomp") != "2":
        problems.append(f"the camera process was not under a seccomp filter (Seccomp: "
                        f"{killed.get('seccomp')})")
    for g in guests:
        if g.error or g.run is None:
            problems.append(f"{g.vm}: {g.error or 'did not run'}")
            continue
        cap = g.result("capture", "V4L2-CAPTURE")
        gone = [l for p, l in g.v4l2 if l.startswith("V4L2-DISCONNECT")]
        back = [l for p, l in g.v4l2 if l.startswith("V4L2-RECONNECT")]
        print(f"{g.vm}: {cap}\n      {gone[:1]} {back[:1]}")
        if not cap or int(cap["frames"]) != a.frames or cap.get("result") != "ok":
            problems.append(f"{g.vm}: capture {cap}")
        if not gone or not back or (cap and cap.get("reconnects") != "1"):
            problems.append(f"{g.vm}: expected one disconnect and one reconnect, saw {gone} {back}")
        if g.vm == "vm1":
            res = g.run.usbtest("gz")
            failed = lab.usbtest_failures(res, [1, 2])
            if failed:
                problems.append(f"vm1: usbtest on gz after the kill failed: {failed}")
        if not g.run.ok:
            problems.append(f"{g.vm}: guest script failed (rc={g.run.rc})")
    if stats:
        proc = stats.get("devices", {}).get("camera", {}).get("process", {})
        print(f"vusbd: camera process {proc}")
        if proc.get("starts", 0) < 2 or "signal 9" not in proc.get("last_exit", ""):
            problems.append(f"vusbd did not restart the killed process: {proc}")
    if vusbd_rc not in (0, None):
        problems.append(f"vusbd exited with {vusbd_rc}")
    if problems:
        print("\nFAIL:\n  " + "\n  ".join(problems))
        for g in guests:
            if g.run:
                print(f"--- {g.vm} ---\n{g.run.failure_report()}")
        print(f"--- vusbd log ---\n{lab.tail(vusbd_log, 60)}")
        return 1
    print("\nPASS: the camera process died under two streaming guests; both reconnected and "
          "captured on, and gz kept working")
    if a.max_dropped:
        print(f"(sanitizer build: up to {a.max_dropped} dropped frames per capture tolerated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
