#!/usr/bin/python3
"""integration.hostile_peers — every listener of vusb-stub and vusbd under a hostile peer, while
a good VM keeps working.

Starts vusb-stub (plain USB/IP on loopback and TLS 1.3, two Gadget Zeros) and vusbd (vm1 — the
one attacked — and vm2 — the good one — sharing the stub's 1-1 as "gz"; the control API). A good
client, written here in plain Python from the USB/IP wire format, imports gz at vm2's port and
runs control and bulk IN URBs back to back the whole time, timing each. Then, one after the
other, for ATTACK_SECS each:

  conn-flood-*   10,000 connection attempts, each held open, against the stub's plain port, its
                 TLS port (no handshake ever sent), vm1's USB/IP port, the control API and vm1's
                 usbredir port (where QEMU's usb-redir would connect)
  zero-length    vm1 imports gz and floods zero-length bulk OUT URBs (reading the replies)
  never-reads    vm1 imports gz, submits URBs without end and never reads a reply
  slow-loris     300 connections to the control API and 300 to vm1's port, each sending one
                 byte of its request every second

Passes when, in every phase, the good client's URBs all succeed and none waits longer than
MAX_DELAY_MS (the stated bound: time on the shared loop another VM may cost it), every daemon
still answers, and neither daemon's resident memory grows by more than RSS_BOUND_MIB over its
baseline. Prints a table per phase: good URBs, their p50 / p99 / max latency, each daemon's RSS.

Usage: tests/hostile/test_hostile_peers.py [--build DIR] [--secs S]
"""
import argparse
import os
import resource
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e" / "lab"))
import lab  # noqa: E402

ATTACK_SECS = 4.0
CONNECTIONS = 10_000
MAX_DELAY_MS = 250        # the stated bound on a good VM's URB while another VM attacks
RSS_BOUND_MIB = 64        # the stated bound on each daemon's growth over its baseline

# ------------------------------------------------------------------ USB/IP, from the wire format

VERSION = 0x0111


def recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def import_device(port: int, busid: str, timeout: float = 10) -> tuple[socket.socket, int]:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(struct.pack(">HHI32s", VERSION, 0x8003, 0, busid.encode()))
    head = recv_exact(s, 8)
    _, code, status = struct.unpack(">HHI", head)
    if code != 0x0003 or status != 0:
        raise ConnectionError(f"import {busid} at {port}: status {status}")
    rec = recv_exact(s, 312)
    busnum, devnum = struct.unpack(">II", rec[288:296])
    return s, (busnum << 16) | devnum


def submit(seq: int, devid: int, direction: int, ep: int, length: int,
           setup: bytes = b"\0" * 8, data: bytes = b"") -> bytes:
    return struct.pack(">IIIIIIIIII8s", 1, seq, devid, direction, ep, 0, length, 0, 0, 0,
                       setup) + data


def read_ret(s: socket.socket, is_in: bool) -> tuple[int, int, int]:
    """(seqnum, status, actual) of a RET_SUBMIT, its IN data read and dropped (a RET_SUBMIT's
    direction field is 0: the caller knows what it asked for)."""
    h = recv_exact(s, 48)
    cmd, seq, _, _, _, status, actual = struct.unpack(">IIIIIiI", h[:28])
    if cmd != 3:
        raise ConnectionError(f"unexpected command {cmd:#x}")
    if is_in and actual > 0:
        recv_exact(s, actual)
    return seq, status, actual


GET_DEVICE = bytes([0x80, 6, 0, 1, 0, 0, 18, 0])
SET_CONFIG3 = bytes([0x00, 9, 3, 0, 0, 0, 0, 0])


