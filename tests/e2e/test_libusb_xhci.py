#!/usr/bin/python3
"""e2e.libusb_xhci — vusb-stub's libusb source against USB devices nobody here wrote.

Boots one guest whose xHCI (QEMU's qemu-xhci) carries QEMU's own emulated usb-storage (46f4:0001,
a small raw image made here) and usb-tablet (0627:0001). Only xhci-pci is loaded: usb-storage and
usbhid stay unloaded, so libusb finds the interfaces free (--with-drivers loads them instead, and
vusb-stub then has to detach them). Inside, the real vusb-stub (build/bin, stripped, with every
library `ldd` lists) runs `--libusb-all --listen 0.0.0.0:3240 --access hid=any` (the tablet is an
input device, which vusb-stub otherwise gives only to authenticated peers), forwarded to a free
host port.
When it logs that it listens and that libusb's first scan is done, the guest prints
LAB-STUB-READY and the host:
  1. runs Debian's `usbip --tcp-port PORT list -r 127.0.0.1` and checks both devices with their
     interface classes (08/06/50 storage, 03/00/00 tablet);
  2. runs `vusb-probe inquiry 127.0.0.1:PORT BUSID` (vusb's own USB/IP importer: descriptors,
     SET_CONFIGURATION, SCSI INQUIRY over bulk-only transport) and checks the vendor is "QEMU";
  3. connects to a second forwarded port where the guest's busybox `nc -l` waits (without that
     word the guest gives up by itself after --hold seconds). The guest then
  4. checks that the interfaces were bound to usbfs (libusb's claim) while exported;
  5. imports both devices into its own vhci-hcd from its own vusb-stub, so the kernel's
     usb-storage and usbhid drive QEMU's devices through the libusb source: 1 MiB written, read
     back and compared (the host then finds it in the raw image), usbhid's pending interrupt URB
     unlinked by unbinding usbhid and bound again, both ports detached (--no-guest-attach skips);
  6. stops vusb-stub (SIGTERM, exit status 0 expected), checks the detached kernel drivers are
     back, and powers off.
On failure it prints the vusb-stub log (streamed from the guest as "STUB| " lines) and the tail of
the console.

--vusbd PATH runs vusbd in the guest instead (e2e.vusbd_libusb_xhci): one VM on port 3240 with
both devices named by VID:PID in its config (vusbd's local libusb source), at VM-local bus ids 1-1
(storage) and 1-2 (tablet); the same host and guest checks then run through vusbd.

Usage: tests/e2e/test_libusb_xhci.py [--build DIR] [--stub PATH] [--probe PATH] [--with-drivers]
                                     [--no-guest-attach] [--vusbd PATH]
"""
import argparse
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
import lab  # noqa: E402

STORAGE_ID = "46f4:0001"  # QEMU 7.2 hw/usb/dev-storage.c (CRC16 of "QEMU" : 1)
TABLET_ID = "0627:0001"   # QEMU 7.2 hw/usb/dev-hid.c, usb-tablet
STORAGE_IFS = ["08/06/50"]  # mass storage, SCSI transparent, bulk-only
TABLET_IFS = ["03/00/00"]   # HID, no boot subclass (a tablet is not a boot mouse)
GUEST_STUB_PORT = 3240
GUEST_STOP_PORT = 3241
STUB_PREFIX = "STUB| "


