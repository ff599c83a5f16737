#!/usr/bin/python3
"""e2e.vusbctl — vusbd's control API and vusbctl, with Debian's usbip as each VM's client.

Host only (no guest): vusb-stub exports a Gadget Zero; vusbd starts with two VMs and no devices.
  1. `vusbctl attach --vm vm1 -r 127.0.0.1 --tcp-port P -b 1-1 -d gz` imports the stub's device and
     gives it to vm1: `usbip list -r` on vm1's port shows 1-1 0525:a4a0, vm2's port shows nothing.
  2. `vusbctl attach --vm vm2 -d gz -p 3`: vm2 lists it as 1-3 (its own address space); vusb-probe
     imports it there and reads its descriptors: `vusbctl --json stats` shows vm2's cache hits.
  3. `vusbctl share -d gz --mode exclusive`, `vusbctl detach --vm vm1 -d gz`: vm1's list is empty.
  4. `vusbctl monitor` (WebSocket) saw device-added, connected, attached, mode and detached events.
  4b. The stub exports a second Gadget Zero (1-2). `vusbctl attach --vm vm1 -r 127.0.0.1 -b '*'
     -d stub` follows the whole stub: 1-2 reaches vm1 as stub-1-2 (1-1 stays gz's: one importer
     per device); `vusbctl remove -d stub` takes it away again.
  5. Refusals: unknown VM / device, a taken port, a bad mode → exit 1 with vusbd's reason; vusbd
     down → exit 3. Hostile HTTP (garbage, an oversized body, bad JSON, a name that is not UTF-8,
     80 idle connections) is answered 400/413/404 or refused and logged; what a web page could
     send (a foreign Origin, a rebound Host, a form-encoded POST) gets 403; the API keeps
     answering.
  6. The config file was written back; vusbd is stopped and started again from it: vm2 lists gz as
     1-3, vm1 still has nothing, the mode is still exclusive.
  7. GET / serves the dashboard.
  8. The control API on a UNIX socket (`vusbd --control unix:PATH`): `vusbctl --socket PATH list`
     and `VUSBD_API=unix:PATH vusbctl list` work for root; the same command as uid 65534 (setpriv)
     exits 1 with vusbd's reason (its uid is neither the daemon's nor root), and vusbd logs the
     refusal.

Usage: tests/e2e/test_vusbctl.py [--build DIR] [--stub PATH] [--vusbd PATH] [--vusbctl PATH]
Logs: <build>/e2e-logs/vusbctl.{stub,vusbd,vusbd2,monitor}.log, vusbctl.toml
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
import lab  # noqa: E402

VIDPID = "0525:a4a0"


def usbip_list(port: int) -> str:
    r = subprocess.run(["usbip", "--tcp-port", str(port), "list", "-r", "127.0.0.1"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    return r.stdout


def listed(port: int, busid: str) -> bool:
    text = usbip_list(port)
    return any(l.strip().startswith(f"{busid}:") and f"({VIDPID})" in l for l in text.splitlines())


def wait_for(pred, secs: float) -> bool:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


def raw_http(port: int, data: bytes, read_secs: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_secs) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # vusbd may hang up before taking all of an oversized body
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except OSError:
            pass
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--stub")
    ap.add_argument("--vusbd")
    ap.add_argument("--vusbctl")
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    bindir = lab.build_dir() / "bin"
    stub = Path(a.stub or bindir / "vusb-stub")
    vusbd = Path(a.vusbd or bindir / "vusbd")
    vusbctl = Path(a.vusbctl or bindir / "vusbctl")
    probe = bindir / "vusb-probe"
    logs = lab.logs_dir()
    ps, p1, p2, pc = lab.free_ports(4)
    toml = logs / "vusbctl.toml"
    toml.write_text(f'[control]\nlisten = "127.0.0.1:{pc}"\n\n{lab.control_token()}'
                    f'[[vm]]\nname = "vm1"\nlisten = "127.0.0.1:{p1}"\n\n'
                    f'[[vm]]\nname = "vm2"\nlisten = "127.0.0.1:{p2}"\n')
    problems: list = []
    procs: list = []
    t0 = time.monotonic()

    def check(ok: bool, what: str) -> bool:
        lab.log(("ok   " if ok else "FAIL ") + what)
        if not ok:
            problems.append(what)
        return ok

    def ctl(*args, api_port=pc):
        r = subprocess.run([str(vusbctl), "--api", f"127.0.0.1:{api_port}", *args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        lab.log(f"vusbctl {' '.join(args)} -> {r.returncode} {r.stderr.strip()}")
        return r

    def start_vusbd(log_name: str) -> subprocess.Popen | None:
        proc = lab.start_process([vusbd, "--config", toml], logs / log_name)
        procs.append(proc)
        if not lab.wait_listening(pc, proc, 15):
            problems.append(f"vusbd did not serve its control API:\n{lab.tail(logs / log_name)}")
            return None
        return proc

    vusbd_rcs = []
    try:
        stub_proc = lab.start_process([stub, "--listen", f"127.0.0.1:{ps}", "--emulate", "gadget-zero=1-1",
                           "--emulate", "gadget-zero=1-2"],
                          logs / "vusbctl.stub.log")
        procs.append(stub_proc)
        if not lab.wait_listening(ps, stub_proc, 15):
            print(f"FAIL: vusb-stub did not listen\n{lab.tail(logs / 'vusbctl.stub.log')}")
            return 1
        vd = start_vusbd("vusbctl.vusbd.log")
        if vd is None:
            raise RuntimeError("vusbd")
        mon_log = logs / "vusbctl.monitor.log"
        monitor = lab.start_process([vusbctl, "--api", f"127.0.0.1:{pc}", "--json", "monitor",
                         "--timeout", "60"], mon_log)
        procs.append(monitor)
        time.sleep(0.5)  # the subscription is up before the first change

        # 1. import and give to vm1
        r = ctl("attach", "--vm", "vm1", "-r", "127.0.0.1", "--tcp-port", str(ps), "-b", "1-1",
                "-d", "gz")
        check(r.returncode == 0 and "bus id 1-1" in r.stdout, "attach -r/-b gives gz to vm1 as 1-1")
        check(wait_for(lambda: listed(p1, "1-1"), 5), "usbip list -r on vm1's port shows 1-1")
        check("1-1" not in usbip_list(p2), "vm2's port lists nothing")
        # 2. vm2 at a port of its choosing
        r = ctl("--json", "attach", "--vm", "vm2", "-d", "gz", "-p", "3")
        check(r.returncode == 0 and json.loads(r.stdout or "{}").get("busid") == "1-3",
              "attach --vm vm2 -p 3 gives bus id 1-3")
        check(listed(p2, "1-3"), "usbip list -r on vm2's port shows 1-3")
        # vm2 imports it (vusb-probe is a USB/IP client like the VM's vhci): an 'imported' and a
        # 'released' event, and vm2's cache hits in the stats.
        r = subprocess.run([str(probe), "descriptors", f"127.0.0.1:{p2}", "1-3"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
        check(r.returncode == 0 and "a4a0" in r.stdout.lower(), "vm2 imports 1-3 (vusb-probe)")
        r = ctl("--json", "stats")
        st = json.loads(r.stdout or "{}").get("vms", {}).get("vm2", {}).get("gz", {})
        check(r.returncode == 0 and st.get("cache_hits", 0) > 0,
              f"stats: vm2's descriptor reads were cache hits ({st.get('cache_hits')})")
        r = ctl("--json", "list")
        devices = json.loads(r.stdout or "[]") if r.returncode == 0 else []
        check(len(devices) == 1 and devices[0].get("connected") is True and
              sorted(v["vm"] for v in devices[0].get("vms", [])) == ["vm1", "vm2"],
              "list --json: gz connected, given to vm1 and vm2")
        # usb-redir for vm2's gz and back: vm2's USB/IP port stops listing it, `list --vms` shows
        # the channel, qemu-args names it; --remove puts it back on the port.
        (rp,) = lab.free_ports(1)
        r = ctl("usbredir", "--vm", "vm2", "-d", "gz", "--listen", f"127.0.0.1:{rp}")
        check(r.returncode == 0 and f"127.0.0.1:{rp}" in r.stdout,
              "usbredir --vm vm2 -d gz --listen gives gz to vm2's QEMU usb-redir")
        check(wait_for(lambda: "1-3" not in usbip_list(p2), 5),
              "vm2's USB/IP port no longer lists gz")
        r = ctl("list", "--vms")
        check(r.returncode == 0 and f"usb-redir: gz (vusbd listens on 127.0.0.1:{rp}" in r.stdout,
              "list --vms shows vm2's usb-redir channel")
        r = ctl("qemu-args", "--vm", "vm2")
        check(r.returncode == 0 and f"port={rp}" in r.stdout and "usb-redir" in r.stdout,
              "qemu-args --vm vm2 names the channel")
        check(ctl("usbredir", "--vm", "vm2", "-d", "gz", "--listen", f"127.0.0.1:{rp}").returncode
              != 0, "a second usbredir channel for gz is refused")
        check(ctl("usbredir", "--vm", "vm2", "-d", "gz", "--remove").returncode == 0,
              "usbredir --remove")
        check(wait_for(lambda: listed(p2, "1-3"), 5), "gz is back on vm2's USB/IP port as 1-3")
        # 3. mode and detach
        check(ctl("share", "-d", "gz", "--mode", "exclusive").returncode == 0, "share --mode exclusive")
        check(ctl("detach", "--vm", "vm1", "-d", "gz").returncode == 0, "detach --vm vm1")
        check(wait_for(lambda: "1-1" not in usbip_list(p1), 5), "vm1's port lists nothing after detach")
        check(listed(p2, "1-3"), "vm2 still lists 1-3")
        # 5. refusals through vusbctl
        for args, what in [(("attach", "--vm", "vm9", "-d", "gz"), "no vm 'vm9'"),
                           (("attach", "--vm", "vm1", "-d", "nope"), "no device 'nope'"),
                           (("share", "-d", "gz", "--mode", "sometimes"), "mode must be"),
                           (("detach", "--vm", "vm1", "-d", "gz"), "not given to vm")]:
            r = ctl(*args)
            check(r.returncode == 1 and what in r.stderr, f"vusbctl {' '.join(args)}: exit 1, '{what}'")
        r = ctl("attach", "--vm", "vm1", "-d", "gz", "-p", "1")
        check(r.returncode == 0, "attach vm1 again at 1-1")
        r = ctl("--json", "attach", "--vm", "vm1", "-r", "127.0.0.1", "--tcp-port", str(ps),
                "-b", "1-9", "-d", "other", "-p", "1")
        check(r.returncode == 1 and "port 1" in r.stderr, "a taken port is refused (409)")
        r = ctl("--json", "list")
        check(r.returncode == 0 and [d["name"] for d in json.loads(r.stdout)] == ["gz"],
              "the device the refused attach added is gone again")
        check(ctl("detach", "--vm", "vm1", "-d", "gz").returncode == 0, "detach vm1 again")
        # A whole server: -b '*' follows what the stub exports. Its 1-1 is gz already (one
        # importer per device), so only 1-2 becomes stub-1-2, at vm1's first free port, 1-1.
        r = ctl("attach", "--vm", "vm1", "-r", "127.0.0.1", "--tcp-port", str(ps), "-b", "*",
                "-d", "stub")
        check(r.returncode == 0, "attach -b '*' follows the whole stub")
        check(wait_for(lambda: listed(p1, "1-1"), 8), "vm1 lists the stub's 1-2 as its 1-1")
        r = ctl("--json", "list")
        names = [d["name"] for d in json.loads(r.stdout or "[]")]
        check("stub-1-2" in names and "stub-1-1" not in names,
              f"the discovered device is stub-1-2; 1-1 stays gz's ({names})")
        check(ctl("remove", "-d", "stub").returncode == 0, "remove -d stub (and what it found)")
        check(wait_for(lambda: "1-1" not in usbip_list(p1), 5), "vm1 lists nothing again")
        free = lab.free_port()
        r = ctl("stats", api_port=free)
        check(r.returncode == 3 and "Connection refused" in r.stderr, "vusbd unreachable: exit 3")
        # hostile HTTP
        resp = raw_http(pc, b"GARBAGE\r\n\r\n")
        check(resp.startswith(b"HTTP/1.1 400"), f"garbage request: 400 ({resp[:40]!r})")
        big = b"x" * (200 * 1024)
        resp = raw_http(pc, b"POST /api/v1/devices HTTP/1.1\r\nHost: x\r\nContent-Length: "
                        + str(len(big)).encode() + b"\r\n\r\n" + big)
        check(resp.startswith(b"HTTP/1.1 413"), f"200 KiB body: 413 ({resp[:40]!r})")
        # Changes need the admin token (issue 16): without it, refused before the body is looked at.
        resp = raw_http(pc, b"POST /api/v1/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 3\r\n"
                        b"Connection: close\r\n\r\n{\"d")
        check(resp.startswith(b"HTTP/1.1 403") and b"admin token" in resp,
              f"a change without a token: 403 ({resp[:40]!r})")
        token = Path(os.environ["VUSBD_TOKEN_FILE"]).read_text().strip().encode()
        resp = raw_http(pc, b"POST /api/v1/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Authorization: Bearer " + token + b"\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 3\r\n"
                        b"Connection: close\r\n\r\n{\"d")
        check(resp.startswith(b"HTTP/1.1 400") and b"not JSON" in resp, "bad JSON: 400")
        resp = raw_http(pc, b"GET /api/v1/devices HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Authorization: Bearer wrong-token-0123456789\r\nConnection: close\r\n\r\n")
        check(resp.startswith(b"HTTP/1.1 401") and b"unknown token" in resp,
              f"a wrong token: 401 ({resp[:40]!r})")
        # What a web page in a browser on this host could send (CSRF, DNS rebinding): refused.
        body = b'{"name":"evil","source":"emulated:gadget-zero","vms":["vm1"]}'
        for what, head in [
                ("a foreign Origin", b"Host: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
                                     b"Content-Type: application/json\r\n"),
                ("a rebound Host", b"Host: evil.example:3250\r\nContent-Type: application/json\r\n"),
                ("a form-encoded POST", b"Host: 127.0.0.1\r\nContent-Type: text/plain\r\n")]:
            resp = raw_http(pc, b"POST /api/v1/devices HTTP/1.1\r\n" + head + b"Content-Length: "
                            + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            check(resp.startswith(b"HTTP/1.1 403"), f"{what}: 403 ({resp[:40]!r})")
        resp = raw_http(pc, b"GET /api/v1/devices/\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Connection: close\r\n\r\n")
        check(resp.startswith(b"HTTP/1.1 404"), f"a name that is not UTF-8: 404 ({resp[:40]!r})")
        r = ctl("--json", "list")
        check(r.returncode == 0 and "evil" not in r.stdout, "nothing was added by those requests")
        idle = []
        for _ in range(80):
            try:
                idle.append(socket.create_connection(("127.0.0.1", pc), timeout=2))
            except OSError:
                break
        time.sleep(0.5)
        for s in idle:
            s.close()
        time.sleep(0.3)
        r = ctl("--json", "stats")
        check(r.returncode == 0 and "vm2" in json.loads(r.stdout or "{}").get("vms", {}),
              "after 80 idle connections the API still answers")
        vd_log = (logs / "vusbctl.vusbd.log").read_text(errors="replace")
        check("connections open;" in vd_log, "the connection limit is logged")
        check("bad request" in vd_log, "bad requests are logged")
        # 7. dashboard
        with urllib.request.urlopen(f"http://127.0.0.1:{pc}/", timeout=10) as page:
            check(b"<title>vusbd</title>" in page.read(), "GET / serves the dashboard")
        # 4. events
        time.sleep(0.5)
        monitor.terminate()
        monitor.wait(timeout=10)
        events = []
        for line in mon_log.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
        kinds = [e.get("event") for e in events]
        for k in ("device-added", "connected", "attached", "imported", "released", "mode",
                  "detached", "discovered", "device-removed"):
            check(k in kinds, f"monitor saw a '{k}' event")
        # 6. restart from the written-back config
        vusbd_rcs.append(lab.stop_process(vd))
        text = toml.read_text()
        check('mode = "exclusive"' in text and '"vm2" = 3' in text, "config written back")
        vd = start_vusbd("vusbctl.vusbd2.log")
        if vd is not None:
            check(wait_for(lambda: listed(p2, "1-3"), 10), "after restart vm2 lists gz as 1-3")
            check("1-1" not in usbip_list(p1), "after restart vm1 lists nothing")
            r = ctl("--json", "list")
            devs = json.loads(r.stdout or "[]") if r.returncode == 0 else []
            check(len(devs) == 1 and devs[0].get("mode") == "exclusive",
                  "after restart gz is still exclusive")
            vusbd_rcs.append(lab.stop_process(vd))
        # 8. the control API on a UNIX socket, with the peer's uid checked
        sock_dir = Path(f"/tmp/vusb-e2e-vusbctl-{os.getpid()}")
        sock_dir.mkdir(mode=0o755, exist_ok=True)
        sock_dir.chmod(0o755)
        sock = sock_dir / "control.sock"
        log3 = logs / "vusbctl.vusbd3.log"
        vd = lab.start_process([vusbd, "--config", toml, "--control", f"unix:{sock}"], log3)
        procs.append(vd)
        if check(wait_for(lambda: sock.is_socket() or vd.poll() is not None, 15) and sock.is_socket(),
                 "vusbd serves its control API on a UNIX socket"):
            r = subprocess.run([str(vusbctl), "--socket", str(sock), "--json", "list"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
            devs = json.loads(r.stdout or "[]") if r.returncode == 0 else []
            check(r.returncode == 0 and len(devs) == 1 and devs[0].get("name") == "gz",
                  f"vusbctl --socket lists gz as root (rc {r.returncode}: {r.stderr.strip()})")
            env = dict(os.environ, VUSBD_API=f"unix:{sock}")
            r = subprocess.run([str(vusbctl), "list"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=30)
            check(r.returncode == 0 and "gz" in r.stdout,
                  f"VUSBD_API=unix:PATH vusbctl list works (rc {r.returncode})")
            env = dict(os.environ, VUSB_SOCKET=str(sock))
            env.pop("VUSBD_API", None)
            r = subprocess.run([str(vusbctl), "list"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=30)
            check(r.returncode == 0 and "gz" in r.stdout,
                  f"VUSB_SOCKET=PATH vusbctl list works (rc {r.returncode})")
            # Another user: a copy of vusbctl it may run, under uid/gid 65534 (nobody).
            ctl_copy = sock_dir / "vusbctl"
            ctl_copy.write_bytes(vusbctl.read_bytes())
            ctl_copy.chmod(0o755)
            env = dict(os.environ)
            env.pop("VUSBD_TOKEN_FILE", None)  # root's; the socket needs no token anyway
            r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                str(ctl_copy), "--socket", str(sock), "list"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
            lab.log(f"vusbctl as uid 65534 -> {r.returncode} {r.stderr.strip()}")
            check(r.returncode == 1 and "uid 65534" in r.stderr and "gz" not in r.stdout,
                  "uid 65534 is refused on the control socket with vusbd's reason")
            check(wait_for(lambda: "refused unix uid 65534" in log3.read_text(errors="replace"), 5),
                  "vusbd logged the refused uid")
            # 9. a stub on a UNIX socket: vusbd imports from it (usbip+unix://) and vm1 uses it
            stub_sock = sock_dir / "stub.sock"
            stub2 = lab.start_process([stub, "--listen", f"unix:{stub_sock}",
                                       "--emulate", "gadget-zero=1-1"], logs / "vusbctl.stub2.log")
            procs.append(stub2)
            if check(wait_for(lambda: stub_sock.is_socket() or stub2.poll() is not None, 15)
                     and stub_sock.is_socket(), "vusb-stub serves on a UNIX socket"):
                r = subprocess.run([str(vusbctl), "--socket", str(sock), "--json", "attach",
                                    "--vm", "vm1", "-r", f"unix:{stub_sock}", "-b", "1-1"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   timeout=30)
                busid = json.loads(r.stdout or "{}").get("busid", "") if r.returncode == 0 else ""
                check(r.returncode == 0 and busid != "",
                      f"attach -r unix:PATH gives vm1 the stub's 1-1 as {busid} "
                      f"(rc {r.returncode}: {r.stderr.strip()})")
                r = subprocess.run([str(vusbctl), "--socket", str(sock), "--json", "list"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   timeout=30)
                devs = {d["name"]: d for d in json.loads(r.stdout or "[]")} if r.returncode == 0 else {}
                dev = devs.get("stub-1-1", {})
                check(dev.get("source") == f"usbip+unix://{stub_sock}/1-1" and
                      wait_for(lambda: listed(p1, busid), 10),
                      f"the device is usbip+unix://{stub_sock}/1-1 and vm1's port lists it")
                r = subprocess.run([str(probe), "descriptors", f"127.0.0.1:{p1}", busid],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   timeout=30)
                check(r.returncode == 0 and "a4a0" in r.stdout.lower(),
                      "vm1 imports it (vusb-probe): descriptors read through the UNIX-socket import")
        vusbd_rcs.append(lab.stop_process(vd))
        check(not sock.exists(), "vusbd removed its control socket on exit")
        shutil.rmtree(sock_dir, ignore_errors=True)
    except RuntimeError:
        pass
    finally:
        for p in procs:
            lab.stop_process(p)
    for i, rc in enumerate(vusbd_rcs):
        check(rc == 0, f"vusbd run {i + 1} exited {rc} on SIGTERM (expected 0)")
    for name in ("vusbctl.vusbd.log", "vusbctl.vusbd2.log", "vusbctl.vusbd3.log"):
        p = logs / name
        if p.exists() and ("AddressSanitizer" in p.read_text(errors="replace")
                           or "runtime error:" in p.read_text(errors="replace")):
            problems.append(f"{name}: sanitizer report")
    print(f"timing: {time.monotonic() - t0:.1f}s")
    if problems:
        print("FAIL: " + "; ".join(problems))
        print(f"--- vusbd log tail ---\n{lab.tail(logs / 'vusbctl.vusbd.log', 60)}")
        return 1
    print("PASS: vusbctl attach/detach/share/list/stats/monitor, hostile HTTP, restart restore, "
          "UNIX control socket with peer uid check, import from a stub on a UNIX socket")
    return 0


if __name__ == "__main__":
    sys.exit(main())
