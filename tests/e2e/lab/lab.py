#!/usr/bin/python3
"""vusb guest lab: boots Debian's stock kernel under QEMU with a busybox initramfs and runs one
shell script inside it. Python 3 standard library only.

The base initramfs (busybox, kernel modules, Debian's usbip/usbipd, usbtest-ioctl, /init) is built
once and cached by build_initramfs.sh; each run appends a small gzip'd cpio overlay holding
/lab/test.sh and /lab/env (Linux unpacks concatenated archives in order). The guest /init loads
the requested modules, brings up QEMU user networking (10.0.2.15/24, host = 10.0.2.2), runs the
script, prints marker lines on the serial console and powers off. The host side captures the
console into a log file, enforces a wall-clock timeout and parses the markers.

Use from a test:

    import lab
    run = lab.run_guest("usbtest-ioctl -w 10 0 1 2", name="demo", modules=["usbtest"])
    run.check()                      # raises LabError with the console tail on failure
    for r in run.usbtest(): ...

Command line (debugging):
    lab.py prepare                   fetch the kernel, build the initramfs, print their paths
    lab.py run SCRIPT [-m MOD ...]   boot once with SCRIPT as /lab/test.sh
    lab.py shell [-m MOD ...]        boot to an interactive busybox shell on this terminal

Environment: VUSB_LAB_CACHE (cache dir), VUSB_LAB_ACCEL (tcg | kvm, default tcg),
VUSB_LAB_QEMU (qemu binary), VUSB_LAB_LOGS (where console logs go), VUSB_LAB_VERBOSE=1 (echo the
console live), VUSB_BUILD (the CMake build dir holding bin/usbtest-ioctl and bin/vusb-stub).
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent
REPO_DIR = LAB_DIR.parents[2]

DEFAULT_MODULES = ("e1000",)
# run_guest() may run on several threads at once (one guest each; give each a distinct name, which
# names its console log and initrd). Only the shared cache build (prepare) needs serialising.
_PREPARE_LOCK = threading.Lock()
MARKER_RE = re.compile(r"((?:LAB|USBTEST)(?:-[A-Z]+)*)(?=\s|$)(.*)$")
FIELD_RE = re.compile(r"([A-Za-z_][\w.-]*)=(\S*)")


class LabError(Exception):
    """The lab could not run, or the guest run failed; the message says why (with the log tail)."""


def log(msg: str) -> None:
    print(f"lab: {msg}", flush=True)


def cache_dir() -> Path:
    return Path(os.environ.get("VUSB_LAB_CACHE") or Path.home() / ".cache" / "vusb-lab")


def build_dir() -> Path:
    """The CMake build directory (VUSB_BUILD, else <repo>/build)."""
    return Path(os.environ.get("VUSB_BUILD") or REPO_DIR / "build").resolve()


def logs_dir() -> Path:
    """Where console logs and per-run initrds go: VUSB_LAB_LOGS, else <build>/e2e-logs when the
    build directory exists, else <cache>/logs."""
    d = os.environ.get("VUSB_LAB_LOGS")
    if not d:
        d = build_dir() / "e2e-logs" if build_dir().is_dir() else cache_dir() / "logs"
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    return d


def control_token() -> str:
    """The [[control.token]] table that makes the lab's admin token valid in a vusbd config (put
    it after [control]'s keys). The token is made once per logs directory (mode 0600) and exported
    as $VUSBD_TOKEN_FILE, so every vusbctl the test runs shows it: since issue 16, changes over
    TCP need an admin token."""
    path = logs_dir() / "control-admin.token"
    if not path.exists():
        import secrets
        path.write_text(secrets.token_hex(24) + "\n")
        path.chmod(0o600)
    os.environ["VUSBD_TOKEN_FILE"] = str(path)
    return f'[[control.token]]\nname = "lab"\nfile = "{path}"\nrole = "admin"\n\n'


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_usbtest_ioctl() -> Path | None:
    for cand in (os.environ.get("USBTEST_IOCTL"), build_dir() / "bin" / "usbtest-ioctl"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    return None


def find_v4l2_capture() -> Path | None:
    for cand in (os.environ.get("V4L2_CAPTURE"), build_dir() / "bin" / "v4l2-capture"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    return None


def prepare(usbtest_ioctl: Path | None = None) -> tuple[Path, Path]:
    """Fetches the kernel and builds (or reuses) the base initramfs. Returns (vmlinuz, initramfs)."""
    cache = cache_dir()
    env = dict(os.environ, VUSB_LAB_CACHE=str(cache))
    env.pop("USBTEST_IOCTL", None)  # passed explicitly below, only when it exists
    env.pop("V4L2_CAPTURE", None)
    uti = usbtest_ioctl or find_usbtest_ioctl()
    cmd = [str(LAB_DIR / "build_initramfs.sh"), "--cache", str(cache)]
    if uti:
        cmd += ["--usbtest-ioctl", str(uti)]
    v4c = find_v4l2_capture()
    if v4c:
        cmd += ["--v4l2-capture", str(v4c)]
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise LabError(f"build_initramfs.sh failed ({p.returncode}):\n{p.stderr.strip()}")
    if p.stderr.strip():
        for line in p.stderr.strip().splitlines():
            log(line)
    initramfs = Path(p.stdout.strip().splitlines()[-1])
    kernel = cache / "kernel" / "vmlinuz"
    if not kernel.is_file() or not initramfs.is_file():
        raise LabError(f"missing {kernel} or {initramfs} after prepare")
    return kernel, initramfs


def ready() -> bool:
    """prepare() for a test's main(): False (after printing the FAIL line) when the lab cannot be
    set up."""
    try:
        prepare()
    except LabError as e:
        print(f"FAIL: lab not ready: {e}")
        return False
    return True


def newc_archive(files: dict[str, bytes | str], mode: int = 0o755) -> bytes:
    """A newc cpio archive (what the kernel's initramfs unpacker reads) of path -> content.
    Parent directories are added; paths are relative to the guest's root."""
    out = io.BytesIO()
    ino = [0x5000]

    def entry(name: str, data: bytes, m: int) -> None:
        ino[0] += 1
        nameb = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08x}" for v in (ino[0], m, 0, 0, 1 if m & 0o100000 else 2, 0, len(data),
                                 0, 0, 0, 0, len(nameb), 0))
        out.write(hdr.encode() + nameb)
        out.write(b"\0" * (-(110 + len(nameb)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))

    dirs: set[str] = set()
    for path in sorted(files):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                entry(d, b"", 0o040755)
    for path in sorted(files):
        data = files[path]
        if isinstance(data, str):
            data = data.encode()
        entry(path.strip("/"), data, 0o100000 | mode)
    entry("TRAILER!!!", b"", 0)
    return out.getvalue()


@dataclass
class Marker:
    kind: str          # e.g. "USBTEST", "LAB-RESULT"
    fields: dict       # key=value tokens of the line
    line: str          # the whole line, from the marker on
    phase: str = "main"  # the last "LAB-PHASE <name>" before this line


@dataclass
class GuestRun:
    name: str
    log_path: Path
    console: str
    wall_secs: float
    timed_out: bool
    qemu_rc: int | None
    markers: list = field(default_factory=list)

    def find(self, kind: str) -> list:
        return [m for m in self.markers if m.kind == kind]

    @property
    def booted(self) -> bool:
        return bool(self.find("LAB-BOOT"))

    @property
    def rc(self) -> int | None:
        """Exit status of the guest's test script (None when it never finished)."""
        r = self.find("LAB-RESULT")
        return int(r[-1].fields.get("rc", "-1")) if r else None

    @property
    def panicked(self) -> bool:
        """The guest kernel panicked (oops=panic: any oops ends the run)."""
        return "Kernel panic - not syncing" in self.console

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.rc == 0

    def usbtest(self, phase: str | None = None) -> list:
        """The USBTEST case=... lines as dicts: case, result, errno, secs (+ the rest), optionally
        only those printed in one phase (scripts mark phases with "echo LAB-PHASE <name>")."""
        res = []
        for m in self.find("USBTEST"):
            if "case" not in m.fields or (phase is not None and m.phase != phase):
                continue
            d = dict(m.fields)
            d["case"] = int(d["case"])
            d["errno"] = int(d.get("errno", "0") or 0)
            try:
                d["secs"] = float(d.get("secs", "0"))
            except ValueError:
                d["secs"] = 0.0
            res.append(d)
        return res

    def dmesg(self) -> str:
        m = re.search(r"LAB-DMESG-BEGIN\s*\n(.*?)LAB-DMESG-END", self.console, re.S)
        return m.group(1) if m else ""

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.console.splitlines()[-n:])

    def script_output(self) -> str:
        """What the test script printed (between LAB-READY and LAB-RESULT)."""
        m = re.search(r"LAB-READY[^\n]*\n(.*?)(?:LAB-RESULT|\Z)", self.console, re.S)
        return m.group(1) if m else ""

    def failure_report(self, n: int = 40) -> str:
        why = ("timed out" if self.timed_out else
               "never booted" if not self.booted else
               "kernel panicked" if self.panicked else
               "test script did not finish" if self.rc is None else
               f"test script exited {self.rc}")
        out = [f"guest run '{self.name}' {why} after {self.wall_secs:.1f}s "
               f"(console log: {self.log_path})"]
        dm = self.dmesg()
        if dm:
            out += ["--- script output (tail) ---",
                    "\n".join(self.script_output().splitlines()[-n:]),
                    "--- guest dmesg (tail) ---", "\n".join(dm.splitlines()[-n:])]
        else:
            out += ["--- console tail ---", self.tail(n)]
        return "\n".join(out)

    def check(self) -> "GuestRun":
        if not self.ok:
            raise LabError(self.failure_report())
        return self