# Phase 5, in the guest after the host is done: the guest's own vhci-hcd imports both devices from
# its own vusb-stub (127.0.0.1), so the kernel's usb-storage and usbhid drive QEMU's devices
# through vusb-stub's libusb source. 1 MiB of random data is written to the disk, read back and
# compared; its md5 is printed so the host can find it in the raw image after QEMU exits. A reader
# on hidraw keeps usbhid's interrupt URB pending while usbhid is unbound (CMD_UNLINK -> libusb
# cancel) and bound again; then both ports are detached.
# vusb-stub runs --libusb-all, yet it does not grab the imported copies: libusb's hotplug comes
# from udevd, and this initramfs has none, so only the initial scan counts.
ATTACH_SCRIPT = r"""
attach_phase() {
  echo "LAB-PHASE attach"
  for m in vhci-hcd sd_mod usb-storage usbhid hid-generic; do
    lab_modprobe $m || { echo "LAB-FAIL modprobe $m"; return 30; }
  done
  for b in $ATTACH_BUSIDS; do
    usbip attach -r 127.0.0.1 -b $b 2>&1 ||
      { echo "LAB-FAIL usbip attach -r 127.0.0.1 -b $b failed (guest vhci-hcd)"; return 31; }
  done
  VSTOR=""; VTAB=""; blk=""; i=0
  while [ $i -lt 200 ]; do
    for d in /sys/bus/usb/devices/*; do
      b=${d##*/}
      case "$b" in *:*|usb*) continue ;; esac
      [ "$b" = "$STOR" ] || [ "$b" = "$TAB" ] || [ ! -f $d/idVendor ] && continue
      case "$(cat $d/idVendor):$(cat $d/idProduct)" in
        STORAGE_ID) VSTOR=$b ;;
        TABLET_ID) VTAB=$b ;;
      esac
    done
    [ -n "$VSTOR" ] && blk=$(ls /sys/bus/usb/devices/$VSTOR:1.0/host*/target*/*/block/ 2>/dev/null | head -n 1)
    if [ -n "$blk" ] && [ -b /dev/$blk ] && [ "$(cat /sys/block/$blk/size 2>/dev/null)" != 0 ] &&
       [ -n "$VTAB" ] && [ -e /sys/bus/usb/drivers/usbhid/$VTAB:1.0 ]; then
      break
    fi
    sleep 0.1; i=$((i + 1))
  done
  echo "LAB-INFO imported copies: storage=$VSTOR disk=$blk tablet=$VTAB"
  lab_usb_tree
  [ -n "$blk" ] && [ -b /dev/$blk ] || { echo "LAB-FAIL no disk from the imported usb-storage"; return 32; }
  [ -n "$VTAB" ] && [ -e /sys/bus/usb/drivers/usbhid/$VTAB:1.0 ] ||
    { echo "LAB-FAIL usbhid did not bind the imported tablet"; return 33; }
  echo "LAB-ATTACH tablet=ok"
  dd if=/dev/urandom of=/tmp/pat bs=64k count=16 2>/dev/null
  dd if=/tmp/pat of=/dev/$blk bs=64k count=16 conv=fsync 2>/dev/null ||
    { echo "LAB-FAIL writing /dev/$blk failed"; return 34; }
  sync; echo 3 >/proc/sys/vm/drop_caches
  dd if=/dev/$blk of=/tmp/back bs=64k count=16 2>/dev/null ||
    { echo "LAB-FAIL reading /dev/$blk failed"; return 35; }
  cmp -s /tmp/pat /tmp/back || { echo "LAB-FAIL /dev/$blk read back other data"; return 36; }
  echo "LAB-ATTACH storage=ok md5=$(md5sum </tmp/pat | cut -d' ' -f1)"
  # A reader on hidraw keeps usbhid's interrupt-IN URB pending; unbinding usbhid kills it, and
  # vhci-hcd gives it back only when vusb-stub answers the CMD_UNLINK (libusb_cancel_transfer).
  hr=$(ls /sys/bus/usb/devices/$VTAB:1.0/*/hidraw/ 2>/dev/null | head -n 1)
  [ -n "$hr" ] && [ -c /dev/$hr ] || { echo "LAB-FAIL no hidraw node for the imported tablet"; return 40; }
  cat /dev/$hr >/dev/null 2>&1 &
  HR=$!
  sleep 0.5
  ( echo $VTAB:1.0 >/sys/bus/usb/drivers/usbhid/unbind ) &
  UB=$!; i=0
  while kill -0 $UB 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  kill -0 $UB 2>/dev/null &&
    { echo "LAB-FAIL unbinding usbhid hung: its interrupt URB was never given back (unlink)"; return 41; }
  kill $HR 2>/dev/null
  echo $VTAB:1.0 >/sys/bus/usb/drivers/usbhid/bind 2>/dev/null
  lab_wait_for /sys/bus/usb/drivers/usbhid/$VTAB:1.0 5 ||
    { echo "LAB-FAIL usbhid did not bind the imported tablet again after the unlink"; return 42; }
  echo "LAB-ATTACH unlink=ok"
  for p in $(usbip port 2>/dev/null | sed -n 's/^Port \([0-9]*\):.*/\1/p'); do
    usbip detach -p $p 2>&1 || { echo "LAB-FAIL usbip detach -p $p failed"; return 37; }
  done
  i=0
  while { [ -e /sys/bus/usb/devices/$VSTOR ] || [ -e /sys/bus/usb/devices/$VTAB ]; } && [ $i -lt 100 ]; do
    sleep 0.1; i=$((i + 1))
  done
  [ -e /sys/bus/usb/devices/$VSTOR ] || [ -e /sys/bus/usb/devices/$VTAB ] &&
    { echo "LAB-FAIL imported devices still present after usbip detach"; return 38; }
  echo "LAB-ATTACH detached=ok"
  return 0
}
""".replace("STORAGE_ID", STORAGE_ID).replace("TABLET_ID", TABLET_ID)


