#!/usr/bin/env python3
"""A/B of the kernel mode's per-packet whole-machine cost: the daemon with
--kernel-offload as is, the same daemon after its counting chain (`count`) was flushed,
and the direct floor (bench/direct_ctl.py), alternating, ROUNDS times (default 3).

Each figure is the machine's busy time over the loadgen's measurement window divided
by the packets that arrived in it (bench/driver.py's method), in microseconds. Server
pinned to CPU 0, loadgen to CPU 1. Needs root and bench/out/loadgen (bench/run.sh).

Usage: ROUNDS=3 ab_kernel_count.py [CALLS]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from driver import KERNEL_BIND_S, KERNEL_TABLE_PREFIX, machine_busy_s  # noqa: E402

KERNEL_CTL, DIRECT_CTL = 9581, 9821
PORT_MIN = 10000
#: Ports per call the daemon may take (RTP and RTCP on both sides), with headroom.
PORTS_PER_CALL = 8


def measure(port: int, calls: int, warmup: float, extra: tuple[str, ...] = ()) -> float:
    """Busy microseconds per packet that arrived in the window."""
    cmd = ["taskset", "-c", "1", str(BENCH / "out" / "loadgen"), "--ctl", f"127.0.0.1:{port}"]
    cmd += ["--calls", str(calls), "--duration", "8", "--warmup", f"{warmup:.1f}"]
    cmd += ["--drain", "1", "--socks", "1", *extra]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    b0 = b1 = None
    res: dict = {}
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith("MEASURE_START"):
            b0 = machine_busy_s()
        elif line.startswith("MEASURE_END"):
            b1 = machine_busy_s()
        elif line.startswith("RESULT "):
            res = json.loads(line[7:])
    p.wait()
    if b0 is None or b1 is None or "error" in res:
        raise RuntimeError(f"loadgen failed: {res}")
    if res["lost"]:
        print(f"  loss: {res['lost']} packets ({res['loss_pct']:.4f} %)", flush=True)
    return (b1 - b0) / res["rx_window_arrivals"] * 1e6


def start(args: list[str]) -> subprocess.Popen:
    d = subprocess.Popen(["taskset", "-c", "0", *args], cwd=ROOT, stdout=subprocess.DEVNULL)
    time.sleep(2)
    return d


def stop(d: subprocess.Popen) -> None:
    d.terminate()
    d.wait()


def flush_count_chains() -> None:
    """Flush the counting chain of the daemon's tables (IPv4 and IPv6)."""
    out = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True).stdout
    for item in json.loads(out)["nftables"]:
        t = item.get("table")
        if t and t["name"].startswith(KERNEL_TABLE_PREFIX):
            subprocess.run(["nft", "flush", "chain", t["family"], t["name"], "count"], check=True)


def main() -> int:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 800
    rounds = int(os.environ.get("ROUNDS", "3"))
    daemon = [".venv/bin/python", "rtpproxy.py", "-f", "-F", "-s", f"udp:127.0.0.1:{KERNEL_CTL}"]
    daemon += ["-l", "127.0.0.1", "-m", str(PORT_MIN), "-M", str(PORT_MIN + PORTS_PER_CALL * calls)]
    daemon += ["-T", "60", "-d", "ERR", "--kernel-offload"]
    warmup = 2 + calls * KERNEL_BIND_S
    out: dict[str, list[float]] = {"kernel": [], "nocount": [], "direct": []}
    for _ in range(rounds):
        d = start(daemon)
        try:
            out["kernel"].append(measure(KERNEL_CTL, calls, warmup))
            flush_count_chains()
            out["nocount"].append(measure(KERNEL_CTL, calls, warmup))
        finally:
            stop(d)
        d = start([sys.executable, "bench/direct_ctl.py", "--ctl", f"127.0.0.1:{DIRECT_CTL}"])
        try:
            out["direct"].append(measure(DIRECT_CTL, calls, 2, ("--direct",)))
        finally:
            stop(d)
        print({k: [round(x, 2) for x in v] for k, v in out.items()}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
