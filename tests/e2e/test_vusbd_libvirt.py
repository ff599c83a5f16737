#!/usr/bin/python3
"""e2e.vusbd_libvirt — a libvirt domain gets vusbd's device from the XML `vusbctl qemu-args
--libvirt` prints.

vusbd gives its emulated Gadget Zero to vm1 over usbredir (vusbd listens). The test takes the
<controller>/<redirdev> XML vusbd prints (`vusbctl qemu-args --vm vm1 --libvirt`), validates it
inside a whole domain with `virt-xml-validate`, and has Debian's libvirtd (9.0, started here if
it is not running, stopped again afterwards) start that domain as a TCG guest with the lab's
kernel and initrd (direct kernel boot, serial console to a file): libvirt runs QEMU 7.2 with
`-chardev socket,...` + `-device usb-redir` from the <redirdev>, QEMU connects to vusbd, and the
guest's xhci_hcd and usbtest find the Gadget Zero and pass usbtest cases 1 2 9 10. The domain is
transient (`virsh create`) and destroyed at the end.

Usage: tests/e2e/test_vusbd_libvirt.py [--build DIR] [--timeout S]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
import lab  # noqa: E402

NAME = "vusbd_libvirt"
CASES = [1, 2, 9, 10]
URI = "qemu:///system"


def virsh(*args, timeout=60) -> subprocess.CompletedProcess:
    r = subprocess.run(["virsh", "-c", URI, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout)
    lab.log(f"virsh {' '.join(args)} -> {r.returncode} {r.stdout.strip()[:300]}")
    return r


class Libvirtd:
    """libvirtd (and virtlogd) for the test: the running ones, or ones started here and stopped
    afterwards."""

    def __init__(self, work: Path):
        self.work = work
        self.started: list = []

    def __enter__(self):
        if virsh("version", timeout=20).returncode == 0:
            return self
        for daemon in ("virtlogd", "libvirtd"):
            pidfile = self.work / f"{daemon}.pid"
            subprocess.run([daemon, "-d", "-p", str(pidfile)], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.started.append(pidfile)
        for _ in range(100):
            if virsh("version", timeout=20).returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError("libvirtd did not start")

    def __exit__(self, *exc):
        for pidfile in reversed(self.started):
            try:
                os.kill(int(pidfile.read_text().strip()), 15)
            except (OSError, ValueError):
                pass


def domain_xml(name: str, image: lab.GuestImage, kernel: Path, initrd: Path, console: Path,
               usb_xml: str) -> str:
    devices = "\n".join("    " + line for line in usb_xml.strip().splitlines())
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{image.memory}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{image.cmdline}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
{devices}
    <memballoon model='none'/>
  </devices>
</domain>
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--timeout", type=float, default=180)
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    if not lab.ready():
        return 1
    for tool in ("virsh", "virt-xml-validate", "libvirtd"):
        if not shutil.which(tool):
            print(f"FAIL: {tool} is missing (scripts/deps.sh installs libvirt-daemon-system)")
            return 1
    bindir = lab.build_dir() / "bin"
    logs = lab.logs_dir()
    pc, p1, pr = lab.free_ports(3)
    toml = logs / f"{NAME}.toml"
    toml.write_text(f'[control]\nlisten = "127.0.0.1:{pc}"\n\n{lab.control_token()}'
                    f'[[vm]]\nname = "vm1"\nlisten = "127.0.0.1:{p1}"\n'
                    f'usbredir = [{{ device = "gz", listen = "127.0.0.1:{pr}" }}]\n\n'
                    '[[device]]\nname = "gz"\nsource = "emulated:gadget-zero"\nvms = ["vm1"]\n')
    log_path = logs / f"{NAME}.vusbd.log"
    problems: list = []
    # libvirt's QEMU runs as libvirt-qemu: the kernel, initrd and console live in a directory it
    # can reach (the lab's are under /root).
    work = Path(tempfile.mkdtemp(prefix="vusb-libvirt-"))
    work.chmod(0o755)
    dom = f"vusb-e2e-{os.getpid()}"
    vusbd = lab.start_process([bindir / "vusbd", "--config", toml], log_path)
    results = []
    try:
        if not lab.wait_log_line(log_path, "vusbd: ready", vusbd, 20):
            print(f"FAIL: vusbd did not get ready\n{lab.tail(log_path)}")
            return 1
        r = subprocess.run([str(bindir / "vusbctl"), "--api", f"127.0.0.1:{pc}", "qemu-args",
                            "--vm", "vm1", "--libvirt"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=20)
        if r.returncode != 0 or "<redirdev" not in r.stdout:
            print(f"FAIL: vusbctl qemu-args --libvirt: {r.stdout}")
            return 1
        usb_xml = r.stdout
        lab.log("vusbctl qemu-args --vm vm1 --libvirt:\n" + usb_xml)
        if f"service='{pr}'" not in usb_xml or "mode='connect'" not in usb_xml:
            problems.append(f"the <redirdev> does not name vusbd's port {pr} in connect mode")
        script = f"""echo "LAB-PHASE enumerate"
