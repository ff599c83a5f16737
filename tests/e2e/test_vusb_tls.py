#!/usr/bin/python3
"""e2e.vusb_tls — TLS 1.3 on every vusb link, stock clients through stunnel, access lists, and
one identity per VM.

Host side: `vusbctl cert` makes a site CA and certificates (vusb-stub, vusbd, vm1, vm2, an
expired one) and a second CA with a certificate of its own. vusb-stub listens only on
tls:127.0.0.1:PT with two Gadget Zeros and access lists: 1-1 for cn:vm1, 1-2 for cn:vusbd.

1. Refusals before any USB/IP byte: `openssl s_client` sends OP_REQ_DEVLIST to the TLS port
   without a client certificate, with the other CA's certificate and with an expired one; none
   gets a byte of USB/IP back, and the stub logs each refused handshake. With vm1's certificate
   the same request gets the device list (the positive control: the check is not vacuous).
2. vusbd imports 1-2 from the stub over mutual TLS (usbips://, its [tls]) and serves two VMs on
   TLS ports: vm1's admits only cn:vm1, vm2's only cn:vm2.
3. (below) Two guests boot at once, each running Debian's stunnel4 in front of Debian's stock usbip
   (which speaks plain TCP only) — the path a user takes with a stock client:
   - vm1: through a tunnel as vm2, `usbip attach` of the stub's 1-1 is refused with USB/IP's
     error status (the access list); as vm1 it attaches and usbtest 1, 2, 9, 10 pass; then
     vm1's certificate is refused by vm2's vusbd port, and vm1 attaches vusbd's shared device
     through its own port and runs usbtest 1, 2, 9, 10 again — at the same time as
   - vm2, which first sends every control API call that changes state to the host's loopback
     (where QEMU's user networking puts 10.0.2.2), with a local Host header, without a token and
     with its VM token: each is refused (401/403), and its token reads only its own VM; then it
     attaches the shared device through its own vusbd port with its own certificate.
   Afterwards the admin (the lab's token) finds the devices, modes and weights unchanged.
4. A second vusbd serves its control API on tls:: vusbctl with a client certificate (and the
   admin token) imports the stub's 1-3 over usbips:// and lists it; vusbctl without a certificate gets
   nothing.
The stub must log the refused import; vusbd must log the refused peer on vm2's port.

Usage: tests/e2e/test_vusb_tls.py [--build DIR] [--timeout S]
Logs: <build>/e2e-logs/vusb_tls.{vm1,vm2}.console.log, .stub.log, .vusbd.log, .vusbd.toml, pki/
"""
import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))
import lab  # noqa: E402

CASES = [1, 2, 9, 10]
DEVLIST = bytes([0x01, 0x11, 0x80, 0x05, 0, 0, 0, 0])  # OP_REQ_DEVLIST, USB/IP 1.1.1


def make_pki(vusbctl: Path, d: Path) -> None:
    shutil.rmtree(d, ignore_errors=True)
    (d / "other").mkdir(parents=True)
    run = lambda *args: subprocess.run([vusbctl, "cert", *args], check=True,  # noqa: E731
                                       stdout=subprocess.DEVNULL, cwd=d)
    run("ca", "--out", ".")
    run("issue", "--name", "stub", "--host", "127.0.0.1", "--host", "10.0.2.2")
    run("issue", "--name", "vusbd", "--host", "127.0.0.1", "--host", "10.0.2.2")
    run("issue", "--name", "vm1")
    run("issue", "--name", "vm2")
    run("issue", "--name", "expired", "--days", "1", "--backdate", "3")
    run("ca", "--out", "other", "--name", "another CA")
    run("issue", "--name", "vm1", "--ca", "other", "--out", "other")


def s_client(d: Path, port: int, cert: str | None) -> bytes:
    """What a TLS client with `cert` (a name under d, or None) gets back for OP_REQ_DEVLIST."""
    cmd = ["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{port}",
           "-CAfile", str(d / "ca.crt"), "-verify_return_error"]
    if cert:
        cmd += ["-cert", str(d / f"{cert}.crt"), "-key", str(d / f"{cert}.key")]
    try:
        r = subprocess.run(cmd, input=DEVLIST, capture_output=True, timeout=15)
        return r.stdout
    except subprocess.TimeoutExpired as e:
        return e.stdout or b""


