#!/usr/bin/python3
"""e2e.vusbd_schedulers — vusbd's schedulers seen by two Linux guests (issue 4's proof).

vusbd (on the host) serves two VMs from three emulated Gadget Zeros on one bus ("emulated"):
  gz    bulk_rate=1000000: a bus-speed cap of 1 MB/s on its bulk endpoints, so the device — not
        the guests' emulated CPUs — is the bottleneck; given to vm1 and vm2 at 1-1, shared mode.
  iso1  isoc_mult=1,isoc_interval=1: alt 1 streams 2 x 1024 bytes every microframe IN and OUT
        (~82 of the 100 us a high-speed microframe may carry); vm1 only, at 1-2.
  iso2  the same, vm2 only, at 1-2. vm2 also has its bandwidth device (bandwidth_device = true)
        at 1-126.

1. Fair bulk: both guests attach gz and, after a barrier, run usbtest case 27 (bulk OUT, 8 URBs
   of 16 KiB queued at once) long enough to saturate it. The host samples vusbd's per-VM byte
   counters over two windows: weights 1:1, then `vusbctl weight --vm vm1 3` (3:1). Each VM's share
   of the bytes must be within 3% (relative) of its weight's share: 0.5 / 0.5, then 0.75 / 0.25.
2. Iso admission: vm1 reloads usbtest with alt=1 and attaches iso1 — its SET_INTERFACE(alt 1)
   reserves ~82 us per microframe — and keeps running iso case 16. vm2 then does the same with
   iso2: the bus cannot take a second such stream, vusbd answers SET_INTERFACE with -ENOSPC and
   vm2's usbtest probe fails with error -28 (dmesg); vm1's iso IN bytes keep growing meanwhile.
   vm2 attaches its bandwidth device (1209:0001) and `lsusb -v` in vm2 shows vm1's reservation:
   the interface string names vm1 and iso1, the endpoints say "2x 1024 bytes", bInterval 1.

Usage: tests/e2e/test_vusbd_schedulers.py [--build DIR] [--vusbd PATH] [--vusbctl PATH]
                                          [--window S] [--timeout S] [--log-level debug]
Logs: <build>/e2e-logs/vusbd_schedulers.{vm1,vm2}.console.log, .vusbd.log, .vusbd.toml,
.stats.json
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

NAME = "vusbd_schedulers"
VMS = ["vm1", "vm2"]
RATE = 1_000_000            # gz's bus-speed cap, bytes/s
URB = 16384                 # usbtest case 27 URB size
BULK_ITERATIONS = 125       # x sglen 8 = 1000 URBs of 16 KiB per guest: outlasts both windows
TOLERANCE = 0.03            # relative
HEAVY_ISO = "isoc_mult=1,isoc_interval=1"


def vusbd_toml(vm_ports: dict, control_port: int) -> str:
    out = ["[control]", f'listen = "127.0.0.1:{control_port}"', "", lab.control_token()]
    for vm in VMS:
        out += ["[[vm]]", f'name = "{vm}"', f'listen = "127.0.0.1:{vm_ports[vm]}"']
        if vm == "vm2":
            out += ["bandwidth_device = true"]
        out += [""]
    out += ["[[device]]", 'name = "gz"', f'source = "emulated:gadget-zero?bulk_rate={RATE}"',
            'mode = "shared"', 'vms = ["vm1", "vm2"]', "ports = { vm1 = 1, vm2 = 1 }", ""]
    for n, vm in (("iso1", "vm1"), ("iso2", "vm2")):
        out += ["[[device]]", f'name = "{n}"', f'source = "emulated:gadget-zero?{HEAVY_ISO}"',
                'mode = "shared"', f'vms = ["{vm}"]', f"ports = {{ {vm} = 2 }}", ""]
    return "\n".join(out)


def guest_script(vm: str, port: int, barrier_port: int, flag_port: int) -> str:
    bulk = lab.Case(27, BULK_ITERATIONS, URB, 0, 8)
    iso = lab.Case(16, 16, 1024, 0, 4)
    common = f"""
{lab.attach_usbtest(port, "1-1")}
echo "LAB-PHASE barrier"
go=$(timeout 90 nc 10.0.2.2 {barrier_port} </dev/null 2>&1)
echo "LAB-INFO barrier: ${{go:-no answer}}"
echo "LAB-PHASE bulk"
echo "LAB-INFO bulk-start"
{lab.usbtest_cmd([bulk], timeout=120)}
rc=$?
echo "LAB-INFO bulk-end rc=$rc"
usbip detach -p 0 2>&1 || echo "LAB-WARN usbip detach failed"
sleep 1
rmmod usbtest
lab_modprobe usbtest alt=1 || {{ echo "LAB-FAIL modprobe usbtest alt=1"; exit 22; }}
flag() {{ timeout 5 nc 10.0.2.2 {flag_port} </dev/null 2>/dev/null; }}
"""
    if vm == "vm1":
        return common + f"""
