#!/usr/bin/env python3
"""Soak: many session create/relay/delete cycles through a live daemon, then leak checks.

Each cycle is what a controller and two phones do for a short call: U (caller's
address), L (callee's address), two RTP packets each way (every one must arrive), D.
Several lanes run cycles concurrently. Before and after, the daemon's open descriptors,
media ports in use (its UDP sockets in /proc/net/udp{,6}, `I` active sessions), live
greenlets (the RTPP_DEBUG_DUMP file the sweeper rewrites every second) and RSS are
sampled after a warm-up, half-way and at the end; the drift must stay within the
tolerances below (RSS: from half-way, once the reply cache has filled).

    tests/soak/soak.py [--cycles N] [--lanes K] [--quiet]

Exit status 0 when every cycle worked and every drift is within tolerance, else 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import struct
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from helpers import UdpClient, short_tmpdir, start_proxy  # noqa: E402

RTP_HEAD = struct.Struct("!BBHII")
PAYLOAD = bytes(160)
WARMUP_CYCLES = 200
SETTLE_S = 3.0
#: allowed drift from the sample after warm-up to the end
TOLERANCE = {
    "fds": 0,
    "udp_sockets": 0,
    "sessions": 0,
    "greenlets": 5,
    "rss_kib": 16 * 1024,
}


class CycleError(Exception):
    pass


def rtp(seq: int, ssrc: int) -> bytes:
    return RTP_HEAD.pack(0x80, 0, seq & 0xFFFF, seq * 160, ssrc) + PAYLOAD


class Lane:
    """One caller/callee pair of sockets running cycles one after another."""

    def __init__(self, proxy, index: int) -> None:
        self.proxy = proxy
        self.index = index
        self.a = UdpClient(timeout=2.0)
        self.b = UdpClient(timeout=2.0)
        self.done = 0
        self.errors: list[str] = []

    def cycle(self, n: int) -> None:
        proxy = self.proxy
        cid = f"soak-{self.index}-{n}@h"
        port_a = int(proxy.cmd(f"U {cid} 127.0.0.1 {self.a.port} ft;1").split()[0])
        port_b = int(proxy.cmd(f"L {cid} 127.0.0.1 {self.b.port} ft;1 tt;1").split()[0])
        if not port_a or not port_b:
            raise CycleError(f"{cid}: no ports ({port_a}, {port_b})")
        for seq in range(2):
            for src, dst, port in ((self.a, self.b, port_b), (self.b, self.a, port_a)):
                packet = rtp(seq, 0x1000 + src.port)
                src.send(packet, ("127.0.0.1", port))
                data, _ = dst.recv()
                if data != packet:
                    raise CycleError(f"{cid}: wrong packet relayed")
        reply = proxy.cmd(f"D {cid} ft;1 tt;1")
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


def sample(proxy, pid: int, dump: str) -> dict[str, int]:
    time.sleep(1.2)  # let the sweeper rewrite the dump after the last command
    greenlets = -1
    try:
        for line in Path(dump).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "greenlets":
                greenlets = int(value)
    except OSError:
        pass
    info = proxy.cmd("I")
    sessions = int(info.split("active sessions:")[1].split()[0])
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "udp_sockets": udp_sockets(pid),
        "sessions": sessions,
        "greenlets": greenlets,
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
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--settle",
        type=float,
        default=SETTLE_S,
        help="seconds idle before the last sample (the UDP reply cache keeps 35-38 s)",
    )
    args = ap.parse_args(argv)
    tmp = short_tmpdir()
    dump = os.path.join(tmp, "debug-dump")
    proxy = start_proxy(
        "-l", "127.0.0.1", "-T", "60", "-d", "WARN",
        extra_env={"RTPP_DEBUG_DUMP": dump},
    )  # fmt: skip
    failures: list[str] = []
    lanes = [Lane(proxy, i) for i in range(args.lanes)]
    try:
        pid = proxy.pid
        run_lanes(lanes, WARMUP_CYCLES)
        before = sample(proxy, pid, dump)
        t0 = time.monotonic()
        for lane in lanes:
            lane.done = 0
        run_lanes(lanes, args.cycles // 2)
        mid = sample(proxy, pid, dump)
        run_lanes(lanes, args.cycles - args.cycles // 2)
        duration = time.monotonic() - t0 - 1.2
        done = sum(lane.done for lane in lanes)
        time.sleep(args.settle)
        after = sample(proxy, pid, dump)
        for lane in lanes:
            failures += lane.errors
        if done != args.cycles:
            failures.append(f"{args.cycles - done} cycles failed")
        print(f"soak: {done} cycles in {duration:.1f} s ({done / duration:.0f}/s)")
        for key, limit in TOLERANCE.items():
            # RSS is a high-water mark that also holds the UDP reply cache (35-38 s of
            # replies): a leak shows as growth from the middle sample to the end.
            base = mid if key == "rss_kib" else before
            drift = after[key] - base[key]
            print(
                f"  {key}: {before[key]} -> {mid[key]} (half) -> {after[key]} "
                f"(drift {drift:+d} from {'half' if base is mid else 'start'}, limit {limit})"
            )
            if base[key] < 0 or drift > limit:
                failures.append(f"{key} drift {drift:+d} beyond {limit}")
        status = proxy.stop(signal.SIGTERM, timeout=10)
        if status != 0:
            failures.append(f"SIGTERM exit status {status}")
        log = proxy.stderr_text()
        if "Traceback" in log or "died" in log or "crashed" in log:
            failures.append("daemon log shows a crash:\n" + log[-2000:])
    finally:
        for lane in lanes:
            lane.close()
        proxy.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    for line in failures[:30]:
        print(f"FAIL: {line}")
    print("soak: " + ("FAILED" if failures else "OK"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