def stunnel_conf(services) -> str:
    """A stunnel client config: (name, local port, remote port, certificate name)."""
    out = ["foreground = yes", "pid =", "output = /tmp/stunnel.log", "debug = 5"]
    for name, local, remote, cert in services:
        out += [f"[{name}]", "client = yes", f"accept = 127.0.0.1:{local}",
                f"connect = 10.0.2.2:{remote}", f"cert = /lab/pki/{cert}.crt",
                f"key = /lab/pki/{cert}.key", "CAfile = /lab/pki/ca.crt", "verifyChain = yes",
                "sslVersionMin = TLSv1.3"]
    return "\n".join(out) + "\n"


def start_stunnel() -> str:
    return """stunnel4 /lab/stunnel.conf >/tmp/stunnel.out 2>&1 &
for i in $(seq 50); do grep -q "Configuration successful" /tmp/stunnel.log 2>/dev/null && break; sleep 0.2; done
grep -q "Configuration successful" /tmp/stunnel.log || { cat /tmp/stunnel.out /tmp/stunnel.log; echo "LAB-FAIL stunnel did not start"; exit 40; }
echo "LAB-INFO stunnel up"
"""


def usbtest_run(label: str) -> str:
    return f"""b=$(lab_usbtest_bound 30) || {{ echo "LAB-FAIL usbtest did not bind ({label})"; lab_usb_tree; exit 21; }}
echo "LAB-PHASE {label}"
{lab.usbtest_cmd(CASES, timeout=30)}
rc=$?
[ $rc -eq 3 ] && {{ echo "LAB-FAIL a usbtest case hung ({label})"; exit 23; }}
[ $rc -eq 0 ] || {{ echo "LAB-FAIL usbtest ({label}) rc=$rc"; exit 24; }}
usbip detach -p 0 2>&1 || echo "LAB-WARN usbip detach failed"
sleep 1
"""


def vm1_script(barrier: int) -> str:
    return start_stunnel() + f"""
echo "LAB-PHASE acl"
out=$(usbip --tcp-port 3241 attach -r 127.0.0.1 -b 1-1 2>&1); rc=$?
echo "$out"
[ $rc -ne 0 ] || {{ echo "LAB-FAIL vm2's identity attached 1-1, which only vm1 may have"; exit 41; }}
echo "LAB-INFO refused as expected: $out"
usbip --tcp-port 3240 attach -r 127.0.0.1 -b 1-1 2>&1 || {{ echo "LAB-FAIL vm1 could not attach 1-1 over TLS"; exit 42; }}
{usbtest_run("stub-tls")}
echo "LAB-PHASE other-vm-port"
out=$(usbip --tcp-port 3243 list -r 127.0.0.1 2>&1); rc=$?
echo "$out"
echo "$out" | grep -q "1-1" && {{ echo "LAB-FAIL vm1's certificate opened vm2's port"; exit 43; }}
echo "LAB-INFO vm2's port refused vm1"
go=$(timeout 120 nc 10.0.2.2 {barrier} </dev/null 2>&1)
echo "LAB-INFO barrier: ${{go:-no answer}}"
usbip --tcp-port 3242 attach -r 127.0.0.1 -b 1-1 2>&1 || {{ echo "LAB-FAIL vm1 could not attach vusbd's shared device"; exit 44; }}
{usbtest_run("vusbd-shared")}
echo "LAB-INFO done"
"""


# Every control API call that changes something (control_routes.h), as a guest would send it to
# the host's loopback (10.0.2.2), with the Host header of a local client.
CHANGES = [
    ("POST", "/api/v1/devices", '{"name":"evil","source":"libusb:1d6b:0002","vms":["vm2"]}'),
    ("DELETE", "/api/v1/devices/gz", ""),
    ("POST", "/api/v1/devices/gz/mode", '{"mode":"exclusive"}'),
    ("POST", "/api/v1/attachments", '{"device":"gz","vm":"vm2","port":5}'),
    ("DELETE", "/api/v1/attachments/gz/vm1", ""),
    ("POST", "/api/v1/vms/vm1/weight", '{"weight":7}'),
    ("POST", "/api/v1/vms/vm2/usbredir", '{"device":"gz","listen":"0.0.0.0:4444"}'),
    ("DELETE", "/api/v1/vms/vm1/usbredir/gz", ""),
]