echo "LAB-PHASE iso"
usbip --tcp-port {port} attach -r 10.0.2.2 -b 1-2 2>&1 || {{ echo "LAB-FAIL attach 1-2"; exit 20; }}
b=$(lab_usbtest_bound 30) || {{ echo "LAB-FAIL usbtest did not bind iso1 with alt=1"; dmesg | tail -20; exit 21; }}
echo "LAB-INFO iso1 bound to $b"
n=0; rc2=0
while :; do
  {lab.usbtest_cmd([iso], timeout=60)}
  rc2=$?
  [ $rc2 -ne 0 ] && break
  n=$((n + 1))
  [ "$(flag)" = stop ] && break
  [ $n -ge 400 ] && break
done
echo "LAB-INFO iso-end runs=$n rc=$rc2"
usbip detach -p 0 2>&1 || echo "LAB-WARN usbip detach failed"
[ $rc -eq 0 ] && [ $rc2 -eq 0 ]
"""
    return common + f"""
echo "LAB-PHASE iso-wait"
w=0
until [ "$(flag)" = go ]; do sleep 1; w=$((w + 1)); [ $w -ge 90 ] && {{ echo "LAB-FAIL host never said go"; exit 25; }}; done
echo "LAB-PHASE iso"
usbip --tcp-port {port} attach -r 10.0.2.2 -b 1-2 2>&1 || {{ echo "LAB-FAIL attach 1-2"; exit 20; }}
sleep 4
dmesg | grep -i usbtest | tail -5
if dmesg | grep -q "usbtest.*error -28"; then echo "LAB-INFO refused -28"; else echo "LAB-INFO not-refused"; fi
if lab_usbtest_bound 1 >/dev/null; then echo "LAB-INFO iso2-bound"; fi
usbip --tcp-port {port} attach -r 10.0.2.2 -b 1-126 2>&1 || {{ echo "LAB-FAIL attach 1-126"; exit 20; }}
lab_find_usb 1209 0001 20 >/dev/null || {{ echo "LAB-FAIL the bandwidth device did not appear"; lab_usb_tree; exit 26; }}
echo "LAB-INFO lsusb-begin"
lsusb -v -d 1209:0001 2>&1 | sed 's/^/LSUSB: /'
echo "LAB-INFO lsusb-end"
usbip detach -p 1 2>&1; usbip detach -p 0 2>&1
[ $rc -eq 0 ]
"""


def get_stats(control_port: int):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{control_port}/api/v1/stats",
                                    timeout=5) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def out_bytes(stats, vm: str, dev: str = "gz") -> int:
    return int((((stats or {}).get("vms", {}).get(vm) or {}).get(dev) or {}).get("bytes_out", 0))


def in_bytes(stats, vm: str, dev: str) -> int:
    return int((((stats or {}).get("vms", {}).get(vm) or {}).get(dev) or {}).get("bytes_in", 0))


def measure(pc: int, secs: float) -> tuple:
    """Bytes each VM was served on gz over `secs`, and the share of vm1."""
    s0 = get_stats(pc)
    time.sleep(secs)
    s1 = get_stats(pc)
    d = {vm: out_bytes(s1, vm) - out_bytes(s0, vm) for vm in VMS}
    total = sum(d.values())
    return d, (d["vm1"] / total if total else 0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--vusbd", help="vusbd binary (default: <build>/bin/vusbd)")
    ap.add_argument("--vusbctl", help="vusbctl binary (default: <build>/bin/vusbctl)")
    ap.add_argument("--window", type=float, default=8, help="seconds per measured window")
    ap.add_argument("--timeout", type=float, default=200, help="wall-clock limit per guest")
    ap.add_argument("--log-level", default="info", help="vusbd --log-level")
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    logs = lab.logs_dir()
    t0 = time.monotonic()
    if not lab.ready():
        return 1
    vusbd = Path(a.vusbd) if a.vusbd else lab.build_dir() / "bin" / "vusbd"
    vusbctl = Path(a.vusbctl) if a.vusbctl else lab.build_dir() / "bin" / "vusbctl"
    for binary in (vusbd, vusbctl):
        if not binary.is_file():
            print(f"FAIL: {binary} not found (build it first)")
            return 1

    p1, p2, pc = lab.free_ports(3)
    vm_ports = {"vm1": p1, "vm2": p2}
    vusbd_log = logs / f"{NAME}.vusbd.log"
    stats_path = logs / f"{NAME}.stats.json"
    toml = logs / f"{NAME}.vusbd.toml"
    toml.write_text(vusbd_toml(vm_ports, pc))
    problems: list = []
    shares: dict = {}
    iso_growth = None
    guests: list = []
    barrier = lab.Barrier(2, 90)
    flag = lab.Flag("wait")
    vusbd_proc = lab.start_process([vusbd, "--config", toml, "--log-level", a.log_level],
                                   vusbd_log)
    vusbd_rc = None
    final = None
    try:
        if not lab.wait_log_line(vusbd_log, "vusbd: ready", vusbd_proc, 20):
            print(f"FAIL: vusbd not ready\n{lab.tail(vusbd_log, 60)}")
            return 1
        threads = []
        for vm in VMS:
            g = lab.GuestThread(f"{NAME}.{vm}",
                                guest_script(vm, vm_ports[vm], barrier.port, flag.port), t0,
                                modules=["usbtest", "vhci-hcd"])
            g.vm = vm
            guests.append(g)
            threads.append(g.start(a.timeout, 256))

        # ---- 1. fair bulk: both VMs busy on gz, then two windows
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(g.at("LAB-INFO bulk-start") is None
                                                   for g in guests):
            if any(g.finished.is_set() for g in guests):
                break
            time.sleep(0.5)
        time.sleep(3)  # both queues fill
        for label, weight in (("1:1", 1), ("3:1", 3)):
            if weight != 1:
                r = subprocess.run([vusbctl, "--api", f"127.0.0.1:{pc}", "weight", "--vm", "vm1",
                                    str(weight)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, timeout=20)
                lab.log(f"vusbctl weight --vm vm1 {weight}: exit {r.returncode}: "
                        f"{r.stdout.strip()}")
                if r.returncode != 0:
                    problems.append(f"vusbctl weight exited {r.returncode}")
                time.sleep(2)
            busy = [g.vm for g in guests if g.at("LAB-INFO bulk-end") is None]
            d, share = measure(pc, a.window)
            shares[label] = (d, share, busy)
            lab.log(f"window {label}: vm1 {d['vm1']} B, vm2 {d['vm2']} B, vm1 share {share:.4f}"
                    f" (busy throughout: {busy})")

        # ---- 2. iso admission
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            st = get_stats(pc) or {}
            held = [r for r in st.get("reservations", [])
                    if r.get("device") == "iso1" and "vm1" in r.get("vms", [])]
            if held or all(g.finished.is_set() for g in guests):
                break
            time.sleep(0.5)
        lab.log(f"vm1 holds iso1's bandwidth: {bool(held)}; telling vm2 to go")
        before = get_stats(pc)
        flag.value = "go"
        g2 = guests[1]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and g2.at("LAB-INFO lsusb-end") is None:
            if g2.finished.is_set():
                break
            time.sleep(0.5)
        after = get_stats(pc)
        iso_growth = in_bytes(after, "vm1", "iso1") - in_bytes(before, "vm1", "iso1")
        final = after
        flag.value = "stop"
        for th in threads:
            th.join()
        final = get_stats(pc) or final
        stats_path.write_text(json.dumps(final, indent=1))
    finally:
        barrier.close()
        flag.close()
        vusbd_rc = lab.stop_process(vusbd_proc)

    # ---- results
    for label, weight in (("1:1", 1), ("3:1", 3)):
        if label not in shares:
            problems.append(f"window {label} was not measured")
            continue
        d, share, busy = shares[label]
        want = weight / (weight + 1)
        err = abs(share - want) / want
        err2 = abs((1 - share) - (1 - want)) / (1 - want)
        rate = sum(d.values()) / a.window
        print(f"weights {label}: vm1 {d['vm1']} B, vm2 {d['vm2']} B in {a.window:g} s "
              f"({rate / 1e6:.3f} MB/s of the {RATE / 1e6:g} MB/s cap); vm1 share {share:.4f} "
              f"(want {want:.2f}, off by {err * 100:.2f}%), vm2 share {1 - share:.4f} "
              f"(off by {err2 * 100:.2f}%)")
        if len(busy) < 2:
            problems.append(f"window {label}: a guest had finished case 27 before it ({busy})")
        if max(err, err2) > TOLERANCE:
            problems.append(f"window {label}: shares {share:.4f}/{1 - share:.4f} are not within "
                            f"{TOLERANCE * 100:.0f}% of {want:.2f}/{1 - want:.2f}")
        if rate < 0.9 * RATE:
            problems.append(f"window {label}: gz ran at {rate:.0f} B/s, under 90% of its cap "
                            "(the guests, not the device, were the bottleneck)")
    g1, g2 = guests
    for g in guests:
        if g.error:
            problems.append(f"{g.vm}: {g.error}")
            continue
        res = g.run.usbtest()
        print(f"{g.vm}:\n{lab.usbtest_table(res)}")
        bulk = [r for r in res if r["case"] == 27]
        if not bulk or bulk[0].get("result") != "ok":
            problems.append(f"{g.vm}: case 27 did not pass")
        for m in g.run.find("LAB-FAIL"):
            problems.append(f"{g.vm} guest: " + m.line[len("LAB-FAIL"):].strip())
    if g1.run:
        end = g1.first("LAB-INFO iso-end")
        print(f"vm1 iso: {end[1] if end else 'no iso-end marker'}; iso1 IN bytes while vm2 was "
              f"refused and read its bandwidth device: {iso_growth}")
        if not end or not end[1].endswith("rc=0") or "runs=0" in end[1]:
            problems.append(f"vm1: iso case 16 did not keep passing ({end})")
        if not iso_growth or iso_growth <= 0:
            problems.append("vm1's iso stream did not run while vm2 was refused")
    if g2.run:
        if g2.at("LAB-INFO refused -28") is None:
            problems.append("vm2: usbtest's probe did not fail with -28 (ENOSPC) on iso2's alt 1")
        if g2.at("LAB-INFO iso2-bound") is not None:
            problems.append("vm2: usbtest bound iso2 although its alt 1 does not fit the bus")
        lsusb = [line[len("LSUSB: "):] for line in g2.run.console.splitlines()
                 if line.startswith("LSUSB: ")]
        text = "\n".join(lsusb)
        print("vm2: lsusb -v -d 1209:0001 (the bandwidth device):")
        print("\n".join("  " + x for x in lsusb if any(k in x for k in (
            "idVendor", "iProduct", "iConfiguration", "iInterface", "bEndpointAddress",
            "Transfer Type", "wMaxPacketSize", "bInterval", "bAlternateSetting"))))
        for want in ("vm1: iso1 if 0 alt 1", "2x 1024 bytes", "Isochronous"):
            if want not in text:
                problems.append(f"vm2's lsusb -v of its bandwidth device lacks '{want}'")
    log_text = vusbd_log.read_text(errors="replace") if vusbd_log.exists() else ""
    if "vm2 asked for interface 0 alternate 1, refused (-ENOSPC)" not in log_text:
        problems.append("vusbd did not log vm2's refusal")
    if vusbd_rc != 0:
        problems.append(f"vusbd exited {vusbd_rc} on SIGTERM (expected 0)")
    if "AddressSanitizer" in log_text or "runtime error:" in log_text:
        problems.append("vusbd reported a sanitizer error")
    if final:
        print("vusbd buses: " + json.dumps(final.get("buses")))
        print("vusbd reservations: " + json.dumps(final.get("reservations")))
        for vm in VMS:
            s = (final.get("vms", {}).get(vm) or {}).get("gz") or {}
            print(f"  {vm}/gz: bytes_out={s.get('bytes_out')} queue_wait_ms="
                  f"{s.get('queue_wait_ms')} queued={s.get('queued')} refused={s.get('refused')}")
        r2 = (final.get("vms", {}).get("vm2") or {}).get("iso2") or {}
        if not r2.get("refused"):
            problems.append("vusbd stats: vm2/iso2 refused = 0")
    print(f"timing: total {time.monotonic() - t0:.1f}s")
    if problems:
        print("FAIL: " + "; ".join(problems))
        for g in guests:
            print(f"=== {g.vm} ===")
            print(g.run.failure_report(60) if g.run else g.error)
        print(f"--- vusbd log tail ({vusbd_log}) ---\n{lab.tail(vusbd_log, 60)}")
        return 1
    print("PASS: fair shares follow the weights within 3%; an over-committing iso setting is "
          "refused with -ENOSPC while the other guest streams; the bandwidth device shows it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