# The USB/IP server the guest runs over QEMU's devices: vusb-stub, or vusbd serving one VM (its
# devices named by libusb VID:PID, at VM-local bus ids 1-1 and 1-2 in config order).
VUSBD_TOML = f"""[control]
listen = "127.0.0.1:3250"

[[vm]]
name = "vm1"
listen = "0.0.0.0:{GUEST_STUB_PORT}"

[[device]]
name = "disk"
source = "libusb:{STORAGE_ID}"
vms = ["vm1"]

[[device]]
name = "tablet"
source = "libusb:{TABLET_ID}"
vms = ["vm1"]
"""
SERVERS = {
    # The tablet is an input device: since issue 16 vusb-stub gives one only to an
    # authenticated peer or to peers an access rule names. This lab exporter names them all.
    "stub": {"cmd": f"vusb-stub --libusb-all --listen 0.0.0.0:{GUEST_STUB_PORT} --access hid=any",
             "ready": "grep -q 'listening on' /tmp/stub.log && "
                      "grep -q 'initial scan found' /tmp/stub.log",
             "busids": "$STOR $TAB"},
    "vusbd": {"cmd": "vusbd --config /etc/vusbd.toml",
              "ready": "grep -q 'vusbd: ready' /tmp/stub.log && "
                       "grep -q 'control API' /tmp/stub.log",
              "busids": "1-1 1-2"},
}