def api_probe(control: int) -> str:
    """Guest lines: every change, without a token and with vm2's token; each must be refused
    (401/403). Then what vm2's token may read: its own VM only."""
    lines = [f"""echo "LAB-PHASE api"
api() {{  # METHOD PATH BODY [TOKEN] -> the HTTP status
  if [ -n "$4" ]; then
    printf '%s %s HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nAuthorization: Bearer %s\\r\\nContent-Type: application/json\\r\\nContent-Length: %s\\r\\nConnection: close\\r\\n\\r\\n%s' "$1" "$2" "$4" "${{#3}}" "$3"
  else
    printf '%s %s HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nContent-Type: application/json\\r\\nContent-Length: %s\\r\\nConnection: close\\r\\n\\r\\n%s' "$1" "$2" "${{#3}}" "$3"
  fi | timeout 10 nc 10.0.2.2 {control} > /tmp/api.out 2>&1
  head -1 /tmp/api.out | cut -d' ' -f2
}}
tok=$(cat /lab/vm2.token)
bad=0"""]
    for m, path, body in CHANGES:
        lines.append(f"""a=$(api {m} {path} '{body}'); v=$(api {m} {path} '{body}' "$tok")
echo "LAB-INFO api {m} {path}: no token $a, vm2 token $v"
case "$a$v" in *2??*|"") bad=1;; esac
case "$a" in 401|403) ;; *) bad=1;; esac
case "$v" in 401|403) ;; *) bad=1;; esac""")
    lines.append("""s=$(api GET /api/v1/vms '' "$tok"); body=$(tail -c 2000 /tmp/api.out)
echo "LAB-INFO api GET /api/v1/vms with vm2's token: $s $(echo "$body" | tr -d '\\n' | cut -c1-200)"
[ "$s" = 200 ] && echo "$body" | grep -q '"vm2"' && ! echo "$body" | grep -q '"vm1"' || bad=1
s=$(api GET /api/v1/vms/vm1/qemu-args '' "$tok")
echo "LAB-INFO api GET vm1's qemu-args with vm2's token: $s"
[ "$s" = 403 ] || bad=1
[ $bad -eq 0 ] || { echo "LAB-FAIL the guest changed or saw what it may not"; exit 45; }
echo "LAB-INFO every change refused\"""")
    return "\n".join(lines) + "\n"


def vm2_script(barrier: int, control: int) -> str:
    return start_stunnel() + api_probe(control) + f"""
go=$(timeout 240 nc 10.0.2.2 {barrier} </dev/null 2>&1)
echo "LAB-INFO barrier: ${{go:-no answer}}"
usbip --tcp-port 3240 attach -r 127.0.0.1 -b 1-1 2>&1 || {{ echo "LAB-FAIL vm2 could not attach vusbd's shared device"; exit 44; }}
{usbtest_run("vusbd-shared")}
echo "LAB-INFO done"
"""


