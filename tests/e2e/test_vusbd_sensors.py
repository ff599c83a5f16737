#!/usr/bin/python3
"""e2e.vusbd_sensors — a phone's motion sensor and input devices in a laptop VM.

The "phone" guest makes an accelerometer with libevdev's uinput API (the project's uinput-accel:
INPUT_PROP_ACCELEROMETER, ABS_X/Y/Z, 256 units per g) and runs vusb-stub inside it with
`--sensors evdev`: the stub's evdev source feeds a USB HID sensor hub (usage page 0x20) that it
exports over USB/IP inside TLS 1.3 with a pre-shared key (`--listen tls:0.0.0.0:3240 --tls-psk`:
the phone was "paired" once; input devices go only to an authenticated peer), forwarded to the
host. vusbd on the host imports it over usbips:// with the same PSK and gives it to the
"laptop" VM; the laptop guest attaches it with usbip, and its kernel's usbhid + hid-sensor-hub +
hid-sensor-accel-3d create an IIO accelerometer. Once both are ready (a host barrier), the phone
moves through a scripted sequence (flat, tilted, upright, upside down, ...), holding each step;
the laptop reads in_accel_{x,y,z}_raw continuously. Passes when:
  - the IIO device is named accel_3d and in_accel_scale is 0.098066500 (m/s² per raw unit);
  - for every step, raw × scale equals the phone's position in m/s² (within 0.1), and the laptop
    saw it within one report interval (100 ms) of the phone's SYN_REPORT on the host clock
    (console timestamps; the measured latencies are printed);
  - the phone's keyboard, mouse and touchscreen (uinput devices made by the project's
    uinput-input, exported with `--input evdev:NODE`, one USB HID device each) appear in the
    laptop as input devices (hid-generic; hid-multitouch with INPUT_PROP_DIRECT for the screen)
    and report what the phone did: the same key codes in the same order (letters, Shift+1, Enter,
    Volume Up), the mouse's motion in full (300 counts become three HID reports) before and after
    a click, the wheel, two fingers at their positions with their lifts; and the laptop's Caps
    Lock LED (written to its evdev node after Enter) reaches the phone's keyboard as EV_LED;
  - vusbd and the phone's stub exit cleanly.

Usage: tests/e2e/test_vusbd_sensors.py [--build DIR] [--hold MS] [--timeout S]
Logs: <build>/e2e-logs/vusbd_sensors.{phone,laptop}.console.log, .vusbd.log
"""
import argparse
import os
import secrets
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "lab"))
sys.path.insert(0, str(HERE))
import lab  # noqa: E402
from test_libusb_xhci import stub_files  # noqa: E402

NAME = "vusbd_sensors"
RES = 256  # uinput-accel's units per g
G = 9.80665
INTERVAL_MS = 100  # the hub's default report interval
# Steps in milli-g: flat, tilted 30° about X, upright, tilted about Y, upside down, flat again.
STEPS = [(0, 0, 1000), (0, 500, 866), (0, 1000, 0), (707, 0, 707), (0, 0, -1000), (0, 0, 1000)]
# The input script (uinput-input's step language): "vusb", Shift+1, Enter, Volume Up; the mouse;
# two fingers; then the phone waits for the laptop's Caps Lock LED.
KEYS = [(47, 1), (47, 0), (22, 1), (22, 0), (31, 1), (31, 0), (48, 1), (48, 0),
        (42, 1), (2, 1), (2, 0), (42, 0), (28, 1), (28, 0), (115, 1), (115, 0)]
MOUSE = ["m300,-200", "b1", "b0", "w2", "m-5,7"]
TOUCH = ["t0:10:100:200", "t1:11:900:2000", "t0:10:150:250", "t1:-1:0:0", "t0:-1:0:0"]
INPUT_STEPS = [f"k{c}:{v}" for c, v in KEYS] + MOUSE + TOUCH + ["led"]
EV_SYN, EV_KEY, EV_REL, EV_ABS = 0, 1, 2, 3