def parse_markers(console: str) -> list:
    out = []
    phase = "main"
    for raw in console.splitlines():
        line = raw.replace("\r", "")
        m = MARKER_RE.search(line)
        if not m:
            continue
        kind, rest = m.group(1), m.group(2)
        if kind == "LAB-PHASE" and rest.split():
            phase = rest.split()[0]
        out.append(Marker(kind, dict(FIELD_RE.findall(rest)), (kind + rest).strip(), phase))
    return out


def qemu_command(kernel: Path, initrd: Path, *, accel: str, memory: int, devices, hostfwd,
                 append: str, interactive: bool = False) -> list:
    qemu = os.environ.get("VUSB_LAB_QEMU", "qemu-system-x86_64")
    netdev = "user,id=n0"
    for fwd in hostfwd:  # "tcp::HOSTPORT-:GUESTPORT"
        netdev += f",hostfwd={fwd}"
    cmd = [qemu, "-accel", accel, "-m", str(memory), "-smp", "1", "-nodefaults", "-no-reboot",
           "-nographic", "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
           "-netdev", netdev, "-device", "e1000,netdev=n0,romfile="]
    if interactive:
        cmd += ["-serial", "mon:stdio"]
    else:
        cmd += ["-serial", "stdio", "-monitor", "none"]
    for d in devices:
        cmd += ["-device", d] if not d.startswith("-") else shlex.split(d)
    return cmd


