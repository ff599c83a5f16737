#!/usr/bin/python3
"""e2e.vusbd_usbredir_import — vusbd imports a device from Debian's `usbredirect`, a second
independent usbredir peer, and a guest reads and writes it.

The exporter guest has QEMU's own `usb-storage` (a 4 MiB disk image on the host) on its xHCI and
runs Debian's `usbredirect --device 46f4:0001 --as 0.0.0.0:4000` (libusb + libusbredirhost: the
usb-host side of the protocol, as spice's and QEMU's peers use it). QEMU's user network forwards
a host port to it. vusbd's device "stick" has the source `usbredir://127.0.0.1:PORT`: vusbd
connects as the usb-guest, reads the descriptors with control packets and serves the stick to vm2
over USB/IP. The user guest attaches it with `usbip attach`, the kernel's usb-storage makes
/dev/sda, and the guest writes 1 MiB of random data to it, drops its caches, reads it back and
compares. Checks: the data read back is what was written, the host's disk image holds the same
bytes afterwards (they went through usbredirect to QEMU's usb-storage), and vusbd exits 0.

Usage: tests/e2e/test_vusbd_usbredir_import.py [--build DIR] [--timeout S]
"""
import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
import lab  # noqa: E402

NAME = "vusbd_usbredir_import"
MIB = 1 << 20


def exporter_script(done_port: int) -> str:
    return f"""echo "LAB-PHASE stick"
for i in $(seq 1 60); do lsusb | grep -q 46f4:0001 && break; sleep 0.5; done
lsusb | grep -q 46f4:0001 || {{ echo "LAB-FAIL QEMU's usb-storage did not enumerate"; lsusb; exit 20; }}
echo "LAB-PHASE export"
usbredirect --device 46f4:0001 --as 0.0.0.0:4000 --verbose 3 > /tmp/usbredirect.log 2>&1 &
pid=$!
echo "LAB-INFO usbredirect-started"
go=$(timeout 240 nc 10.0.2.2 {done_port} </dev/null 2>&1)
echo "LAB-INFO done: ${{go:-no answer}}"
kill $pid 2>/dev/null
tail -5 /tmp/usbredirect.log
"""


def user_script(port: int) -> str:
    return f"""echo "LAB-PHASE attach"
for i in $(seq 1 120); do usbip --tcp-port {port} list -r 10.0.2.2 2>/dev/null | grep -q '1-1:' && break; sleep 1; done
usbip --tcp-port {port} attach -r 10.0.2.2 -b 1-1 2>&1 || {{ echo "LAB-FAIL usbip attach failed"; exit 20; }}
lab_wait_for /dev/sda 60 || {{ echo "LAB-FAIL usb-storage made no /dev/sda"; lab_usb_tree; exit 21; }}
echo "LAB-PHASE io"
dd if=/dev/urandom of=/tmp/a bs=65536 count=16 2>/dev/null
echo "LAB-INFO wrote-md5 $(md5sum /tmp/a | cut -d' ' -f1)"
dd if=/tmp/a of=/dev/sda bs=65536 count=16 conv=fsync 2>&1 || {{ echo "LAB-FAIL write failed"; exit 22; }}
sync
echo 3 > /proc/sys/vm/drop_caches
blockdev --flushbufs /dev/sda 2>/dev/null
dd if=/dev/sda of=/tmp/b bs=65536 count=16 2>&1 || {{ echo "LAB-FAIL read failed"; exit 23; }}
echo "LAB-INFO read-md5 $(md5sum /tmp/b | cut -d' ' -f1)"
cmp /tmp/a /tmp/b || {{ echo "LAB-FAIL the data read back differs"; exit 24; }}
usbip detach -p 0 2>&1 || echo "LAB-WARN usbip detach failed"
"""


def info(g, key: str) -> str | None:
    if not g.run:
        return None
    for m in g.run.find("LAB-INFO"):
        parts = m.line.split()
        if len(parts) >= 3 and parts[1] == key:
            return parts[2]
    return None


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
    pc, p2, hp = lab.free_ports(3)
    disk = logs / f"{NAME}.stick.img"
    with open(disk, "wb") as f:
        f.truncate(4 * MIB)
    toml = logs / f"{NAME}.toml"
    toml.write_text(f'[control]\nlisten = "127.0.0.1:{pc}"\n\n{lab.control_token()}'
                    f'[[vm]]\nname = "vm2"\nlisten = "127.0.0.1:{p2}"\n\n'
                    f'[[device]]\nname = "stick"\nsource = "usbredir://127.0.0.1:{hp}"\n'
                    'vms = ["vm2"]\n')
    log_path = logs / f"{NAME}.vusbd.log"
    vusbd = lab.start_process([bindir / "vusbd", "--config", toml], log_path)
    problems: list = []
    done = lab.Barrier(2, 600)  # the exporter waits here until release(): the user is finished
    exporter = user = None
    try:
        if not lab.wait_listening(pc, vusbd, 20):
            print(f"FAIL: vusbd did not start\n{lab.tail(log_path)}")
            return 1
        t0 = time.monotonic()
        exporter = lab.GuestThread(
            f"{NAME}.exporter", exporter_script(done.port), t0, modules=["xhci-pci"],
            hostfwd=[f"tcp:127.0.0.1:{hp}-:4000"],
            devices=["qemu-xhci,id=x", f"-drive if=none,id=stick,file={disk},format=raw",
                     "usb-storage,drive=stick,bus=x.0"])
        user = lab.GuestThread(f"{NAME}.user", user_script(p2), t0,
                               modules=["vhci-hcd", "usb-storage", "sd_mod"])
        te = exporter.start(a.timeout, 256)
        tu = user.start(a.timeout, 256)
        tu.join()
        done.release()
        te.join()
    finally:
        done.close()
        rc = lab.stop_process(vusbd)
    wrote, read = info(user, "wrote-md5"), info(user, "read-md5")
    on_disk = hashlib.md5(disk.read_bytes()[:MIB]).hexdigest()
    print(f"user guest wrote {wrote}, read back {read}; the host's disk image holds {on_disk}")
    for g in (exporter, user):
        if g is None or g.run is None:
            problems.append(f"a guest did not run ({g.error if g else ''})")
            continue
        for m in g.run.find("LAB-FAIL"):
            problems.append(f"{g.name}: " + m.line[len("LAB-FAIL"):].strip())
        if not g.run.ok:
            problems.append(f"{g.name}: script failed (rc={g.run.rc}, timed out: "
                            f"{g.run.timed_out})")
    if not wrote or wrote != read:
        problems.append("the data read back is not what was written")
    elif wrote != on_disk:
        problems.append("the host's disk image does not hold the bytes written")
    if rc != 0:
        problems.append(f"vusbd exited {rc} on SIGTERM")
    if problems:
        print("FAIL: " + "; ".join(problems))
        for g in (exporter, user):
            if g and g.run and not g.run.ok:
                print(f"--- {g.name} ---\n{g.run.failure_report()}")
        print(f"--- vusbd log tail ---\n{lab.tail(log_path, 40)}")
        return 1
    print("PASS: vusbd imported QEMU's usb-storage from usbredirect (usbredir://) and a guest "
          "wrote and read 1 MiB through it over USB/IP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