def guest_script(hold: float, with_drivers: bool, attach: bool, server: str = "stub") -> str:
    drivers = ""
    if with_drivers:
        drivers = """
lab_modprobe usb-storage || echo "LAB-WARN usb-storage did not load"
lab_modprobe usbhid || echo "LAB-WARN usbhid did not load"
lab_modprobe hid-generic 2>/dev/null
i=0; while [ $i -lt 100 ]; do
  [ -e /sys/bus/usb/drivers/usb-storage/$STOR:1.0 ] && [ -e /sys/bus/usb/drivers/usbhid/$TAB:1.0 ] && break
  sleep 0.1; i=$((i + 1))
done
"""
    return ATTACH_SCRIPT + f"""
STOR=$(lab_find_usb {STORAGE_ID.replace(':', ' ')} 20) || {{ echo "LAB-FAIL no QEMU usb-storage ({STORAGE_ID}) on the xHCI"; lab_usb_tree; exit 10; }}
TAB=$(lab_find_usb {TABLET_ID.replace(':', ' ')} 20) || {{ echo "LAB-FAIL no QEMU usb-tablet ({TABLET_ID}) on the xHCI"; lab_usb_tree; exit 11; }}
{drivers}
echo "LAB-INFO storage=$STOR tablet=$TAB"
echo "LAB-PHASE before"
lab_usb_tree
ls /dev/bus/usb/*/* >/dev/null 2>&1 || {{ echo "LAB-FAIL no /dev/bus/usb nodes"; exit 12; }}

# QEMU's user network learns the guest's MAC only from the guest's own packets; until then a
# connection forwarded from the host waits for SYN retransmits (~6 s). A ping's ARP exchange
# teaches it; the echo itself may go unanswered (the host may not allow QEMU ICMP sockets).
ping -c 1 -W 1 10.0.2.2 >/dev/null 2>&1

# The host says "done" by connecting to this port (hostfwd); nc exits when it hangs up.
( nc -l -p {GUEST_STOP_PORT} </dev/null >/tmp/stop.msg 2>&1; touch /tmp/stop.done ) &
: >/tmp/stub.log
ATTACH_BUSIDS="{SERVERS[server]['busids']}"
{SERVERS[server]['cmd']} >/tmp/stub.log 2>&1 &
STUB=$!
shown=0
show_log() {{
  _c=$(wc -l </tmp/stub.log)
  if [ "$_c" -gt "$shown" ]; then
    tail -n +$((shown + 1)) /tmp/stub.log | head -n $((_c - shown)) | sed 's/^/{STUB_PREFIX}/'
    shown=$_c
  fi
}}
ready=0; rc=0; t=0; limit=$(( {int(hold)} * 10 ))
while :; do
  show_log
  if ! kill -0 $STUB 2>/dev/null; then
    wait $STUB; echo "LAB-FAIL vusb-stub exited early (status $?)"; rc=20; break
  fi
  if [ $ready = 0 ] && {SERVERS[server]['ready']}; then
    ready=1; echo "LAB-PHASE exported"; lab_usb_tree; echo "LAB-STUB-READY"
  fi
  [ -e /tmp/stop.done ] && {{ echo "LAB-INFO host said: $(cat /tmp/stop.msg)"; break; }}
  t=$((t + 1))
  if [ $t -ge $limit ]; then
    echo "LAB-WARN no word from the host within {int(hold)}s; stopping"; rc=21; break
  fi
  sleep 0.1
done
if [ $rc = 0 ] && [ {int(attach)} = 1 ]; then
  attach_phase; rc=$?
  show_log
fi
if kill -0 $STUB 2>/dev/null; then
  kill -TERM $STUB
  i=0; while kill -0 $STUB 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  if kill -0 $STUB 2>/dev/null; then
    echo "LAB-FAIL vusb-stub ignored SIGTERM for 5s"; kill -KILL $STUB; rc=22
  fi
  wait $STUB; echo "LAB-STUB-EXIT status=$?"
fi
show_log
echo "LAB-PHASE after"
lab_usb_tree
exit $rc
"""


