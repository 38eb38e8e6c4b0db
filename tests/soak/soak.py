#!/usr/bin/env python3
"""Soak: many session create/relay/delete cycles through a live daemon, then leak checks.

Each cycle is what a controller and two phones do for a short call: U (caller's
address), L (callee's address), two RTP packets each way (every one must arrive), D.
Several lanes run cycles concurrently, each with its own control channel: UDP (the
default) or one persistent `cunix:` connection per lane.

The daemon's open descriptors, media ports in use (its UDP sockets in
/proc/net/udp{,6}), live sessions (`G`), live greenlets and gc-tracked objects (from the
RTPP_DEBUG_DUMP file the sweeper rewrites every second, after a full collection) and
RSS are sampled after a warm-up, half-way and at the end, after `--settle` idle
seconds. Every end value is compared with the start value and must not have grown by
more than the tolerances below. Over UDP the reply cache keeps every reply 35-38 s,
so the default settle (40 s) lets it empty before the end sample; a `cunix:` run has
no reply cache and needs only a short settle.

    tests/soak/soak.py [--cycles N] [--lanes K] [--ctrl udp|cunix] [--settle S] [--quiet]

Exit status 0 when every cycle worked and every drift is within tolerance, else 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent / "lib")]

from helpers import UdpClient, free_udp_port, short_tmpdir, start_proxy  # noqa: E402
from rtpp.control.rcache import MAX_BYTES  # noqa: E402

RTP_HEAD = struct.Struct("!BBHII")
PAYLOAD = bytes(160)
WARMUP_CYCLES = 200
#: idle seconds before the end sample: the UDP reply cache keeps replies 35-38 s
SETTLE_S = 40.0
DUMP_PERIOD_S = 1.2  # the sweeper rewrites the debug dump every second
#: allowed growth from the sample after warm-up to the end sample. Objects (gc-tracked,
#: counted after a full collection) are the exact leak check. RSS is an allocator
#: high-water mark. Over UDP the reply cache fills up to its cap (32 MB of accounted
#: payload, about 1.2x that in real memory) while commands run at full speed, and once
#: its entries expire most of those pages stay mapped: pymalloc returns a 1 MiB arena
#: only when every object in it is gone, and a few long-lived objects allocated during
#: the run (counter values, the last cache entries) pin most of them; the emptied
#: dict keeps its table. So UDP runs get room for the cache at its cap.
TOLERANCE = {
    "fds": 0,
    "udp_sockets": 0,
    "sessions": 0,
    "greenlets": 5,
    "objects": 50,
    "rss_kib": 16 * 1024,
}
RSS_TOLERANCE_UDP_KIB = 16 * 1024 + 3 * MAX_BYTES // 2 // 1024


class UdpControl:
    """Commands over the daemon's UDP control socket (a cookie per command)."""

    def __init__(self, proxy) -> None:
        self.proxy = proxy

    def cmd(self, text: str) -> str:
        return self.proxy.cmd(text)

    def close(self) -> None:
        pass


class StreamControl:
    """Commands over one persistent `cunix:` connection."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5.0)
        self.sock.connect(path)
        self.buf = b""

    def cmd(self, text: str) -> str:
        self.sock.sendall(text.encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CycleError("control connection closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        self.sock.close()


class CycleError(Exception):
    pass


def rtp(seq: int, ssrc: int) -> bytes:
    return RTP_HEAD.pack(0x80, 0, seq & 0xFFFF, seq * 160, ssrc) + PAYLOAD


class Lane:
    """One caller/callee pair of sockets running cycles one after another."""

    def __init__(self, control, index: int) -> None:
        self.control = control
        self.index = index
        self.a = UdpClient(timeout=2.0)
        self.b = UdpClient(timeout=2.0)
        self.done = 0
        self.errors: list[str] = []

    def cycle(self, n: int) -> None:
        control = self.control
        cid = f"soak-{self.index}-{n}@h"
        port_a = int(control.cmd(f"U {cid} 127.0.0.1 {self.a.port} ft;1").split()[0])
        port_b = int(control.cmd(f"L {cid} 127.0.0.1 {self.b.port} ft;1 tt;1").split()[0])
        if not port_a or not port_b:
            raise CycleError(f"{cid}: no ports ({port_a}, {port_b})")
        for seq in range(2):
            for src, dst, port in ((self.a, self.b, port_b), (self.b, self.a, port_a)):
                packet = rtp(seq, 0x1000 + src.port)
                src.send(packet, ("127.0.0.1", port))
                data, _ = dst.recv()
                if data != packet:
                    raise CycleError(f"{cid}: wrong packet relayed")
        reply = control.cmd(f"D {cid} ft;1 tt;1")
        if reply != "0":
            raise CycleError(f"{cid}: D replied {reply}")

    def run(self, cycles: int) -> None:
        for n in range(cycles):
            try:
                self.cycle(n)
                self.done += 1
            except (CycleError, OSError, ValueError, AssertionError) as exc:
                self.errors.append(f"lane {self.index} cycle {n}: {exc!r}")
                if len(self.errors) > 20:
                    return

    def close(self) -> None:
        self.a.close()
        self.b.close()
        self.control.close()


def udp_sockets(pid: int) -> int:
    """The daemon's UDP sockets (control socket included), from /proc/net/udp{,6}."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            next(f)
            count += sum(1 for line in f if line.split()[9] in inodes)
    return count


