#!/usr/bin/python3
"""e2e.vusbd_camera — one webcam streaming into two Linux guests at once through vusbd.

vusb-stub exports its emulated UVC camera (`--emulate uvc-camera=1-1`); vusbd imports it once as
device "cam" in shared mode and gives it to vm1 and vm2. Two TCG guests boot at once; each attaches
its own VM port's bus id 1-1 with Debian's usbip, waits for uvcvideo to create /dev/video0, then
meets the other at a host barrier, and both run the project's V4L2 capture program
(tests/e2e/lab/v4l2_capture.c: mmap streaming, 4 buffers) for 150 frames of MJPEG 640x480 at
30 fps at the same time. The camera stamps a counter into every frame; each guest's capture must
show 150 frames, 0 dropped, 0 duplicated, 0 without a counter, and the two capture windows must
overlap. The frame rate each guest reached is reported.

Then the steering phase: vm1 streams again (90 frames) and, once it is streaming, vm2 asks for
YUYV 640x480. vusbd answers vm2's probe with the stream in force, so vm2's VIDIOC_S_FMT comes back
MJPG 640x480 and its 30 frames are again whole and in order; `vusbctl --json stats` must count the
steering.

--attach usbredir: the same with nothing USB/IP in the guests — each VM gets the camera over
QEMU's usb-redir (`[[vm]] usbredir = [{ device = "cam", listen = ... }]`), its QEMU is started with
exactly what `vusbctl qemu-args --vm NAME` prints (qemu-xhci, a socket chardev, usb-redir), and the
guest's own xhci_hcd and uvcvideo find the camera; the iso stream reaches each guest through
vusbd's usbredir channel (start_iso_stream) and its shared-camera fan-out.

--demo (what `make demo` runs) says what happens in plain words as it goes: the control API's
address while vusbd runs, each guest's frame count and frame rate at the end.

Usage: tests/e2e/test_vusbd_camera.py [--build DIR] [--frames N] [--timeout S] [--demo]
                                      [--attach usbip|usbredir] [--name PREFIX]
Logs: <build>/e2e-logs/vusbd_camera.{vm1,vm2}.console.log, .vusbd.log, .stub.log, .stats.json
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
import lab  # noqa: E402

VMS = ["vm1", "vm2"]
NAME = "vusbd_camera"


def vusbd_toml(stub_port: int, vm_ports: dict, control_port: int, redir_ports: dict) -> str:
    out = ["[control]", f'listen = "127.0.0.1:{control_port}"', "", lab.control_token()]
    for vm in VMS:
        out += ["[[vm]]", f'name = "{vm}"', f'listen = "127.0.0.1:{vm_ports[vm]}"']
        if vm in redir_ports:
            out.append(f'usbredir = [{{ device = "cam", listen = "127.0.0.1:{redir_ports[vm]}" }}]')
        out.append("")
    out += ["[[device]]", 'name = "cam"', f'source = "usbip://127.0.0.1:{stub_port}/1-1"',
            'mode = "shared"', f'vms = {json.dumps(VMS)}', ""]
    return "\n".join(out)


def guest_script(vm: str, port: int, barrier: int, steer_barrier: int, frames: int,
                 usbredir: bool) -> str:
    capture = f"v4l2-capture -d /dev/video0 -f mjpeg -s 640x480 -r 30 -n {frames} -t 90"
    if vm == "vm1":
        steer = """v4l2-capture -d /dev/video0 -f mjpeg -s 640x480 -r 30 -n 90 -t 90 &
cap=$!
sleep 1  # streaming by now
go=$(timeout 60 nc 10.0.2.2 {b} </dev/null 2>&1)
wait $cap
rc2=$?""".format(b=steer_barrier)
    else:
        steer = f"""go=$(timeout 60 nc 10.0.2.2 {steer_barrier} </dev/null 2>&1)
sleep 0.5
v4l2-capture -d /dev/video0 -f yuyv -s 640x480 -r 30 -n 30 -t 90
rc2=$?"""
    attach = ("" if usbredir else f"""usbip --tcp-port {port} attach -r 10.0.2.2 -b 1-1 2>&1 || {{ echo "LAB-FAIL usbip attach failed"; exit 20; }}
""")
    detach = "" if usbredir else 'usbip detach -p 0 2>&1 || echo "LAB-WARN usbip detach failed"\n'
    return f"""