@dataclass
class GuestImage:
    """What boots one lab guest: the kernel, its initrd (base + the script's overlay), the RAM it
    needs and the kernel command line; log_path is where its console goes."""
    kernel: Path
    initrd: Path
    memory: int
    cmdline: str
    log_path: Path


def guest_image(script: str, *, name: str = "lab", modules=(), files: dict | None = None,
                env: dict | None = None, memory: int = 512, append: str = "") -> GuestImage:
    """The kernel and initrd for a guest that runs `script` (see run_guest), for tests that boot
    it some other way (libvirt)."""
    with _PREPARE_LOCK:
        kernel, base = prepare()
    safe = re.sub(r"[^\w.-]", "_", name)
    run_dir = logs_dir()
    log_path = run_dir / f"{safe}.console.log"
    initrd = run_dir / f"{safe}.initrd"

    lab_env = {"LAB_MODULES": " ".join(list(DEFAULT_MODULES) + [m for m in modules
                                                              if m not in DEFAULT_MODULES])}
    lab_env.update(env or {})
    env_text = "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in lab_env.items())
    overlay_files = {"lab/test.sh": script, "lab/env": env_text}
    for k, v in (files or {}).items():
        overlay_files[k.lstrip("/")] = v
    archive = newc_archive(overlay_files)
    overlay = gzip.compress(archive, compresslevel=6, mtime=0)
    # The initramfs unpacks into a tmpfs of half the guest's RAM; a file that does not fit stays
    # half-written and open ("Initramfs unpacking failed: write error", then ETXTBSY at exec).
    # Sanitizer builds of the programs copied in are large: give such guests room.
    unpacked_mb = (len(archive) + base.stat().st_size * 3) // (1 << 20)
    memory = max(memory, 2 * unpacked_mb + 160)
    with open(initrd, "wb") as f, open(base, "rb") as b:
        shutil.copyfileobj(b, f)
        f.write(overlay)

    # VUSB_LAB_APPEND: extra kernel parameters for every guest, when debugging (e.g.
    # "loglevel=7 softlockup_panic=1" to see a stuck guest's stack at once).
    append = (append + " " + os.environ.get("VUSB_LAB_APPEND", "")).strip()
    cmdline = ("console=ttyS0,115200 panic=-1 oops=panic loglevel=4 mitigations=off "
               "rdinit=/init " + append).strip()
    return GuestImage(kernel, initrd, memory, cmdline, log_path)