class GoodClient(threading.Thread):
    """vm2's guest: control and bulk IN URBs back to back, each timed."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.lat: list = []          # (time, seconds) per URB
        self.errors: list = []
        self.stop = False

    def run(self) -> None:
        try:
            s, devid = import_device(self.port, "1-1")
            s.settimeout(10)
            seq = 1
            s.sendall(submit(seq, devid, 0, 0, 0, SET_CONFIG3))
            read_ret(s, False)
            while not self.stop:
                for direction, ep, length, setup in ((1, 0, 18, GET_DEVICE), (1, 1, 512, b"\0" * 8)):
                    seq += 1
                    t = time.monotonic()
                    s.sendall(submit(seq, devid, direction, ep, length, setup))
                    rseq, status, actual = read_ret(s, True)
                    self.lat.append((t, time.monotonic() - t))
                    if rseq != seq or status != 0 or actual != length:
                        self.errors.append(f"seq {seq}: status {status} actual {actual}")
            s.close()
        except Exception as e:  # noqa: BLE001 - reported
            self.errors.append(f"{type(e).__name__}: {e}")

    def window(self, t0: float, t1: float) -> list:
        return [d for t, d in self.lat if t0 <= t < t1]


# ------------------------------------------------------------------ attacks


def conn_flood(port: int, stop: threading.Event) -> dict:
    held, failed = [], 0
    for _ in range(CONNECTIONS):
        if stop.is_set():
            break
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect_ex(("127.0.0.1", port))
            held.append(s)
        except OSError:
            failed += 1
            s.close()
    # How many are still open once the daemon has had its say.
    time.sleep(1.0)
    alive = 0
    for s in held:
        try:  # read what the daemon sent (a usbredir hello, say) up to its end, if any
            while s.recv(65536, socket.MSG_DONTWAIT):
                pass
        except BlockingIOError:
            alive += 1  # nothing more to read and not closed: open
        except OSError:
            pass
    stop.wait()
    for s in held:
        s.close()
    return {"attempts": len(held) + failed, "still open": alive}


def zero_length(port: int, stop: threading.Event) -> dict:
    s, devid = import_device(port, "1-1")
    s.sendall(submit(1, devid, 0, 0, 0, SET_CONFIG3))
    read_ret(s, False)
    sent = done = refused = 0
    seq = 1
    s.setblocking(False)
    buf = b""
    while not stop.is_set():
        batch = b"".join(submit(seq + i, devid, 0, 1, 0) for i in range(1, 65))
        seq += 64
        try:
            s.sendall(batch)
            sent += 64
        except BlockingIOError:
            pass
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                buf += chunk
                while len(buf) >= 48:
                    status = struct.unpack(">i", buf[20:24])[0]
                    done += 1
                    refused += status != 0
                    buf = buf[48:]
        except BlockingIOError:
            pass
        time.sleep(0.001)
    s.close()
    return {"sent": sent, "answered": done, "refused": refused}


def never_reads(port: int, stop: threading.Event) -> dict:
    s, devid = import_device(port, "1-1")
    s.setblocking(False)
    sent, seq = 0, 1
    while not stop.is_set():
        try:
            s.sendall(b"".join(submit(seq + i, devid, 1, 0, 18, GET_DEVICE) for i in range(64)))
            sent += 64
            seq += 64
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            time.sleep(0.01)
    s.close()
    return {"submitted": sent}


def slow_loris(ports, stop: threading.Event) -> dict:
    socks = []
    for port in ports:
        for _ in range(300):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                pass
    request = b"GET /api/v1/vms HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 64
    sent = 0
    i = 0
    while not stop.wait(1.0):
        for s in list(socks):
            try:
                s.send(request[i % len(request):i % len(request) + 1])
                sent += 1
            except OSError:
                socks.remove(s)
        i += 1
    for s in socks:
        s.close()
    return {"connections": len(socks), "bytes": sent}


# ------------------------------------------------------------------ harness


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def api_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /api/v1/vms HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def tls_lists(port: int, pki: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(pki / "vm1.crt"), str(pki / "vm1.key"))
    try:
        # From another address than the flood's: a flood holds its own address's places (up
        # to the handshake deadline), not everyone's.
        with socket.create_connection(("127.0.0.1", port), timeout=5,
                                      source_address=("127.0.0.2", 0)) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(struct.pack(">HHI", VERSION, 0x8005, 0))
                return recv_exact(s, 8)[2:4] == b"\x00\x05"
    except (OSError, ssl.SSLError, ConnectionError):
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir")
    ap.add_argument("--secs", type=float, default=ATTACK_SECS, help="seconds per attack")
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4 * CONNECTIONS)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    bins = lab.build_dir() / "bin"
    global RSS_BOUND_MIB, MAX_DELAY_MS
    cache = lab.build_dir() / "CMakeCache.txt"
    sanitized = cache.exists() and any(
        line.startswith("VUSB_SANITIZE:STRING=") and line.strip() != "VUSB_SANITIZE:STRING="
        for line in cache.read_text(errors="replace").splitlines())
    if sanitized:
        # ASan keeps freed memory in quarantine (256 MiB), TSan shadows every byte, and both
        # run everything slower: the bounds are for the release build; a sanitizer build
        # checks the behaviour.
        RSS_BOUND_MIB, MAX_DELAY_MS = 1024, 1000
    logs = lab.logs_dir()
    pki = logs / "hostile.pki"
    subprocess.run(["rm", "-rf", str(pki)], check=True)
    pki.mkdir(parents=True)
    for args in (["ca"], ["issue", "--name", "stub", "--host", "127.0.0.1"],
                 ["issue", "--name", "vm1"]):
        subprocess.run([bins / "vusbctl", "cert", *args], cwd=pki, check=True,
                       stdout=subprocess.DEVNULL)
    ps, pt, p1, p2, pc, pr = lab.free_ports(6)
    stub_log, vusbd_log = logs / "hostile.stub.log", logs / "hostile.vusbd.log"
    procs = []
    problems: list = []
    rows: list = []
    good = None
    try:
        stub = lab.start_process([bins / "vusb-stub", "--listen", f"127.0.0.1:{ps}",
                                  "--listen", f"tls:127.0.0.1:{pt}", "--tls-ca", pki / "ca.crt",
                                  "--tls-cert", pki / "stub.crt", "--tls-key", pki / "stub.key",
                                  "--emulate", "gadget-zero=1-1", "--emulate", "gadget-zero=1-2"],
                                 stub_log)
        procs.append(stub)
        if not lab.wait_listening(ps, stub, 15):
            print(f"FAIL: vusb-stub did not start\n{lab.tail(stub_log)}")
            return 1
        toml = logs / "hostile.vusbd.toml"
        toml.write_text(f"""[control]
