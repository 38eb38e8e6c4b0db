#!/usr/bin/env python3
"""Micro-benchmark of RtpAnalyzer.feed, the per-packet analysis on the relay fast path.

Feeds 100k RTP packets (memoryview slices of one receive buffer each, as the relay
does) to the live analyzer and to the frozen pre-fast-path copy in
tests/rtpa_reference.py, for a few stream shapes, interleaved, best of --repeat.
Reports ns per packet (loop overhead subtracted) in CPU time of this process,
which is steadier than wall time on a shared machine, and in wall time.

    .venv/bin/python bench/rtpa_feed.py [--packets N] [--repeat R]
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests")]

from rtpa_reference import ReferenceRtpAnalyzer  # noqa: E402
from rtpp.media.analyzer import RtpAnalyzer  # noqa: E402

HEAD = struct.Struct("!BBHII")


def packets(seqs: list[int], pt: int = 0, ssrc_every: int = 0) -> list[memoryview]:
    out = []
    for i, seq in enumerate(seqs):
        ssrc = 0x1234 + (i // ssrc_every if ssrc_every else 0)
        buf = bytearray(HEAD.pack(0x80, pt, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc))
        buf += bytes(160) + bytes(64)  # the receive buffer is larger than the packet
        out.append(memoryview(buf)[:172])
    return out


def scenarios(n: int) -> dict[str, list[memoryview]]:
    rng = random.Random(1)
    loss = [s for s in range(2 * n) if rng.random() > 0.01][:n]
    swapped = list(range(n))
    for i in range(0, n - 1, 50):
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    return {
        "in order, PCMU (the common case)": packets(list(range(n))),
        "in order, PT 96 (no jitter)": packets(list(range(n)), pt=96),
        "1% loss": packets(loss),
        "2% of packets swapped": packets(swapped),
        "every packet twice": packets([s // 2 for s in range(n)]),
        "new SSRC every 50 packets": packets(list(range(n)), ssrc_every=50),
    }


def measure(cls, pk: list[memoryview], times: list[float], clock) -> float:
    analyzer = cls()
    feed = analyzer.feed
    start = clock()
    for data, now in zip(pk, times, strict=True):
        feed(data, now)
    return clock() - start


def overhead(pk: list[memoryview], times: list[float], clock) -> float:
    start = clock()
    for _data, _now in zip(pk, times, strict=True):
        pass
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    n = args.packets
    times = [i * 0.02 + (0.0003 if i % 7 == 0 else 0.0) for i in range(n)]
    targets = (("reference", ReferenceRtpAnalyzer), ("current", RtpAnalyzer))
    clocks = (("cpu", time.process_time), ("wall", time.perf_counter))
    print(f"ns per packet, best of {args.repeat} x {n} packets")
    print(f"{'stream':34s} {'ref cpu':>8s} {'new cpu':>8s} {'ref wall':>9s} {'new wall':>9s}")
    for name, pk in scenarios(n).items():
        best: dict[tuple[str, str], float] = {}
        for _ in range(args.repeat):
            for cname, clock in clocks:
                base = overhead(pk, times, clock)
                for tname, cls in targets:
                    spent = (measure(cls, pk, times, clock) - base) / n * 1e9
                    key = (tname, cname)
                    best[key] = min(best.get(key, spent), spent)
        row = [best[(t, c)] for c, _ in clocks for t, _ in targets]
        print(f"{name:34s} {row[0]:8.0f} {row[1]:8.0f} {row[2]:9.0f} {row[3]:9.0f}")


if __name__ == "__main__":
    main()