def run_guest(script: str, *, name: str = "lab", modules=(), timeout: float = 300,
              devices=(), hostfwd=(), files: dict | None = None, env: dict | None = None,
              memory: int = 512, accel: str | None = None, append: str = "",
              on_line=None, interactive: bool = False) -> GuestRun:
    """Boots one guest that runs `script` (busybox sh) as /lab/test.sh and powers off.

    modules: loaded by /init before the script (with their dependencies), after e1000.
    devices: extra QEMU -device arguments (or whole option strings starting with '-').
    hostfwd: QEMU user-net forwards, e.g. "tcp:127.0.0.1:5555-:3240".
    files:   extra guest path -> content for the overlay.
    env:     extra shell variables written to /lab/env (sourced by /init and available to script).
    on_line: callback(str) for each console line as it arrives (runs on a reader thread).
    Never raises for a failed guest: inspect the returned GuestRun (or call .check()).
    Thread-safe for concurrent guests with distinct names (each QEMU has its own user network).
    """
    accel = accel or os.environ.get("VUSB_LAB_ACCEL", "tcg")
    image = guest_image(script, name=name, modules=modules, files=files, env=env, memory=memory,
                        append=append)
    kernel, initrd, memory, cmdline = image.kernel, image.initrd, image.memory, image.cmdline
    log_path = image.log_path
    cmd = qemu_command(kernel, initrd, accel=accel, memory=memory, devices=devices,
                       hostfwd=hostfwd, append=cmdline, interactive=interactive)
    if interactive:
        return_code = subprocess.call(cmd)
        return GuestRun(name, log_path, "", 0.0, False, return_code)

    verbose = os.environ.get("VUSB_LAB_VERBOSE") == "1"
    log(f"booting guest '{name}' ({accel}, timeout {timeout:.0f}s), console: {log_path}")
    t0 = time.monotonic()
    chunks: list[str] = []
    with open(log_path, "w", encoding="utf-8", errors="replace") as logf:
        logf.write("# " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        logf.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)

        def reader() -> None:
            assert proc.stdout is not None
            for rawline in iter(proc.stdout.readline, b""):
                line = rawline.decode("utf-8", "replace")
                chunks.append(line)
                try:
                    logf.write(line)
                    logf.flush()
                except ValueError:  # the log was closed after a kill; keep draining
                    pass
                if verbose:
                    sys.stdout.write(f"[{name}] {line}")
                    sys.stdout.flush()
                if on_line:
                    try:
                        on_line(line.rstrip("\r\n"))
                    except Exception as e:  # a callback bug must not kill the reader
                        print(f"lab: on_line callback failed: {e}", file=sys.stderr)

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        timed_out = False
        deadline = t0 + timeout
        try:
            while True:
                try:
                    proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                # The guest said goodbye but did not go away: no reason to wait for the timeout.
                if any("LAB-POWEROFF" in c for c in chunks[-3:]):
                    deadline = min(deadline, now + 20)
                if now >= deadline:
                    timed_out = not any("LAB-POWEROFF" in c for c in chunks)
                    proc.terminate()
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    break
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        th.join(timeout=5)
        wall = time.monotonic() - t0
        if timed_out:
            logf.write(f"\n# lab: TIMEOUT after {wall:.1f}s, QEMU killed\n")
        elif proc.returncode != 0:
            logf.write(f"\n# lab: QEMU exit status {proc.returncode}\n")
    try:
        initrd.unlink()  # 5 MB, rebuilt from the cached base for every run
    except OSError:
        pass
    console = "".join(chunks).replace("\r", "")
    run = GuestRun(name, log_path, console, wall, timed_out, proc.returncode,
                   parse_markers(console))
    log(f"guest '{name}' finished in {wall:.1f}s: "
        + ("TIMEOUT" if timed_out else "KERNEL PANIC" if run.panicked else f"rc={run.rc}"))
    return run


# ---------------------------------------------------------------- usbtest helpers