listen = "127.0.0.1:{pc}"

{lab.control_token()}[[vm]]
name = "vm1"
listen = "127.0.0.1:{p1}"
usbredir = [{{ device = "gz2", listen = "127.0.0.1:{pr}" }}]

[[vm]]
name = "vm2"
listen = "127.0.0.1:{p2}"

[[device]]
name = "gz"
source = "usbip://127.0.0.1:{ps}/1-1"
mode = "shared"
vms = ["vm1", "vm2"]

[[device]]
name = "gz2"
source = "usbip://127.0.0.1:{ps}/1-2"
vms = ["vm1"]
""")
        vusbd = lab.start_process([bins / "vusbd", "--config", toml, "--log-level", "warn"],
                                  vusbd_log)
        procs.append(vusbd)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not api_answers(pc):
            time.sleep(0.2)
        time.sleep(1.0)  # gz imported
        good = GoodClient(p2)
        good.start()
        time.sleep(1.0)

        base_rss = {"stub": rss_mib(stub.pid), "vusbd": rss_mib(vusbd.pid)}
        phases = [("baseline", None, ()),
                  ("conn-flood stub plain", conn_flood, (ps,)),
                  ("conn-flood stub tls", conn_flood, (pt,)),
                  ("conn-flood vm1 port", conn_flood, (p1,)),
                  ("conn-flood control api", conn_flood, (pc,)),
                  ("conn-flood usbredir port", conn_flood, (pr,)),
                  ("zero-length urbs", zero_length, (p1,)),
                  ("never reads", never_reads, (p1,)),
                  ("slow-loris", slow_loris, ([pc, p1],))]
        for name, attack, args in phases:
            stop = threading.Event()
            result: dict = {}

            def run(attack=attack, args=args, stop=stop, result=result):
                try:
                    result.update(attack(*args, stop))
                except Exception as e:  # noqa: BLE001 - reported
                    result["error"] = f"{type(e).__name__}: {e}"

            t0 = time.monotonic()
            th = threading.Thread(target=run, daemon=True) if attack else None
            if th:
                th.start()
            peak = dict(base_rss)
            while time.monotonic() - t0 < a.secs:
                time.sleep(0.25)
                peak = {"stub": max(peak["stub"], rss_mib(stub.pid)),
                        "vusbd": max(peak["vusbd"], rss_mib(vusbd.pid))}
            alive = {"api": api_answers(pc), "stub tls": tls_lists(pt, pki)}
            stop.set()
            if th:
                th.join(timeout=30)
            t1 = time.monotonic()
            lat = sorted(good.window(t0, t1))
            row = {"phase": name, "urbs": len(lat), "attack": result, "alive": alive,
                   "rss": peak}
            if lat:
                row.update(p50=lat[len(lat) // 2] * 1e3, p99=lat[int(len(lat) * 0.99)] * 1e3,
                           max=lat[-1] * 1e3)
            rows.append(row)
            if not lat:
                problems.append(f"{name}: the good VM completed no URB")
            elif row["max"] > MAX_DELAY_MS:
                problems.append(f"{name}: a good URB waited {row['max']:.0f} ms "
                                f"(bound {MAX_DELAY_MS} ms)")
            if not all(alive.values()):
                problems.append(f"{name}: not answering: {alive}")
            if "error" in result:
                problems.append(f"{name}: the attack itself failed: {result['error']}")
            for d in ("stub", "vusbd"):
                if peak[d] - base_rss[d] > RSS_BOUND_MIB:
                    problems.append(f"{name}: {d} grew {peak[d] - base_rss[d]:.0f} MiB "
                                    f"(bound {RSS_BOUND_MIB})")
            time.sleep(1.0)  # let the daemons drop the attack's connections
        good.stop = True
        good.join(timeout=10)
        if good.errors:
            problems.append(f"the good VM saw errors: {good.errors[:3]}")
    finally:
        if good:
            good.stop = True
        for p in reversed(procs):
            rc = lab.stop_process(p)
            if rc not in (0, None):
                problems.append(f"{p.args[0]} exited {rc}")

    print(f"{'phase':<24} {'good URBs':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'stub MiB':>8} {'vusbd MiB':>9}  attack")
    for r in rows:
        print(f"{r['phase']:<24} {r['urbs']:>9} {r.get('p50', 0):>7.2f} {r.get('p99', 0):>7.2f} "
              f"{r.get('max', 0):>7.1f} {r['rss']['stub']:>8.1f} {r['rss']['vusbd']:>9.1f}  "
              f"{r['attack']}")
    for f in (stub_log, vusbd_log):
        text = f.read_text(errors="replace")
        print(f"{f.name}: {text.count('refused')} 'refused' lines, {len(text.splitlines())} lines")
    if problems:
        print("FAIL:\n  " + "\n  ".join(problems))
        print(f"--- vusbd log ---\n{lab.tail(vusbd_log, 30)}\n--- stub log ---\n{lab.tail(stub_log, 30)}")
        return 1
    print(f"PASS: every listener held; good VM's URBs within {MAX_DELAY_MS} ms, "
          f"RSS within {RSS_BOUND_MIB} MiB of baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