b=$(lab_usbtest_bound 90) || {{ echo "LAB-FAIL usbtest did not bind a device from usb-redir"; lab_usb_tree; exit 21; }}
echo "LAB-INFO usbtest bound to $b"
lab_usb_tree
echo "LAB-PHASE usbtest"
{lab.usbtest_cmd(CASES, timeout=60)}
"""
        image = lab.guest_image(script, name=f"{NAME}.vm1", modules=["xhci-pci", "usbtest"])
        kernel, initrd, console = work / "vmlinuz", work / "initrd", work / "console.log"
        shutil.copy(image.kernel, kernel)
        shutil.copy(image.initrd, initrd)
        for f in (kernel, initrd):
            f.chmod(0o644)
        xml = work / "domain.xml"
        xml.write_text(domain_xml(dom, image, kernel, initrd, console, usb_xml))
        v = subprocess.run(["virt-xml-validate", str(xml), "domain"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        lab.log(f"virt-xml-validate: {v.stdout.strip()}")
        if v.returncode != 0:
            problems.append(f"virt-xml-validate refused the domain: {v.stdout.strip()}")
        with Libvirtd(work):
            t0 = time.monotonic()
            c = virsh("create", str(xml))
            if c.returncode != 0:
                problems.append(f"virsh create failed: {c.stdout.strip()}")
            else:
                text = ""
                while time.monotonic() - t0 < a.timeout:
                    text = console.read_text(errors="replace") if console.exists() else ""
                    if "LAB-POWEROFF" in text or "Kernel panic" in text:
                        break
                    time.sleep(0.5)
                else:
                    problems.append(f"the domain did not finish within {a.timeout:.0f} s")
                wall = time.monotonic() - t0
                virsh("destroy", dom)
                text = text.replace("\r", "")
                (logs / f"{NAME}.vm1.console.log").write_text(text)
                run = lab.GuestRun(f"{NAME}.vm1", logs / f"{NAME}.vm1.console.log", text, wall,
                                   False, 0, lab.parse_markers(text))
                results = run.usbtest()
                print(lab.usbtest_table(results, CASES))
                for m in run.find("LAB-FAIL"):
                    problems.append("guest: " + m.line[len("LAB-FAIL"):].strip())
                failed = lab.usbtest_failures(results, CASES)
                if failed:
                    problems.append(f"usbtest cases failed: {failed}")
                if not run.booted:
                    problems.append("the domain's guest did not boot")
                elif run.rc != 0:
                    problems.append(f"guest script failed (rc={run.rc})")
                if problems:
                    print(f"--- console tail ---\n{run.tail(40)}")
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        problems.append(str(e))
    finally:
        subprocess.run(["virsh", "-c", URI, "destroy", dom], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        rc = lab.stop_process(vusbd)
        shutil.rmtree(work, ignore_errors=True)
    if rc != 0:
        problems.append(f"vusbd exited {rc} on SIGTERM")
    if "announced 0525:a4a0" not in log_path.read_text(errors="replace"):
        problems.append("vusbd never announced the device to libvirt's QEMU")
    if problems:
        print("FAIL: " + "; ".join(problems))
        print(f"--- vusbd log tail ---\n{lab.tail(log_path, 30)}")
        return 1
    print(f"PASS: a libvirt domain with vusbd's <redirdev> XML (virt-xml-validate ok) ran usbtest "
          f"{' '.join(map(str, CASES))} on vusbd's Gadget Zero")
    return 0


if __name__ == "__main__":
    sys.exit(main())