# --- guests on threads, their markers on the host clock ---

class MarkerLog:
    """A guest's marker lines stamped with the host clock (seconds since t0) as they arrive: pass
    on_line to run_guest. `finished` is set when the script ends (LAB-RESULT, power-off or a
    kernel panic). Subclasses react to single markers in on_marker()."""

    STAMPED = ("LAB-BOOT", "LAB-READY", "LAB-INFO", "LAB-FAIL", "LAB-RESULT", "LAB-PHASE",
               "USBTEST case=")

    def __init__(self, t0: float):
        self.t0 = t0
        self.events: list = []  # (host secs since t0, marker line)
        self.finished = threading.Event()

    def on_line(self, line: str) -> None:
        m = MARKER_RE.search(line.replace("\r", ""))  # boot noise may precede a marker
        line = m.group(0).strip() if m else ""
        if not line:
            return
        if line.startswith(self.STAMPED):
            self.events.append((time.monotonic() - self.t0, line))
        self.on_marker(line)
        if line.startswith(("LAB-RESULT", "LAB-POWEROFF")) or "Kernel panic" in line:
            self.finish()

    def on_marker(self, line: str) -> None:
        pass

    def finish(self) -> None:
        if not self.finished.is_set():
            self.finished.set()
            self.on_finish()

    def on_finish(self) -> None:
        pass

    def first(self, prefix: str):
        """(host secs, line) of the first marker starting with prefix, or None."""
        for t, line in self.events:
            if line.startswith(prefix):
                return t, line
        return None

    def at(self, prefix: str) -> float | None:
        hit = self.first(prefix)
        return hit[0] if hit else None


class GuestThread(MarkerLog):
    """One guest run (run_guest) on its own thread, for tests that boot several at once."""

    def __init__(self, name: str, script: str, t0: float, *, modules=(), hostfwd=(),
                 files: dict | None = None, devices=()):
        super().__init__(t0)
        self.name, self.script, self.modules, self.hostfwd = name, script, modules, hostfwd
        self.devices = list(devices)
        self.files = files
        self.run: GuestRun | None = None
        self.error: str | None = None

    def start(self, timeout: float, memory: int) -> threading.Thread:
        def body() -> None:
            try:
                self.run = run_guest(self.script, name=self.name, modules=self.modules,
                                     hostfwd=self.hostfwd, files=self.files, timeout=timeout,
                                     memory=memory, on_line=self.on_line, devices=self.devices)
            except Exception as e:  # noqa: BLE001 - the caller reports it
                self.error = f"{type(e).__name__}: {e}"
            self.finish()
        th = threading.Thread(target=body, name=self.name)
        th.start()
        return th


class Barrier:
    """A host TCP port the guests connect to (busybox nc) when they are ready to start; each
    connection is held open until `n` guests are there (or `secs` passed since the first one came),
    then every waiting guest gets "go" and its connection is closed."""

    def __init__(self, n: int, secs: float):
        self.n, self.secs = n, secs
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.released_at: float | None = None
        self.arrivals = 0
        self._stop = False
        self._open = False  # release() was called: nobody waits any more
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self) -> None:
        waiting = []
        first = None
        while not self._stop:
            try:
                c, _ = self.sock.accept()
                waiting.append(c)
                self.arrivals += 1
                first = first or time.monotonic()
            except socket.timeout:
                pass
            except OSError:
                break
            late = first is not None and time.monotonic() - first > self.secs
            if waiting and (len(waiting) >= self.n or late or self._open
                            or self.released_at is not None):
                if self.released_at is None:
                    self.released_at = time.monotonic()
                for c in waiting:
                    try:
                        c.sendall(b"go\n")
                        c.close()
                    except OSError:
                        pass
                waiting = []
        for c in waiting:
            c.close()

    def release(self) -> None:
        """A guest will never arrive (its script ended early): let the others go now."""
        self._open = True

    def close(self) -> None:
        self._stop = True
        self._th.join(timeout=2)
        self.sock.close()


class Flag:
    """A host TCP port that answers every connection with its current value (a word) and closes:
    guests poll it with busybox nc to learn when the host wants them to move on."""

    def __init__(self, value: str = "wait"):
        self.value = value
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            try:
                c.sendall((self.value + "\n").encode())
                c.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self._th.join(timeout=2)
        self.sock.close()


# --- host processes the tests start (vusb-stub, ...) ---