echo "LAB-PHASE attach"
{attach}lab_wait_for /dev/video0 30 || {{ echo "LAB-FAIL uvcvideo made no /dev/video0"; lab_usb_tree; exit 21; }}
echo "LAB-INFO $(cat /sys/class/video4linux/video0/name)"
echo "LAB-PHASE barrier"
go=$(timeout 90 nc 10.0.2.2 {barrier} </dev/null 2>&1)
echo "LAB-INFO barrier: ${{go:-no answer}}"
echo "LAB-PHASE capture"
echo "LAB-INFO capture-start"
{capture}
rc=$?
echo "LAB-INFO capture-end rc=$rc"
echo "LAB-PHASE steer"
{steer}
echo "LAB-INFO steer-end rc=$rc2"
{detach}[ $rc -eq 0 ] && [ $rc2 -eq 0 ]
"""


class Guest(lab.GuestThread):
    """A capture guest: collects its V4L2-* lines; when it ends nobody waits for it any more."""

    def __init__(self, vm: str, script: str, t0: float, barriers: list, name: str = NAME,
                 devices=()):
        modules = ["xhci-pci", "uvcvideo"] if devices else ["vhci-hcd", "uvcvideo"]
        super().__init__(f"{name}.{vm}", script, t0, modules=modules, devices=devices)
        self.vm, self.barriers = vm, barriers
        self.v4l2: list = []  # (phase, line)
        self.phase = ""

    def on_marker(self, line: str) -> None:
        if line.startswith("LAB-PHASE"):
            self.phase = line.split()[1] if len(line.split()) > 1 else ""

    def on_line(self, line: str) -> None:
        super().on_line(line)
        text = line.strip().replace("\r", "")
        i = text.find("V4L2-")
        if i >= 0:
            self.v4l2.append((self.phase, text[i:]))

    def on_finish(self) -> None:
        for b in self.barriers:
            b.release()

    def result(self, phase: str, kind: str) -> dict | None:
        for p, line in self.v4l2:
            if p == phase and line.startswith(kind):
                return dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--max-dropped", type=int, default=0,
                    help="dropped frames tolerated per capture (sanitizer builds)")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--timeout", type=float, default=180, help="wall-clock limit per guest")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--demo", action="store_true", help="narrate for `make demo`")
    ap.add_argument("--name", default=NAME, help="log name prefix")
    ap.add_argument("--attach", choices=["usbip", "usbredir"], default="usbip",
                    help="how the guests get the camera: usbip in the guest, or QEMU's usb-redir")
    a = ap.parse_args()
    say = (lambda text: print(f"demo: {text}", flush=True)) if a.demo else (lambda text: None)
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    if not lab.ready():
        return 1
    logs = lab.logs_dir()
    bindir = lab.build_dir() / "bin"
    stub_bin, vusbd_bin, vusbctl = bindir / "vusb-stub", bindir / "vusbd", bindir / "vusbctl"
    name = a.name
    stub_log, vusbd_log = logs / f"{name}.stub.log", logs / f"{name}.vusbd.log"
    stats_path = logs / f"{name}.stats.json"
    p0, p1, p2, pc, r1, r2 = lab.free_ports(6)
    vm_ports = {"vm1": p1, "vm2": p2}
    usbredir = a.attach == "usbredir"
    redir_ports = {"vm1": r1, "vm2": r2} if usbredir else {}
    problems: list = []
    stub = vusbd = None
    guests: list = []
    barrier, steer = lab.Barrier(2, 120), lab.Barrier(2, 60)
    stats = None
    try:
        stub = lab.start_process([stub_bin, "--listen", f"127.0.0.1:{p0}", "--emulate",
                                  "uvc-camera=1-1"], stub_log)
        if not lab.wait_listening(p0, stub, 15):
            print(f"FAIL: vusb-stub did not listen\n{lab.tail(stub_log)}")
            return 1
        say(f"vusb-stub exports an emulated UVC webcam on 127.0.0.1:{p0} (bus id 1-1)")
        toml = logs / f"{name}.vusbd.toml"
        toml.write_text(vusbd_toml(p0, vm_ports, pc, redir_ports))
        vusbd = lab.start_process([vusbd_bin, "--config", toml, "--log-level", a.log_level],
                                  vusbd_log)
        if not lab.wait_log_line(vusbd_log, "vusbd: ready", vusbd, 20):
            print(f"FAIL: vusbd did not get ready\n{lab.tail(vusbd_log, 60)}")
            return 1
        say(f"vusbd shares it with vm1 (127.0.0.1:{p1}) and vm2 (127.0.0.1:{p2}); control API "
            f"and dashboard at http://127.0.0.1:{pc}/ (try: {vusbctl} --api 127.0.0.1:{pc} "
            f"list)")
        how = "QEMU's usb-redir" if usbredir else "usbip"
        say("booting two Linux guests (Debian's kernel under QEMU); each attaches the camera with "
            f"{how} and captures from /dev/video0 at the same time ...")
        t0 = time.monotonic()
        for vm in VMS:
            script = guest_script(vm, vm_ports[vm], barrier.port, steer.port, a.frames, usbredir)
            script = script.replace("v4l2-capture ", f"v4l2-capture -D {a.max_dropped} ")
            devices = lab.vusbd_qemu_args(vusbctl, pc, vm) if usbredir else ()
            guests.append(Guest(vm, script, t0, [barrier, steer], name, devices))
        threads = [g.start(a.timeout, 256) for g in guests]
        for th in threads:
            th.join()
        r = subprocess.run([vusbctl, "--api", f"127.0.0.1:{pc}", "--json", "stats"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20)
        if r.returncode == 0:
            stats = json.loads(r.stdout)
            stats_path.write_text(json.dumps(stats, indent=2))
        else:
            problems.append(f"vusbctl stats failed: {r.stdout.strip()}")
    finally:
        barrier.close()
        steer.close()
        vusbd_rc = lab.stop_process(vusbd) if vusbd else None
        stub_rc = lab.stop_process(stub) if stub else None

    # --- verdict
    print(f"\n{'guest':6} {'phase':8} {'format':22} {'frames':>6} {'drop':>5} {'dup':>4} "
          f"{'bad':>4} {'fps':>6}  counters")
    spans = {}
    for g in guests:
        if g.error or g.run is None:
            problems.append(f"{g.vm}: {g.error or 'did not run'}")
            continue
        for phase in ("capture", "steer"):
            fmt = g.result(phase, "V4L2-FORMAT") or {}
            cap = g.result(phase, "V4L2-CAPTURE")
            if cap is None:
                problems.append(f"{g.vm} {phase}: no V4L2-CAPTURE line")
                continue
            print(f"{g.vm:6} {phase:8} {fmt.get('fourcc', '?')} {fmt.get('width', '?')}x"
                  f"{fmt.get('height', '?')} {fmt.get('interval', '?'):8} {cap['frames']:>6} "
                  f"{cap['dropped']:>5} {cap['duplicated']:>4} {cap['bad']:>4} {cap['fps']:>6}  "
                  f"{cap['first']}..{cap['last']}")
            want = a.frames if phase == "capture" else (90 if g.vm == "vm1" else 30)
            if int(cap["frames"]) != want or cap.get("result") != "ok":
                problems.append(f"{g.vm} {phase}: {cap}")
            if fmt.get("fourcc") != "MJPG" or fmt.get("width") != "640":
                problems.append(f"{g.vm} {phase}: format {fmt} (MJPG 640x480 expected"
                                + (", steered" if phase == "steer" else "") + ")")
        s, e = g.at("LAB-INFO capture-start"), g.at("LAB-INFO capture-end")
        if s is not None and e is not None:
            spans[g.vm] = (s, e)
        if not g.run.ok:
            problems.append(f"{g.vm}: guest script failed (rc={g.run.rc}, "
                            f"timed out: {g.run.timed_out})")
    if len(spans) == 2:
        ov = min(e for _, e in spans.values()) - max(s for s, _ in spans.values())
        print(f"\ncapture windows (host clock): " + ", ".join(
            f"{vm} {s:.1f}-{e:.1f}s" for vm, (s, e) in spans.items()) + f"; overlap {ov:.1f}s")
        if ov < 3:
            problems.append(f"the two captures overlapped only {ov:.1f}s")
    if stats:
        cam = stats.get("devices", {}).get("cam", {}).get("camera", {})
        fan = {vm: stats["vms"].get(vm, {}).get("cam", {}) for vm in VMS}
        print(f"vusbd: camera {cam}; " + "; ".join(
            f"{vm}: {f.get('bytes_in', 0)} bytes in, {f.get('iso_fanout_packets', 0)} packets "
            f"fanned out, {f.get('iso_fanout_dropped', 0)} dropped, "
            f"{f.get('iso_fanout_skipped', 0)} skipped to a frame start" for vm, f in fan.items()))
        if cam.get("steered", 0) < 1:
            problems.append("vusbd counted no steered probe")
        if sum(f.get("iso_fanout_packets", 0) for f in fan.values()) == 0:
            problems.append("no iso packet was fanned out: the guests did not share one stream")
    if vusbd_rc not in (0, None):
        problems.append(f"vusbd exited with {vusbd_rc}")
    if stub_rc not in (0, None):
        problems.append(f"vusb-stub exited with {stub_rc}")
    if problems:
        print("\nFAIL:\n  " + "\n  ".join(problems))
        for g in guests:
            if g.run:
                print(f"--- {g.vm} ---\n{g.run.failure_report()}")
        print(f"--- vusbd log ---\n{lab.tail(vusbd_log, 40)}\n--- stub log ---\n{lab.tail(stub_log, 20)}")
        return 1
    print("\nPASS: one camera, two guests, every frame in each" if not a.max_dropped else
          f"\nPASS: one camera, two guests (up to {a.max_dropped} dropped frames tolerated: "
          "sanitizer build)")
    for g in guests:
        cap = g.result("capture", "V4L2-CAPTURE") or {}
        say(f"{g.vm}: {cap.get('frames')} frames of MJPEG 640x480 in {cap.get('secs')} s "
            f"({cap.get('fps')} fps), none dropped or duplicated")
    say("both guests received the same stream from one camera; logs in " + str(logs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