class Guest(lab.GuestThread):
    def __init__(self, name, script, t0, files, barrier):
        super().__init__(name, script, t0, modules=["usbtest", "vhci-hcd"], files=files)
        self.barrier = barrier

    def on_finish(self) -> None:
        self.barrier.release()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", help="CMake build dir (default: $VUSB_BUILD or <repo>/build)")
    ap.add_argument("--timeout", type=float, default=300, help="wall-clock limit per guest")
    a = ap.parse_args()
    if a.build:
        os.environ["VUSB_BUILD"] = str(Path(a.build).resolve())
    name = "vusb_tls"
    logs = lab.logs_dir()
    t0 = time.monotonic()
    if not lab.ready():
        return 1
    bins = lab.build_dir() / "bin"
    stub, vusbd, vusbctl = bins / "vusb-stub", bins / "vusbd", bins / "vusbctl"
    pki = logs / f"{name}.pki"
    make_pki(vusbctl, pki)

    pt, p1, p2, pc = lab.free_ports(4)
    stub_log, vusbd_log = logs / f"{name}.stub.log", logs / f"{name}.vusbd.log"
    problems: list = []
    procs: list = []
    guests: list = []
    barrier = lab.Barrier(2, 180)
    try:
        stub_proc = lab.start_process(
            [stub, "--listen", f"tls:127.0.0.1:{pt}", "--tls-ca", pki / "ca.crt",
             "--tls-cert", pki / "stub.crt", "--tls-key", pki / "stub.key",
             "--emulate", "gadget-zero=1-1", "--emulate", "gadget-zero=1-2",
             "--emulate", "gadget-zero=1-3",
             "--access", "1-1=cn:vm1", "--access", "1-2,1-3=cn:vusbd"], stub_log)
        procs.append(stub_proc)
        if not lab.wait_listening(pt, stub_proc, 15):
            print(f"FAIL: vusb-stub did not listen\n{lab.tail(stub_log)}")
            return 1

        # 1. Refused before any USB/IP byte; the positive control gets the list.
        for who in (None, "other/vm1", "expired"):
            got = s_client(pki, pt, who)
            label = who or "no certificate"
            if got:
                problems.append(f"s_client with {label} got {len(got)} bytes of USB/IP: {got[:16]!r}")
            else:
                lab.log(f"s_client with {label}: refused, no USB/IP byte")
        good = s_client(pki, pt, "vm1")
        if not good.startswith(bytes([0x01, 0x11, 0x00, 0x05])):
            problems.append(f"s_client with vm1's certificate got no device list: {good[:16]!r}")
        else:
            lab.log(f"s_client with vm1's certificate: device list ({len(good)} bytes)")
        refused = stub_log.read_text().count("refused")
        if refused < 3:
            problems.append(f"the stub logged {refused} refused handshakes, expected 3")

        # 2. vusbd over mutual TLS, one identity per VM port.
        toml = logs / f"{name}.vusbd.toml"
        vm2_token = logs / f"{name}.vm2.token"
        vm2_token.write_text(secrets.token_hex(20) + "\n")
        toml.write_text(f"""[control]
listen = "127.0.0.1:{pc}"

{lab.control_token()}[[control.token]]
file = "{vm2_token}"
role = "vm"
vm = "vm2"

[tls]
ca = "{pki / 'ca.crt'}"
cert = "{pki / 'vusbd.crt'}"
key = "{pki / 'vusbd.key'}"
[[vm]]
name = "vm1"
listen = "tls:127.0.0.1:{p1}"
allow = ["cn:vm1"]
[[vm]]
name = "vm2"
listen = "tls:127.0.0.1:{p2}"
allow = ["cn:vm2"]
[[device]]
name = "gz"
source = "usbips://127.0.0.1:{pt}/1-2"
mode = "shared"
vms = ["vm1", "vm2"]
""")
        vusbd_proc = lab.start_process([vusbd, "--config", toml], vusbd_log)
        procs.append(vusbd_proc)
        if not lab.wait_log_line(vusbd_log, "vusbd: ready", vusbd_proc, 20):
            print(f"FAIL: vusbd not ready\n{lab.tail(vusbd_log, 60)}")
            return 1

        # 3. Two guests with stunnel in front of the stock usbip.
        files = {f"lab/pki/{n}": (pki / n).read_bytes()
                 for n in ("ca.crt", "vm1.crt", "vm1.key", "vm2.crt", "vm2.key")}
        f1 = dict(files)
        f1["lab/stunnel.conf"] = stunnel_conf([("stub", 3240, pt, "vm1"), ("stub-as-vm2", 3241, pt, "vm2"),
                                              ("vusbd", 3242, p1, "vm1"), ("vm2-port", 3243, p2, "vm1")])
        f2 = dict(files)
        f2["lab/vm2.token"] = vm2_token.read_bytes()
        f2["lab/stunnel.conf"] = stunnel_conf([("vusbd", 3240, p2, "vm2")])
        guests = [Guest(f"{name}.vm1", vm1_script(barrier.port), t0, f1, barrier),
                  Guest(f"{name}.vm2", vm2_script(barrier.port, pc), t0, f2, barrier)]
        threads = [g.start(a.timeout, 256) for g in guests]
        for th in threads:
            th.join()
        for g in guests:
            if g.error or not g.run or not g.run.ok:
                problems.append(f"{g.name}: {g.error or (g.run.failure_report() if g.run else 'no run')}")
                continue
            for phase in ("stub-tls", "vusbd-shared") if g.name.endswith("vm1") else ("vusbd-shared",):
                res = g.run.usbtest(phase)
                bad = lab.usbtest_failures(res, CASES)
                print(f"{g.name} {phase}:\n{lab.usbtest_table(res, CASES)}")
                if bad:
                    problems.append(f"{g.name} {phase}: {bad}")
        # Nothing the guests tried changed anything: the admin sees what the config made.
        ctl = [vusbctl, "--api", f"127.0.0.1:{pc}", "--json"]
        devs = json.loads(subprocess.run(ctl + ["list"], capture_output=True, text=True,
                                         timeout=20).stdout or "[]")
        names = sorted(d["name"] for d in devs)
        modes = {d["name"]: d.get("mode") for d in devs}
        if names != ["gz"] or modes.get("gz") != "shared":
            problems.append(f"the devices changed: {names} {modes}")
        vms = json.loads(subprocess.run(ctl + ["list", "--vms"], capture_output=True, text=True,
                                        timeout=20).stdout or "[]")
        weights = {v["name"]: v.get("weight") for v in vms}
        if weights.get("vm1") not in (None, 1):
            problems.append(f"vm1's weight changed: {weights}")
        if "refused (403)" not in vusbd_log.read_text():
            problems.append("vusbd did not log the refused API calls")
        # 4. The control API itself over TLS: vusbctl with a client certificate reads and (with
        # the admin token) changes; without a certificate it gets nothing.
        pc2 = lab.free_ports(1)[0]
        toml2 = logs / f"{name}.vusbd2.toml"
        toml2.write_text(f"""[control]
listen = "tls:127.0.0.1:{pc2}"

{lab.control_token()}[tls]
ca = "{pki / 'ca.crt'}"
cert = "{pki / 'vusbd.crt'}"
key = "{pki / 'vusbd.key'}"
[[vm]]
name = "vm1"
listen = "127.0.0.1:0"
""")
        vusbd2_log = logs / f"{name}.vusbd2.log"
        vusbd2 = lab.start_process([vusbd, "--config", toml2], vusbd2_log)
        procs.append(vusbd2)
        if not lab.wait_log_line(vusbd2_log, "vusbd: ready", vusbd2, 20):
            problems.append(f"vusbd with a TLS control API did not start: {lab.tail(vusbd2_log)}")
        else:
            tls_ctl = [vusbctl, "--api", f"tls:127.0.0.1:{pc2}", "--tls-ca", pki / "ca.crt",
                       "--tls-cert", pki / "vm1.crt", "--tls-key", pki / "vm1.key"]
            r = subprocess.run(tls_ctl + ["attach", "--vm", "vm1", "-r", f"tls:127.0.0.1",
                                          "--tcp-port", str(pt), "-b", "1-3", "-d", "gz2"],
                               capture_output=True, text=True, timeout=30)
            lab.log(f"vusbctl over TLS: attach -> {r.returncode} {r.stdout.strip()} {r.stderr.strip()}")
            if r.returncode != 0:
                problems.append(f"vusbctl over TLS could not attach: {r.stderr.strip()}")
            r = subprocess.run(tls_ctl + ["--json", "list"], capture_output=True, text=True,
                               timeout=30)
            if r.returncode != 0 or "usbips://127.0.0.1" not in r.stdout:
                problems.append(f"vusbctl over TLS: list: {r.returncode} {r.stdout[:200]} {r.stderr}")
            r = subprocess.run([vusbctl, "--api", f"tls:127.0.0.1:{pc2}", "--tls-ca",
                                pki / "ca.crt", "list"], capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                problems.append("vusbctl without a client certificate was served over TLS")
            else:
                lab.log(f"vusbctl over TLS without a certificate: refused ({r.stderr.strip()[:120]})")
        stub_text = stub_log.read_text()
        if "import of 1-1 refused" not in stub_text:
            problems.append("the stub did not log the refused import of 1-1")
        if "not vm vm2's" not in vusbd_log.read_text():
            problems.append("vusbd did not log refusing vm1's certificate on vm2's port")
    finally:
        barrier.close()
        for p in reversed(procs):
            rc = lab.stop_process(p)
            if rc not in (0, None):
                problems.append(f"{p.args[0]} exited {rc}")
    if problems:
        print("FAIL:\n  " + "\n  ".join(problems))
        print(f"--- stub log ---\n{lab.tail(stub_log, 30)}\n--- vusbd log ---\n{lab.tail(vusbd_log, 40)}")
        return 1
    print(f"PASS: e2e.vusb_tls in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
