#!/usr/bin/python3
"""usbip_flow: the URB-level USB/IP conversation on one TCP port of a capture, in wire order.

Reassembles each TCP connection on PORT (tshark supplies the payload bytes; Wireshark's own USB/IP
dissector mis-frames PDUs that share a segment) and prints one line per PDU:

    TIME  sSTREAM  CMD_SUBMIT  seq=N  ep0in len=18 setup=8006000100001200
    TIME  sSTREAM  RET_SUBMIT  seq=N  status=0 actual=1 data=01   (IN data up to 16 bytes)

Usage: tests/e2e/lab/usbip_flow.py CAPTURE PORT [--from SECS] [--ep0]
Standard library + tshark only.
"""
from __future__ import annotations

import argparse
import collections
import signal
import struct
import subprocess
import sys


def payloads(pcap: str, port: int) -> dict:
    out = subprocess.run(["tshark", "-n", "-r", pcap, "-Y", f"tcp.port=={port} && tcp.len>0",
                          "-T", "fields", "-e", "frame.time_relative", "-e", "tcp.stream",
                          "-e", "tcp.srcport", "-e", "tcp.payload"],
                         capture_output=True, text=True, check=True).stdout
    streams: dict = collections.defaultdict(lambda: {"client": [], "server": []})
    for line in out.splitlines():
        t, st, sport, data = line.split("\t")
        side = "server" if int(sport) == port else "client"
        streams[int(st)][side].append((float(t), bytes.fromhex(data.replace(":", ""))))
    return streams


def parse(chunks, dirs: dict, stream: int, events: list) -> None:
    buf = b"".join(c for _, c in chunks)
    ends, pos = [], 0
    for t, c in chunks:
        pos += len(c)
        ends.append((pos, t))

    def time_at(off: int) -> float:
        for end, t in ends:
            if off < end:
                return t
        return ends[-1][1]

    off = 0
    if buf[:2] == b"\x01\x11":  # an OP_* header: skip the import handshake, ignore devlists
        code = struct.unpack(">H", buf[2:4])[0]
        if code == 0x8003:
            off = 40    # OP_REQ_IMPORT: header + bus id
        elif code == 0x0003:
            off = 320   # OP_REP_IMPORT: header + usbip_usb_device
        else:
            return
    while off + 48 <= len(buf):
        cmd, seq, _devid, direction, ep = struct.unpack(">IIIII", buf[off:off + 20])
        t = time_at(off)
        if cmd == 1:
            _flags, length, _sf, npk, _iv = struct.unpack(">IIiiI", buf[off + 20:off + 40])
            dirs[seq] = direction
            desc = f"ep{ep}{'in' if direction else 'out'} len={length}"
            if ep == 0:
                desc += f" setup={buf[off + 40:off + 48].hex()}"
            events.append((t, stream, "CMD_SUBMIT", seq, ep, desc))
            off += 48 + (length if direction == 0 else 0) + (16 * npk if npk > 0 else 0)
        elif cmd == 2:
            (victim,) = struct.unpack(">I", buf[off + 20:off + 24])
            events.append((t, stream, "CMD_UNLINK", seq, None, f"unlink seq={victim}"))
            off += 48
        elif cmd == 3:
            status, actual, _sf, npk, _ec = struct.unpack(">iIiii", buf[off + 20:off + 40])
            desc = f"status={status} actual={actual}"
            if dirs.get(seq, 1) == 1 and 0 < actual <= 16:  # short IN data: show it
                desc += f" data={buf[off + 48:off + 48 + actual].hex()}"
            events.append((t, stream, "RET_SUBMIT", seq, None, desc))
            off += 48 + (actual if dirs.get(seq, 1) == 1 else 0) + (16 * npk if npk > 0 else 0)
        elif cmd == 4:
            (status,) = struct.unpack(">i", buf[off + 20:off + 24])
            events.append((t, stream, "RET_UNLINK", seq, None, f"status={status}"))
            off += 48
        else:
            events.append((t, stream, "DESYNC", seq, None, f"command {cmd:#x} at byte {off}"))
            return


def main() -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends us quietly
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("port", type=int)
    ap.add_argument("--from", dest="start", type=float, default=0.0,
                    help="only PDUs at or after this capture time (s)")
    ap.add_argument("--ep0", action="store_true", help="only control transfers (and unlinks)")
    a = ap.parse_args()
    events: list = []
    for st, sides in sorted(payloads(a.capture, a.port).items()):
        dirs: dict = {}
        parse(sides["client"], dirs, st, events)
        parse(sides["server"], dirs, st, events)
    ep_of: dict = {}
    for _, st, kind, seq, ep, _ in events:
        if kind == "CMD_SUBMIT":
            ep_of[(st, seq)] = ep
    events.sort(key=lambda e: e[0])
    for t, st, kind, seq, ep, desc in events:
        if t < a.start:
            continue
        if a.ep0 and kind in ("CMD_SUBMIT", "RET_SUBMIT") and ep_of.get((st, seq)) != 0:
            continue
        print(f"{t:10.6f}  s{st}  {kind:10}  seq={seq:<6} {desc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