def phone_script(barrier: int, hold: int) -> str:
    steps = " ".join(f"{x},{y},{z}" for x, y, z in STEPS)
    return f"""
echo "LAB-PHASE phone"
uinput-accel -r {RES} -H {hold} -g /tmp/go -R /tmp/uinput.ready -k 2000 {steps} &
accel=$!
uinput-input -g /tmp/go -R /tmp/input.ready -k 2000 {" ".join(INPUT_STEPS)} &
input=$!
lab_wait_for /tmp/uinput.ready 10 || {{ echo "LAB-FAIL no uinput accelerometer"; exit 29; }}
lab_wait_for /tmp/input.ready 10 || {{ echo "LAB-FAIL no uinput input devices"; exit 29; }}
inputs=""
for n in $(cat /tmp/input.ready); do inputs="$inputs --input evdev:$n"; done
vusb-stub --listen tls:0.0.0.0:3240 --tls-psk /lab/psk.txt --sensors evdev $inputs >/tmp/stub.log 2>&1 &
stub=$!
for i in $(seq 150); do  # up to 30 s: a sanitizer build starts slowly under TCG
  grep -q "listening on" /tmp/stub.log && break
  sleep 0.2
done
cat /tmp/stub.log
grep -q "sensor hub" /tmp/stub.log || {{ echo "LAB-FAIL the stub exports no sensor hub"; exit 30; }}
grep -q "exported as 1-4" /tmp/stub.log || {{ echo "LAB-FAIL the stub exports no input devices"; exit 30; }}
go=$(timeout 120 nc 10.0.2.2 {barrier} </dev/null 2>&1)
echo "LAB-INFO barrier: ${{go:-no answer}}"
touch /tmp/go
wait $accel
rc=$?
wait $input
irc=$?
echo "LAB-INFO input exit $irc"
[ $irc -eq 0 ] || rc=$irc
kill $stub; wait $stub
srv=$?
if [ $srv -eq 0 ]; then tail -5 /tmp/stub.log; else cat /tmp/stub.log; fi
echo "LAB-INFO stub exit $srv"
[ $srv -eq 0 ] || rc=$srv
exit $rc
"""


def laptop_script(port: int, barrier: int, seconds: float) -> str:
    return f"""
echo "LAB-PHASE attach"
for i in $(seq 60); do
  usbip --tcp-port {port} attach -r 10.0.2.2 -b 1-1 >/tmp/attach.log 2>&1 && break
  sleep 0.5
done
cat /tmp/attach.log
for b in 1-2 1-3 1-4; do  # vusbd offers each once it has imported it from the phone
  for i in $(seq 40); do
    usbip --tcp-port {port} attach -r 10.0.2.2 -b $b >/tmp/attach.log 2>&1 && break
    sleep 0.5
  done || {{ cat /tmp/attach.log; echo "LAB-FAIL attach $b"; exit 32; }}
done
evdev-watch -L -R /tmp/evw.ready -g /tmp/go "vusb test" 3 {seconds + 2:.1f} &
evw=$!
d=""
for i in $(seq 100); do
  for n in /sys/bus/iio/devices/iio:device*; do
    [ -e "$n/name" ] && [ "$(cat $n/name)" = accel_3d ] && d=$n
  done
  [ -n "$d" ] && break
  sleep 0.2
done
[ -n "$d" ] || {{ echo "LAB-FAIL no accel_3d IIO device"; lab_usb_tree; dmesg | tail -30; exit 31; }}
echo "LAB-INFO iio $d name=$(cat $d/name) scale=$(cat $d/in_accel_scale)"
cat $d/in_accel_x_raw >/dev/null  # powers the sensor on (the first read waits 2 intervals)
lab_wait_for /tmp/evw.ready 60 || {{ echo "LAB-FAIL the input devices did not appear"; lab_usb_tree; exit 33; }}
go=$(timeout 120 nc 10.0.2.2 {barrier} </dev/null 2>&1)
touch /tmp/go
echo "LAB-PHASE read"
iio-watch $d accel {seconds + 1:.1f}
wait $evw
for p in 0 1 2 3; do usbip detach -p $p >/dev/null 2>&1; done
exit 0
"""