def read_dump(dump: str) -> dict[str, int]:
    values = {"greenlets": -1, "objects": -1}
    try:
        for line in Path(dump).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in values:
                values[key] = int(value)
    except OSError:
        pass
    return values


def sample(control, pid: int, dump: str) -> dict[str, int]:
    # The command first (over UDP it also lets the reply cache drop expired entries),
    # then the sweeper rewrites the dump.
    created, destroyed = map(int, control.cmd("G nsess_created nsess_destroyed").split())
    sessions = created - destroyed
    time.sleep(DUMP_PERIOD_S)
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "udp_sockets": udp_sockets(pid),
        "sessions": sessions,
        **read_dump(dump),
        "rss_kib": rss,
    }


def run_lanes(lanes: list[Lane], cycles: int) -> None:
    per_lane = [cycles // len(lanes) + (i < cycles % len(lanes)) for i in range(len(lanes))]
    threads = [
        threading.Thread(target=lane.run, args=(n,), daemon=True)
        for lane, n in zip(lanes, per_lane, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=100_000)
    ap.add_argument("--lanes", type=int, default=4)
    ap.add_argument("--ctrl", choices=("udp", "cunix"), default="udp")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--settle",
        type=float,
        default=SETTLE_S,
        help="seconds idle before the end sample (the UDP reply cache keeps 35-38 s)",
    )
    args = ap.parse_args(argv)
    tmp = short_tmpdir()
    dump = os.path.join(tmp, "debug-dump")
    cunix = os.path.join(tmp, "ctl.sock")
    flags = ["-l", "127.0.0.1", "-T", "60", "-d", "WARN"]
    flags += ["-s", f"udp:127.0.0.1:{free_udp_port()}", "-s", f"cunix:{cunix}"]
    proxy = start_proxy(*flags, extra_env={"RTPP_DEBUG_DUMP": dump})

    def control():
        return UdpControl(proxy) if args.ctrl == "udp" else StreamControl(cunix)

    failures: list[str] = []
    lanes = [Lane(control(), i) for i in range(args.lanes)]
    sampler = control()
    try:
        pid = proxy.pid
        run_lanes(lanes, WARMUP_CYCLES)
        before = sample(sampler, pid, dump)
        t0 = time.monotonic()
        for lane in lanes:
            lane.done = 0
        run_lanes(lanes, args.cycles // 2)
        mid = sample(sampler, pid, dump)
        run_lanes(lanes, args.cycles - args.cycles // 2)
        duration = time.monotonic() - t0 - DUMP_PERIOD_S
        done = sum(lane.done for lane in lanes)
        time.sleep(args.settle)
        after = sample(sampler, pid, dump)
        for lane in lanes:
            failures += lane.errors
        if done != args.cycles:
            failures.append(f"{args.cycles - done} cycles failed")
        print(
            f"soak: {done} cycles in {duration:.1f} s ({done / duration:.0f}/s) over "
            f"{args.ctrl}, end sample after {args.settle:.0f} s idle"
        )
        tolerance = dict(TOLERANCE)
        if args.ctrl == "udp":
            tolerance["rss_kib"] = RSS_TOLERANCE_UDP_KIB
        for key, limit in tolerance.items():
            drift = after[key] - before[key]
            print(
                f"  {key}: {before[key]} -> {mid[key]} (half) -> {after[key]} "
                f"(end - start {drift:+d}, limit +{limit})"
            )
            if before[key] < 0 or drift > limit:
                failures.append(f"{key} grew by {drift:+d}, beyond +{limit}")
        status = proxy.stop(signal.SIGTERM, timeout=10)
        if status != 0:
            failures.append(f"SIGTERM exit status {status}")
        log = proxy.stderr_text()
        if "Traceback" in log or "died" in log or "crashed" in log:
            failures.append("daemon log shows a crash:\n" + log[-2000:])
    finally:
        for lane in lanes:
            lane.close()
        sampler.close()
        proxy.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    for line in failures[:30]:
        print(f"FAIL: {line}")
    print("soak: " + ("FAILED" if failures else "OK"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