def stub_files(stub: Path, tmp: Path, name: str = "vusb-stub") -> dict:
    """Overlay files: the stripped server binary as /usr/bin/NAME plus every library ldd lists
    (symlinks resolved), at the paths the loader looks for them."""
    files = {}
    exe = tmp / name
    strip = shutil.which("strip")
    if strip and subprocess.run([strip, "-o", str(exe), str(stub)]).returncode == 0:
        files[f"usr/bin/{name}"] = exe.read_bytes()
    else:
        files[f"usr/bin/{name}"] = stub.read_bytes()
    out = subprocess.run(["ldd", str(stub)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ldd {stub} failed:\n{out.stdout}")
    for line in out.stdout.splitlines():
        if "not found" in line:
            raise RuntimeError(f"ldd {stub}: {line.strip()}")
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            files[m.group(1).lstrip("/")] = Path(m.group(1)).read_bytes()
    return files


def parse_usbip_list(text: str) -> dict:
    """busid -> {"id": "vvvv:pppp", "ifs": ["cc/ss/pp", ...]} from `usbip list -r` output."""
    devs: dict = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r"\s+(\d+-[\d.]+):.*\(([0-9a-f]{4}:[0-9a-f]{4})\)\s*$", line)
        if m:
            cur = devs.setdefault(m.group(1), {"id": m.group(2), "ifs": [], "line": line.strip()})
            continue
        m = re.match(r"\s+:\s+\d+ - .*\(([0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{2})\)\s*$", line)
        if m and cur is not None:
            cur["ifs"].append(m.group(1))
    return devs


def send_stop(port: int, heard: threading.Event, finished: threading.Event) -> bool:
    """Tells the guest the host is done. QEMU's user network accepts a forwarded connection before
    it knows whether the guest listens, so success is the guest saying it heard us."""
    for _ in range(5):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"done\n")
        except OSError:
            pass
        if heard.wait(5) or finished.is_set():
            return heard.is_set()
    return False


def check_discovery(vusbd: Path, stub_port: int, by_id: dict, problems: list,
                    summary: list) -> None:
    """Runs vusbd on the host with one VM and the source usbip://127.0.0.1:STUB/* and checks that
    Debian's usbip lists both of QEMU's devices on the VM's port (the tablet's server bus id has a
    dot: it is behind the hub). Stops vusbd again (its imports end) before returning."""
    tablet_busid = by_id.get(TABLET_ID, (None,))[0]
    if not tablet_busid or "." not in tablet_busid:
        problems.append(f"the tablet is not behind the hub (server bus id {tablet_busid!r})")
    vm_port, ctl_port = [p for p in lab.free_ports(3) if p != stub_port][:2]
    logs = lab.logs_dir()
    toml = logs / "libusb_xhci.vusbd.toml"
    toml.write_text(f'[control]\nlisten = "127.0.0.1:{ctl_port}"\n\n[[vm]]\nname = "vm1"\n'
                    f'listen = "127.0.0.1:{vm_port}"\n\n[[device]]\nname = "guest"\n'
                    f'source = "usbip://127.0.0.1:{stub_port}/*"\nvms = ["vm1"]\n')
    log_path = logs / "libusb_xhci.vusbd.log"
    proc = lab.start_process([vusbd, "--config", toml], log_path)
    try:
        deadline = time.monotonic() + 20
        devs: dict = {}
        while time.monotonic() < deadline and proc.poll() is None:
            if "vusbd: ready" in log_path.read_text(errors="replace"):
                p = run_cmd(["usbip", "--tcp-port", vm_port, "list", "-r", "127.0.0.1"])
                devs = parse_usbip_list(p.stdout)
                if len(devs) >= 2:
                    break
            time.sleep(0.3)
        ids = sorted(d["id"] for d in devs.values())
        if ids != sorted([STORAGE_ID, TABLET_ID]):
            problems.append(f"vusbd discovering usbip://127.0.0.1:{stub_port}/* offered {ids} to "
                            f"its VM, expected both QEMU devices\n{lab.tail(log_path, 30)}")
        else:
            summary.append("vusbd (host) following the guest's vusb-stub (/*): offers "
                           + ", ".join(f"{b} {d['id']}" for b, d in sorted(devs.items()))
                           + f" to its VM (the tablet is {tablet_busid} on the server: behind "
                           "the hub)")
    finally:
        rc = lab.stop_process(proc)
        if rc != 0:
            problems.append(f"host vusbd exited {rc} on SIGTERM\n{lab.tail(log_path, 30)}")