def free_ports(n: int) -> list:
    """n distinct free loopback ports."""
    ports: list = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def vusbd_qemu_args(vusbctl: Path, api_port: int, vm: str, controller: str = "xhci") -> list:
    """What `vusbctl qemu-args --vm VM --controller C` prints for a VM's usb-redir devices, as
    run_guest's `devices` (a user starts QEMU with exactly this). Raises RuntimeError if vusbctl
    fails."""
    r = subprocess.run([str(vusbctl), "--api", f"127.0.0.1:{api_port}", "--json", "qemu-args",
                        "--vm", vm, "--controller", controller], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"vusbctl qemu-args --vm {vm}: {r.stdout.strip()}")
    argv = json.loads(r.stdout)["qemu"]
    log(f"vusbctl qemu-args --vm {vm} --controller {controller}: " + " ".join(argv))
    return [v if k == "-device" else f"{k} {v}" for k, v in zip(argv[::2], argv[1::2])]


def start_process(cmd, log_path: Path) -> subprocess.Popen:
    """Starts a host process (vusb-stub, vusbd, ...) with stdout and stderr in log_path."""
    log(f"starting {' '.join(str(c) for c in cmd)} (log: {log_path})")
    with open(log_path, "w") as logf:
        return subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT)


def wait_log_line(path: Path, text: str, proc: subprocess.Popen, secs: float) -> bool:
    """True once `text` appears in the log at `path`; False if proc exits or secs pass first."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            if text in path.read_text(errors="replace"):
                return True
        except OSError:
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def wait_listening(port: int, proc: subprocess.Popen, secs: float, host: str = "127.0.0.1") -> bool:
    """True once something accepts on host:port; False if proc exits or secs pass first."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def stop_process(proc: subprocess.Popen) -> int:
    """Stops a process we started: SIGTERM, then SIGKILL after 5 s. Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def tail(path: Path, n: int = 40) -> str:
    """The last n lines of a log file, or a note that there is none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def start_capture(ports, path: Path) -> subprocess.Popen:
    """dumpcap on loopback, only `ports`; returns the process once it is capturing."""
    flt = " or ".join(f"tcp port {p}" for p in ports)
    proc = subprocess.Popen(["dumpcap", "-q", "-i", "lo", "-f", flt, "-w", str(path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not path.exists():
        if proc.poll() is not None:
            raise LabError(f"dumpcap failed: {proc.stderr.read().decode(errors='replace')}")
        time.sleep(0.05)
    time.sleep(0.3)  # dumpcap creates the file just before it starts capturing
    return proc


def attach_usbtest(port: int, busid: str, remote: str = "10.0.2.2") -> str:
    """Guest script lines: list and attach `busid` from remote:port with Debian's usbip, wait for
    usbtest to bind it (exit 20 / 21 otherwise); $b is then usbtest's interface."""
    return f"""echo "LAB-PHASE attach"
usbip --tcp-port {port} list -r {remote} 2>&1
if ! usbip --tcp-port {port} attach -r {remote} -b {busid} 2>&1; then
  echo "LAB-FAIL usbip --tcp-port {port} attach -r {remote} -b {busid} failed"; exit 20
fi
b=$(lab_usbtest_bound 30) || {{ echo "LAB-FAIL usbtest did not bind the attached device"; lab_usb_tree; exit 21; }}
echo "LAB-INFO usbtest bound to $b"
usbip port 2>&1"""


def usbtest_phase(specs, timeout: float = 30) -> str:
    """Guest script tail: run the usbtest cases between start/end markers, then detach port 0."""
    return f"""echo "LAB-PHASE main"
echo "LAB-INFO usbtest-start"
{usbtest_cmd(specs, timeout=timeout)}
rc=$?
echo "LAB-INFO usbtest-end rc=$rc"
[ $rc -eq 3 ] && {{ echo "LAB-FAIL a usbtest case hung"; exit 23; }}
echo "LAB-PHASE detach"
usbip detach -p 0 2>&1 || echo "LAB-WARN usbip detach failed"
[ $rc -eq 0 ]"""


@dataclass(frozen=True)
class Case:
    """One usbtest case and its parameters (None = usbtest-ioctl's per-case default)."""
    num: int
    iterations: int | None = None
    length: int | None = None
    vary: int | None = None
    sglen: int | None = None

    def spec(self) -> str:
        f = [self.iterations, self.length, self.vary, self.sglen]
        while f and f[-1] is None:
            f.pop()
        return ":".join([str(self.num)] + ["" if v is None else str(v) for v in f])


# Parameters that prove each case under TCG without wasting minutes (see README.md). Lengths and
# varies respect usbtest's preconditions for a high-speed Gadget Zero (512-byte bulk maxpacket).
CASES = {
    0: Case(0, 1),
    1: Case(1, 50, 4096), 2: Case(2, 50, 4096),
    3: Case(3, 50, 4096, 37), 4: Case(4, 50, 4096, 512),
    5: Case(5, 50, 512, 0, 8), 6: Case(6, 50, 512, 0, 8),
    7: Case(7, 50, 2048, 512, 8), 8: Case(8, 50, 2048, 512, 8),
    9: Case(9, 50), 10: Case(10, 50, 512, 0, 16),
    11: Case(11, 50, 512), 12: Case(12, 50, 512),
    13: Case(13, 50),
    14: Case(14, 50, 256, 1), 21: Case(21, 50, 256, 1),
    15: Case(15, 16, 1024, 0, 4), 16: Case(16, 16, 1024, 0, 4),
    17: Case(17, 50, 512), 18: Case(18, 50, 512), 19: Case(19, 50, 512), 20: Case(20, 50, 512),
    24: Case(24, 50, 512, 0, 8),
    27: Case(27, 32, 16384, 0, 8), 28: Case(28, 32, 16384, 0, 8),
    29: Case(29, 50),
}


def usbtest_cmd(cases, *, wait: float = 15, timeout: float = 60, dev: str | None = None,
                keep_going: bool = False) -> str:
    """The guest shell command that runs `cases` (ints or Case) through usbtest-ioctl."""
    specs = [(CASES.get(c, Case(c)) if isinstance(c, int) else c).spec() for c in cases]
    opts = f"-w {wait:g} -t {timeout:g}" + (" -k" if keep_going else "")
    if dev:
        opts += f" -D {shlex.quote(dev)}"
    return f"usbtest-ioctl {opts} {' '.join(specs)}"


def usbtest_table(results, expected=None) -> str:
    """A human-readable table of usbtest results (from GuestRun.usbtest())."""
    lines = [f"{'case':>4}  {'result':<8} {'errno':>6}  {'secs':>8}  params"]
    seen = set()
    for r in results:
        seen.add(r["case"])
        errno = r["errno"]
        params = " ".join(f"{k}={r[k]}" for k in ("iter", "len", "vary", "sglen") if k in r)
        lines.append(f"{r['case']:>4}  {r.get('result', '?'):<8} {errno:>6}  "
                     f"{r['secs']:>8.3f}  {params}")
    for c in expected or ():
        if c not in seen:
            lines.append(f"{c:>4}  {'missing':<8} {'':>6}  {'':>8}")
    return "\n".join(lines)


def usbtest_failures(results, expected) -> list:
    """Case numbers from `expected` that did not report result=ok."""
    ok = {r["case"] for r in results if r.get("result") == "ok"}
    return [c for c in expected if c not in ok]


# ---------------------------------------------------------------- command line

def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="vusb guest lab")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare", help="fetch the kernel and build the base initramfs")
    for name in ("run", "shell"):
        p = sub.add_parser(name)
        if name == "run":
            p.add_argument("script", help="shell script to run in the guest ('-' = stdin)")
            p.add_argument("--timeout", type=float, default=300)
        p.add_argument("-m", "--module", action="append", default=[])
        p.add_argument("-d", "--device", action="append", default=[])
        p.add_argument("--hostfwd", action="append", default=[])
        p.add_argument("--name", default=name)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "prepare":
            k, i = prepare()
            print(k)
            print(i)
            return 0
        if a.cmd == "shell":
            run_guest("echo 'lab shell: poweroff -f to leave'; setsid cttyhack sh; true",
                      name=a.name, modules=a.module, devices=a.device, hostfwd=a.hostfwd,
                      interactive=True)
            return 0
        script = sys.stdin.read() if a.script == "-" else Path(a.script).read_text()
        os.environ.setdefault("VUSB_LAB_VERBOSE", "1")
        run = run_guest(script, name=a.name, modules=a.module, devices=a.device,
                        hostfwd=a.hostfwd, timeout=a.timeout)
        if not run.ok:
            print(run.failure_report(), file=sys.stderr)
            return 1
        return 0
    except LabError as e:
        print(f"lab: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_main())