def check_input(phone, laptop) -> list:
    """What the laptop's input devices reported against what the phone's did."""
    problems = []
    devs = {}
    for _, line in laptop.events:
        if line.startswith("LAB-INFO evw-dev "):
            f = line.split(" ", 3)[3]
            name = f.split("name=", 1)[1] if "name=" in f else ""
            props = int(f.split("props=", 1)[1].split()[0]) if "props=" in f else 0
            devs[line.split()[2]] = (name, props)
    events = {}
    for _, line in laptop.events:
        parts = line.split()
        if line.startswith("LAB-INFO evw ") and len(parts) == 6:
            try:
                events.setdefault(parts[2], []).append(tuple(int(v) for v in parts[3:]))
            except ValueError:
                pass
    by_kind = {}
    for idx, (name, props) in devs.items():
        kind = next((k for k in ("keyboard", "mouse", "touch") if k in name), None)
        if kind:
            by_kind[kind] = (events.get(idx, []), props, name)
    print(f"laptop input devices: {sorted((k, v[2]) for k, v in by_kind.items())}")
    if set(by_kind) != {"keyboard", "mouse", "touch"}:
        return [f"laptop input devices {devs} (keyboard, mouse and touch expected)"]
    # Keyboard: the same key codes, same order.
    keys = [(c, v) for t, c, v in by_kind["keyboard"][0] if t == EV_KEY and v in (0, 1)]
    print(f"keyboard: {len(keys)} key events (phone: {len(KEYS)})")
    if keys != KEYS:
        problems.append(f"keyboard: laptop saw {keys}, phone typed {KEYS}")
    # Mouse: all motion, split over reports; motion before the click; the wheel.
    mev = by_kind["mouse"][0]
    rel = lambda code, evs: sum(v for t, c, v in evs if t == EV_REL and c == code)
    press = next((i for i, e in enumerate(mev) if e[:2] == (EV_KEY, 0x110) and e[2] == 1), None)
    release = next((i for i, e in enumerate(mev) if e[:2] == (EV_KEY, 0x110) and e[2] == 0), None)
    xs = [v for t, c, v in mev if t == EV_REL and c == 0]
    print(f"mouse: REL_X {xs}, total ({rel(0, mev)}, {rel(1, mev)}), wheel {rel(8, mev)}, "
          f"left press at {press}, release at {release}")
    if press is None or release is None or release < press:
        problems.append("mouse: no left click (press then release)")
    elif (rel(0, mev[:press]), rel(1, mev[:press])) != (300, -200):
        problems.append(f"mouse: motion before the click {rel(0, mev[:press])},"
                        f"{rel(1, mev[:press])} (300,-200 expected)")
    if (rel(0, mev), rel(1, mev), rel(8, mev)) != (295, -193, 2):
        problems.append(f"mouse: totals {rel(0, mev)},{rel(1, mev)} wheel {rel(8, mev)} "
                        "(295,-193 wheel 2 expected)")
    # Touch: a direct multi-touch device; both fingers at their positions, both lifted.
    tev, tprops, _ = by_kind["touch"]
    if not tprops & 2:
        problems.append(f"touch: INPUT_PROP_DIRECT missing (props {tprops})")
    slot, ids, pos, most, touch_btn = 0, {}, {}, 0, []
    for t, c, v in tev:
        if t == EV_ABS and c == 0x2f:
            slot = v
        elif t == EV_ABS and c == 0x39:
            ids[slot] = v
            most = max(most, sum(1 for i in ids.values() if i >= 0))
        elif t == EV_ABS and c in (0x35, 0x36):
            pos.setdefault(slot, []).append(("x" if c == 0x35 else "y", v))
        elif t == EV_KEY and c == 0x14a:
            touch_btn.append(v)
    print(f"touch: positions by slot {pos}, most fingers at once {most}, BTN_TOUCH {touch_btn}, "
          f"final tracking ids {ids}")
    seen = {(a, v) for p in pos.values() for a, v in p}
    for want in (("x", 100), ("y", 200), ("x", 900), ("y", 2000), ("x", 150), ("y", 250)):
        if want not in seen:
            problems.append(f"touch: position {want} never reported")
    if most != 2:
        problems.append(f"touch: {most} fingers at once (2 expected)")
    if touch_btn != [1, 0] or any(i >= 0 for i in ids.values()):
        problems.append(f"touch: BTN_TOUCH {touch_btn}, tracking ids {ids} (all lifted expected)")
    # LEDs: the laptop's Caps Lock reached the phone's keyboard.
    if not laptop.first("LAB-INFO evw-led"):
        problems.append("the laptop did not set Caps Lock")
    if not phone.first("LAB-INFO led caps=1"):
        problems.append("the phone's keyboard never got the Caps Lock LED")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--hold", type=int, default=900, help="ms per step")
    ap.add_argument("--timeout", type=float, default=180)
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    if not lab.ready():
        return 1
    logs = lab.logs_dir()
    bindir = lab.build_dir() / "bin"
    vusbd_log = logs / f"{NAME}.vusbd.log"
    phone_port, laptop_port, control = lab.free_ports(3)
    barrier = lab.Barrier(2, 150)
    problems: list = []
    files = stub_files(bindir / "vusb-stub", logs)
    files["usr/bin/uinput-accel"] = (bindir / "uinput-accel").read_bytes()
    files["usr/bin/uinput-input"] = (bindir / "uinput-input").read_bytes()
    laptop_files = {"usr/bin/iio-watch": (bindir / "iio-watch").read_bytes(),
                    "usr/bin/evdev-watch": (bindir / "evdev-watch").read_bytes()}
    # The phone and the laptop's vusbd share a PSK (stunnel's IDENTITY:KEY format).
    psk = f"laptop:{secrets.token_hex(16)}\n"
    files["lab/psk.txt"] = psk
    psk_path = logs / f"{NAME}.psk.txt"
    psk_path.write_text(psk)
    psk_path.chmod(0o600)
    toml = logs / f"{NAME}.vusbd.toml"
    toml.write_text("\n".join([
        "[control]", f'listen = "127.0.0.1:{control}"',
        "[tls]", f'psk = "{psk_path}"',
        "[[vm]]", 'name = "laptop"', f'listen = "127.0.0.1:{laptop_port}"',
        "[[device]]", 'name = "phone-sensors"', f'source = "usbips://127.0.0.1:{phone_port}/1-1"',
        'mode = "exclusive"', 'vms = ["laptop"]',
        *[line for i, n in ((2, "keyboard"), (3, "mouse"), (4, "touch")) for line in (
            "[[device]]", f'name = "phone-{n}"',
            f'source = "usbips://127.0.0.1:{phone_port}/1-{i}"', 'mode = "exclusive"',
            'vms = ["laptop"]')],
        ""]))
    vusbd = lab.start_process([bindir / "vusbd", "--config", toml], vusbd_log)
    t0 = time.monotonic()
    phone = lab.GuestThread(f"{NAME}.phone", phone_script(barrier.port, a.hold), t0,
                            modules=["uinput", "evdev"],
                            hostfwd=[f"tcp:127.0.0.1:{phone_port}-:3240"], files=files)
    laptop = lab.GuestThread(f"{NAME}.laptop",
                             laptop_script(laptop_port, barrier.port,
                                           len(STEPS) * a.hold / 1000 + 1), t0,
                             modules=["vhci-hcd", "usbhid", "hid-generic", "hid-multitouch",
                                      "evdev", "hid-sensor-hub", "hid-sensor-accel-3d"],
                             files=laptop_files)
    phone.on_finish = barrier.release
    laptop.on_finish = barrier.release

    try:
        threads = [phone.start(a.timeout, 256), laptop.start(a.timeout, 256)]
        for th in threads:
            th.join()
    finally:
        barrier.close()
        vusbd_rc = lab.stop_process(vusbd)

    # --- verdict
    steps = [(t, dict(f.split("=", 1) for f in line.split()[1:] if "=" in f))
             for t, line in phone.events if line.startswith("LAB-INFO step=")]
    reads = []
    for t, line in laptop.events:
        if line.startswith("LAB-INFO accel "):
            try:
                reads.append((t, tuple(int(v) for v in line.split()[2:5])))
            except ValueError:
                pass
    info = laptop.first("LAB-INFO iio ")
    print(f"laptop: {info[1] if info else 'no IIO device'}; {len(reads)} reads; phone: "
          f"{len(steps)} steps")
    scale = None
    if info:
        f = dict(x.split("=", 1) for x in info[1].split()[2:] if "=" in x)
        scale = float(f.get("scale", "nan"))
        if f.get("name") != "accel_3d" or abs(scale - 0.0980665) > 1e-6:
            problems.append(f"IIO device {f} (accel_3d with scale 0.098066500 expected)")
    if len(steps) != len(STEPS):
        problems.append(f"the phone made {len(steps)} of {len(STEPS)} steps")
    print(f"\n{'step':>4} {'phone (m/s²)':>24} {'laptop (m/s²)':>24} {'latency':>9}")
    for i, (t_step, s) in enumerate(steps):
        want = tuple(int(s[k]) / RES * G for k in ("x", "y", "z"))
        t_next = steps[i + 1][0] if i + 1 < len(steps) else float("inf")
        seen = None
        for t, raw in reads:
            if t < t_step or t >= t_next:
                continue
            got = tuple(v * (scale or 0) for v in raw)
            if all(abs(g - w) <= 0.1 for g, w in zip(got, want)):
                seen = (t, got)
                break
        lat = f"{(seen[0] - t_step) * 1000:.0f} ms" if seen else "never"
        print(f"{i:>4} {'%.2f %.2f %.2f' % want:>24} "
              f"{('%.2f %.2f %.2f' % seen[1]) if seen else '-':>24} {lat:>9}")
        if not seen:
            problems.append(f"step {i}: the laptop never read {want}")
        elif (seen[0] - t_step) * 1000 > INTERVAL_MS:
            problems.append(f"step {i}: seen after {(seen[0] - t_step) * 1000:.0f} ms "
                            f"(> one report interval, {INTERVAL_MS} ms)")
    for g in (phone, laptop):
        if g.error or g.run is None or not g.run.ok:
            problems.append(f"{g.name}: {g.error or (g.run and f'rc={g.run.rc}')}")
    problems += check_input(phone, laptop)
    stub_exit = phone.first("LAB-INFO stub exit")
    if vusbd_rc not in (0, None):
        problems.append(f"vusbd exited with {vusbd_rc}")
    if problems:
        print("\nFAIL:\n  " + "\n  ".join(problems))
        for g in (phone, laptop):
            if g.run:
                print(f"--- {g.name} ---\n{g.run.failure_report()}")
        print(f"--- vusbd log ---\n{lab.tail(vusbd_log, 40)}")
        return 1
    print(f"\nPASS: the phone's accelerometer (IIO), keyboard, mouse and touchscreen in the laptop VM ({stub_exit[1] if stub_exit else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