def run_cmd(cmd, timeout: float = 30) -> subprocess.CompletedProcess:
    lab.log("$ " + " ".join(str(c) for c in cmd))
    t = time.monotonic()
    try:
        p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        p = subprocess.CompletedProcess(e.cmd, 124, out + f"\n(timed out after {timeout}s)")
    lab.log(f"  exit status {p.returncode} after {time.monotonic() - t:.1f}s")
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--stub", help="vusb-stub binary (default: <build>/bin/vusb-stub)")
    ap.add_argument("--probe", help="vusb-probe binary (default: <build>/bin/vusb-probe)")
    ap.add_argument("--host-vusbd", help="also run this vusbd on the host following the guest's "
                                         "vusb-stub as a whole server (usbip://…/*)")
    ap.add_argument("--vusbd", help="run this vusbd in the guest instead of vusb-stub: one VM, "
                                    "the two devices by libusb VID:PID (vusbd's local source)")
    ap.add_argument("--usbip", default="/usr/sbin/usbip", help="Debian's usbip tool")
    ap.add_argument("--with-drivers", action="store_true",
                    help="load usb-storage and usbhid in the guest (vusb-stub must detach them)")
    ap.add_argument("--no-guest-attach", dest="attach", action="store_false",
                    help="skip phase 5 (the guest's own vhci-hcd, usb-storage and usbhid "
                         "through vusb-stub)")
    ap.add_argument("--hold", type=float, default=60,
                    help="seconds the guest keeps vusb-stub up without word from the host")
    ap.add_argument("--timeout", type=float, default=110, help="guest wall-clock limit")
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    server = "vusbd" if a.vusbd else "stub"
    who = "vusbd" if a.vusbd else "vusb-stub"
    host_vusbd = Path(a.host_vusbd) if a.host_vusbd else None
    stub = Path(a.vusbd) if a.vusbd else (Path(a.stub) if a.stub else
                                          lab.build_dir() / "bin" / "vusb-stub")
    probe = Path(a.probe) if a.probe else lab.build_dir() / "bin" / "vusb-probe"
    for p in (stub, probe, Path(a.usbip)):
        if not (p.is_file() and os.access(p, os.X_OK)):
            print(f"FAIL: {p} not found or not executable")
            return 1

    t0 = time.monotonic()
    if not lab.ready():
        return 1

    port, stop_port = lab.free_port(), lab.free_port()
    while stop_port == port:
        stop_port = lab.free_port()
    ready = threading.Event()
    finished = threading.Event()
    heard = threading.Event()
    stub_lines: list = []
    result: dict = {}

    def on_line(line: str) -> None:
        i = line.find(STUB_PREFIX)
        if i >= 0:
            stub_lines.append(line[i + len(STUB_PREFIX):])
        elif "LAB-STUB-READY" in line:
            ready.set()
        elif "LAB-INFO host said" in line:
            heard.set()

    problems: list = []
    summary: list = []
    image_md5 = None
    with tempfile.TemporaryDirectory(prefix="vusb-libusb-xhci-") as td:
        tmp = Path(td)
        image = tmp / "stick.img"
        with open(image, "wb") as f:
            f.truncate(4 << 20)  # 4 MiB of zeros: INQUIRY needs no medium content
        try:
            files = stub_files(stub, tmp, "vusbd" if a.vusbd else "vusb-stub")
            if a.vusbd:
                files["etc/vusbd.toml"] = VUSBD_TOML
        except (OSError, RuntimeError) as e:
            print(f"FAIL: cannot stage vusb-stub for the guest: {e}")
            return 1
        modules = ["xhci-pci"]
        # The tablet sits behind a hub (QEMU's usb-hub on root port 1), so its bus id has a dot.
        devices = ["qemu-xhci,id=xhci",
                   f"-drive if=none,id=stick,file={image},format=raw",
                   "usb-hub,bus=xhci.0,port=1",
                   "usb-storage,bus=xhci.0,port=2,drive=stick",
                   "usb-tablet,bus=xhci.0,port=1.1"]
        hostfwd = [f"tcp:127.0.0.1:{port}-:{GUEST_STUB_PORT}",
                   f"tcp:127.0.0.1:{stop_port}-:{GUEST_STOP_PORT}"]

        def guest() -> None:
            try:
                result["run"] = lab.run_guest(
                    guest_script(a.hold, a.with_drivers, a.attach, server),
                    name="vusbd_libusb_xhci" if a.vusbd else "libusb_xhci", modules=modules,
                    devices=devices, hostfwd=hostfwd, files=files, timeout=a.timeout,
                    on_line=on_line)
            except BaseException as e:  # reported below
                result["error"] = e
            finally:
                finished.set()

        th = threading.Thread(target=guest, daemon=True)
        th.start()
        # Ready, or the guest ended (failed) first.
        while not ready.is_set() and not finished.is_set():
            ready.wait(0.2)
        t_ready = time.monotonic() - t0
        stopped = False
        t_host = 0.0
        if ready.is_set():
            # 1. Debian's usbip lists what vusb-stub exports from inside the guest.
            p = run_cmd([a.usbip, "--tcp-port", port, "list", "-r", "127.0.0.1"])
            print(p.stdout.rstrip())
            devs = parse_usbip_list(p.stdout)
            if p.returncode != 0:
                problems.append(f"usbip list exited {p.returncode}")
            by_id = {d["id"]: (busid, d) for busid, d in devs.items()}
            storage_busid = None
            for vidpid, ifs, what in ((STORAGE_ID, STORAGE_IFS, "usb-storage"),
                                      (TABLET_ID, TABLET_IFS, "usb-tablet")):
                if vidpid not in by_id:
                    problems.append(f"usbip list does not show QEMU's {what} ({vidpid})")
                    continue
                busid, d = by_id[vidpid]
                summary.append(f"usbip list: {busid} {vidpid} ({what}) interfaces "
                               f"{' '.join(d['ifs'])}")
                if d["ifs"] != ifs:
                    problems.append(f"{what} {busid}: interfaces {d['ifs']}, expected {ifs}")
                if vidpid == STORAGE_ID:
                    storage_busid = busid
            # 2. vusb's own importer: descriptors, SET_CONFIGURATION, SCSI INQUIRY.
            if storage_busid:
                p = run_cmd([probe, "inquiry", f"127.0.0.1:{port}", storage_busid], timeout=60)
                print(p.stdout.rstrip())
                m = re.search(r"^INQUIRY: .*vendor '([^']*)' product '([^']*)' revision '([^']*)'",
                              p.stdout, re.M)
                if p.returncode != 0:
                    problems.append(f"vusb-probe inquiry exited {p.returncode}")
                if not m:
                    problems.append("vusb-probe printed no INQUIRY answer")
                else:
                    summary.append(f"INQUIRY via vusb-probe: vendor '{m.group(1)}' product "
                                   f"'{m.group(2)}' revision '{m.group(3)}'")
                    if m.group(1) != "QEMU":
                        problems.append(f"INQUIRY vendor is '{m.group(1)}', expected 'QEMU'")
            # 2b. vusbd on the host follows the guest's whole server (usbip://…/*): it must find
            # both devices, the tablet behind the hub included, and offer them to its VM.
            if host_vusbd and not a.vusbd:
                check_discovery(host_vusbd, port, by_id, problems, summary)
            # 3. Let the guest stop vusb-stub and power off.
            t_host = time.monotonic() - t0 - t_ready
            stopped = send_stop(stop_port, heard, finished)
            if not stopped:
                problems.append("the guest did not hear the host's 'done' on its stop port")
        th.join(a.timeout + 30)
        if "run" in result:  # what phase 5 wrote must be in the raw image now that QEMU is gone
            image_md5 = hashlib.md5(image.read_bytes()[:1 << 20]).hexdigest()

    t_total = time.monotonic() - t0
    run = result.get("run")
    if run is None:
        print(f"FAIL: the guest run failed: {result.get('error')!r}")
        return 1
    if not ready.is_set():
        problems.append("vusb-stub never became ready in the guest")
    if run.timed_out:
        problems.append(f"the guest timed out after {run.wall_secs:.0f}s")
    elif run.rc is None:
        problems.append("the guest script did not finish")
    elif run.rc != 0:
        problems.append(f"the guest script exited {run.rc}")
    for m in run.find("LAB-FAIL"):
        problems.append("guest: " + m.line[len("LAB-FAIL"):].strip())
    # Who drives the interfaces: nothing (or usb-storage/usbhid) before, usbfs (libusb's claim)
    # while exported, the original drivers again after vusb-stub stopped.
    # (Phase 5 loads usb-storage and usbhid; whether the kernel then binds them to the released
    # originals is its business, so "after" only insists on the drivers vusb-stub detached.)
    trees: dict = {}
    for m in run.find("LAB-USB"):
        parts = m.line.split()
        if len(parts) >= 3:
            trees.setdefault(m.phase, {})[parts[1]] = m.fields.get("drivers", "")
    info = next((m.fields for m in run.find("LAB-INFO") if "storage" in m.fields), {})
    orig = {info.get("storage"): "usb-storage", info.get("tablet"): "usbhid"}
    if ready.is_set() and None not in orig:
        for busid, drv in orig.items():
            seen = [trees.get(ph, {}).get(busid) for ph in ("before", "exported", "after")]
            summary.append(f"{busid} interface driver before/exported/after {who}: "
                           + "/".join(d if d else "-" for d in map(str, seen)))
            want = [drv if a.with_drivers else "", "usbfs", drv if a.with_drivers else None]
            if seen[0] != want[0] or seen[1] != want[1] or seen[2] == "usbfs" or (
                    want[2] is not None and seen[2] != want[2]):
                problems.append(f"{busid}: interface drivers {seen} before/exported/after "
                                f"vusb-stub, expected {want} (None: any but usbfs)")
    if a.attach and ready.is_set():
        att = {k: v for m in run.find("LAB-ATTACH") for k, v in m.fields.items()}
        if any(att.get(k) != "ok" for k in ("tablet", "storage", "unlink", "detached")):
            problems.append(f"phase 5 (guest vhci-hcd import) incomplete: {att}")
        elif att.get("md5") != image_md5:
            problems.append(f"the disk image's first MiB has md5 {image_md5}, the guest wrote "
                            f"{att.get('md5')}")
        else:
            summary.append("guest vhci-hcd import: usb-storage wrote and read back 1 MiB (md5 "
                           f"{image_md5[:12]}…, found in the raw image); usbhid bound the tablet, "
                           "its pending interrupt URB was unlinked, it bound again; both detached")
    exits = run.find("LAB-STUB-EXIT")
    if exits and exits[-1].fields.get("status") != "0":
        problems.append(f"vusb-stub exit status {exits[-1].fields.get('status')} after SIGTERM")
    stub_text = "\n".join(stub_lines)
    for bad in ("AddressSanitizer", "runtime error:", "Segmentation fault", " error "):
        if bad in stub_text:
            problems.append(f"vusb-stub log contains '{bad.strip()}'")
    if "imported" not in stub_text and ready.is_set():
        problems.append("vusb-stub never logged the import")

    for line in summary:
        print(line)
    print(f"timing: {who} ready after {t_ready:.1f}s, host checks {t_host:.1f}s, "
          f"guest {run.wall_secs:.1f}s, total {t_total:.1f}s")
    if problems:
        print("FAIL: " + "; ".join(problems))
        print("--- vusb-stub log (guest) ---")
        print(stub_text or "(nothing)")
        print(run.failure_report())
        return 1
    print(f"PASS: {who}'s libusb source exported QEMU's usb-storage and usb-tablet; "
          "usbip listed them and vusb-probe read the storage's INQUIRY"
          + ("; the guest's vhci-hcd, usb-storage and usbhid drove both through it"
             if a.attach else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
