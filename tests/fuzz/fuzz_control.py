#!/usr/bin/env python3
"""Fuzz the control plane of a live daemon.

Starts rtpproxy with udp:, cunix:, tcp: and one-shot unix: control sockets and sends
`--count` inputs (valid commands of every letter, their mutations, random bytes,
over-long tokens and cookies, NULs, `&&` chains): most over UDP from several pipelined
sockets, a share over the stream sockets (pipelined lines) and over the one-shot socket
(a connection per command). Every input must get a well-formed reply (UDP: matched by
cookie; a datagram the kernel dropped is retransmitted with the same cookie, which the
reply cache answers). At the end the daemon must still answer V, its log must show no
crashed greenlet, and its descriptor count must be back where it started.

    tests/fuzz/fuzz_control.py [--count N] [--seed S] [--ports LOW-HIGH] [--settle S] [--quiet]

Exit status 0 when everything held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from inputs import InputGen  # noqa: E402

from helpers import free_tcp_port, free_udp_port, short_tmpdir, start_proxy  # noqa: E402

UDP_LANES = 6
UDP_WINDOW = 24  # outstanding datagrams per UDP socket
UDP_RTO_S = 1.0
UDP_MAX_TRIES = 8
STREAM_BATCH = 48
STREAM_TIMEOUT_S = 20.0
ONESHOT_LANES = 4
MAX_STREAM_LINE = 8000
MAX_DATAGRAM = 9000
#: share of inputs per transport (the rest goes over UDP)
SHARE_STREAM = 0.004  # a pick sends a batch of STREAM_BATCH lines
SHARE_ONESHOT = 0.03
#: `I` is the only multi-line reply; these are its continuation lines.
I_CONTINUATION = (
    b"active sessions:",
    b"active streams:",
    b"packets received:",
    b"packets transmitted:",
    b"average load:",
)
#: An error is `E<n>`; anything else is a command's output (`G` alone: an empty line).
ERROR_REPLY = re.compile(rb"E\d+")
LOG_BAD = re.compile(r"Traceback|crash|died|failed|Exception", re.I)
#: Expected complaints about the (deliberately absent) notification target.
LOG_BENIGN = ("notification",)
FD_SETTLE_S = 8.0
#: descriptors the daemon may hold beyond its start (a client connection it has not
#: yet seen closed)
FD_TOLERANCE = 0


class Failure(Exception):
    pass


def well_formed(body: bytes) -> bool:
    """One reply: LF-terminated; an error is exactly `E<n>`; only `I` spans lines."""
    if not body.endswith(b"\n"):
        return False
    first = body.split(b"\n", 1)[0]
    if first.startswith(b"E") and not ERROR_REPLY.fullmatch(first):
        return False
    return body.count(b"\n") == 1 or body.startswith(b"sessions created:")


class Stats:
    def __init__(self) -> None:
        self.sent = {"udp": 0, "cunix": 0, "tcp": 0, "unix": 0}
        self.retransmits = 0
        self.failures: list[str] = []

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def fail(self, text: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(text)


# ---------------------------------------------------------------- lanes


class UdpLane:
    def __init__(self, index: int, addr: tuple, stats: Stats) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setblocking(False)
        self.addr = addr
        self.index = index
        self.seq = 0
        self.stats = stats
        self.pending: dict[bytes, list] = {}

    def want(self) -> int:
        return UDP_WINDOW - len(self.pending)

    def submit(self, body: bytes, long_cookie: bool) -> None:
        self.seq += 1
        cookie = f"{self.index}_{self.seq}".encode()
        if long_cookie:
            cookie = b"k" * (self.seq % 3000) + cookie
        payload = (cookie + b" " + body)[:MAX_DATAGRAM]
        self.pending[cookie] = [payload, time.monotonic(), 1]
        self._send(payload)

    def _send(self, payload: bytes) -> None:
        try:
            self.sock.sendto(payload, self.addr)
        except (BlockingIOError, ConnectionRefusedError):
            pass  # the retransmit timer covers it

    def on_readable(self) -> None:
        while True:
            try:
                reply = self.sock.recv(65536)
            except (BlockingIOError, ConnectionRefusedError):
                return
            cookie, sep, body = reply.partition(b" ")
            entry = self.pending.pop(cookie, None)
            if entry is None:
                continue  # the answer to a retransmitted duplicate
            if not sep or not well_formed(body):
                self.stats.fail(f"udp: malformed reply {reply[:120]!r} to {entry[0][:120]!r}")

    def check_timers(self, now: float) -> None:
        for cookie, entry in list(self.pending.items()):
            if now - entry[1] < UDP_RTO_S:
                continue
            if entry[2] >= UDP_MAX_TRIES:
                del self.pending[cookie]
                self.stats.fail(f"udp: no reply after {entry[2]} tries to {entry[0][:120]!r}")
                continue
            entry[1] = now
            entry[2] += 1
            self.stats.retransmits += 1
            self._send(entry[0])


def count_replies(lines: list[bytes]) -> int:
    return sum(1 for line in lines if not line.startswith(I_CONTINUATION))


class StreamLane:
    """A cunix/tcp connection: batches of LF-terminated lines, replies counted in order."""

    def __init__(self, kind: str, family: int, address, stats: Stats) -> None:
        self.kind = kind
        self.family = family
        self.address = address
        self.stats = stats
        self.sock: socket.socket | None = None
        self.expected = 0
        self.buf = b""
        self.deadline = 0.0
        self.batch: list[bytes] = []

    def connect(self) -> None:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(self.address)
        self.sock = sock

    @property
    def busy(self) -> bool:
        return self.expected > 0

    def submit(self, bodies: list[bytes]) -> None:
        assert self.sock is not None
        lines = [b.replace(b"\n", b" ")[:MAX_STREAM_LINE] + b"\n" for b in bodies]
        self.batch = lines
        self.expected = len(lines)
        self.buf = b""
        self.sock.settimeout(STREAM_TIMEOUT_S)
        self.sock.sendall(b"".join(lines))
        self.sock.setblocking(False)
        self.deadline = time.monotonic() + STREAM_TIMEOUT_S
        self.stats.sent[self.kind] += len(lines)

    def on_readable(self) -> bool:
        """False when the connection was closed by the daemon."""
        assert self.sock is not None
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        if not data:
            self.stats.fail(f"{self.kind}: connection closed with {self.expected} replies due")
            self.expected = 0
            return False
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            if not line.startswith(I_CONTINUATION) and not well_formed(line + b"\n"):
                self.stats.fail(f"{self.kind}: malformed reply {line[:120]!r}")
        self.expected -= count_replies(lines)
        if self.expected < 0:
            self.stats.fail(f"{self.kind}: {-self.expected} replies too many")
            self.expected = 0
        return True

    def check_timer(self, now: float) -> bool:
        if self.busy and now > self.deadline:
            self.stats.fail(f"{self.kind}: {self.expected} replies missing after a batch")
            self.expected = 0
            return False
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class OneShotLane:
    """unix: one connection per command, the reply is everything read until EOF."""

    def __init__(self, path: str, stats: Stats) -> None:
        self.path = path
        self.stats = stats
        self.sock: socket.socket | None = None
        self.buf = b""
        self.body = b""
        self.deadline = 0.0

    @property
    def busy(self) -> bool:
        return self.sock is not None

    def submit(self, body: bytes) -> None:
        body = body[:MAX_STREAM_LINE] or b" "
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(self.path)
        sock.sendall(body)
        sock.setblocking(False)
        self.sock, self.buf, self.body = sock, b"", body
        self.deadline = time.monotonic() + STREAM_TIMEOUT_S
        self.stats.sent["unix"] += 1

    def on_readable(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        if data:
            self.buf += data
            return
        if not self.buf.endswith(b"\n") or not self.buf:
            self.stats.fail(f"unix: bad reply {self.buf[:120]!r} to {self.body[:120]!r}")
        self.close()

    def check_timer(self, now: float) -> None:
        if self.busy and now > self.deadline:
            self.stats.fail(f"unix: no reply to {self.body[:120]!r}")
            self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


# ---------------------------------------------------------------- the run


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def send_fixed_cases(proxy, stats: Stats) -> None:
    """Datagrams without a usable cookie: the reply is a bare `E5`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for data in (b"", b" ", b"\t\r\n", b"   \n  "):
            for _ in range(3):
                s.sendto(data, proxy.udp_addr)
                try:
                    reply = s.recv(4096)
                    break
                except TimeoutError:
                    reply = None
            stats.sent["udp"] += 1
            if reply != b"E5\n":
                stats.fail(f"udp: {data!r} got {reply!r}, expected E5")


def fuzz(proxy, paths: dict, count: int, seed: int, progress: bool) -> Stats:
    stats = Stats()
    gen = InputGen(seed)
    rng = gen.rng
    sel = selectors.DefaultSelector()
    udp = [UdpLane(i, proxy.udp_addr, stats) for i in range(UDP_LANES)]
    for lane in udp:
        sel.register(lane.sock, selectors.EVENT_READ, lane)
    streams = [
        StreamLane("cunix", socket.AF_UNIX, paths["cunix"], stats),
        StreamLane("tcp", socket.AF_INET, paths["tcp"], stats),
        StreamLane("cunix", socket.AF_UNIX, paths["cunix"], stats),
        StreamLane("tcp", socket.AF_INET, paths["tcp"], stats),
    ]
    for lane in streams:
        lane.connect()
        sel.register(lane.sock, selectors.EVENT_READ, lane)
    oneshots = [OneShotLane(paths["unix"], stats) for _ in range(ONESHOT_LANES)]
    issued = 0
    started = last_report = time.monotonic()
    send_fixed_cases(proxy, stats)
    while True:
        now = time.monotonic()
        for lane in udp:
            while issued < count and lane.want() > 0:
                issued += 1
                roll = rng.random()
                if roll < SHARE_ONESHOT:
                    free = [o for o in oneshots if not o.busy]
                    if free:
                        free[0].submit(gen.next())
                        sel.register(free[0].sock, selectors.EVENT_READ, free[0])
                        continue
                if roll < SHARE_ONESHOT + SHARE_STREAM:
                    idle = [s for s in streams if not s.busy]
                    if idle:
                        n = min(STREAM_BATCH, count - issued + 1)
                        idle[0].submit([gen.next() for _ in range(n)])
                        issued += n - 1
                        continue
                lane.submit(gen.next(), long_cookie=rng.random() < 0.01)
                stats.sent["udp"] += 1
        busy = any(lane.pending for lane in udp) or any(s.busy for s in streams + oneshots)
        if issued >= count and not busy:
            break
        for key, _ in sel.select(timeout=0.05):
            lane = key.data
            if isinstance(lane, StreamLane):
                if not lane.on_readable():
                    reconnect(sel, lane)
            elif isinstance(lane, OneShotLane):
                sock = lane.sock
                lane.on_readable()
                if not lane.busy:
                    sel.unregister(sock)
            else:
                lane.on_readable()
        now = time.monotonic()
        for lane in udp:
            lane.check_timers(now)
        for lane in streams:
            if not lane.check_timer(now):
                reconnect(sel, lane)
        for lane in oneshots:
            sock = lane.sock
            lane.check_timer(now)
            if sock is not None and not lane.busy:
                sel.unregister(sock)
        if progress and now - last_report >= 10:
            last_report = now
            rate = issued / (now - started)
            print(f"  {issued} inputs, {rate:.0f}/s, {len(stats.failures)} failures", flush=True)
    for lane in udp:
        lane.sock.close()
    for lane in streams:
        lane.close()
    sel.close()
    return stats


def reconnect(sel: selectors.BaseSelector, lane: StreamLane) -> None:
    if lane.sock is not None:
        sel.unregister(lane.sock)
        lane.close()
    lane.connect()
    sel.register(lane.sock, selectors.EVENT_READ, lane)


def scan_log(text: str) -> list[str]:
    bad = []
    for line in text.splitlines():
        if LOG_BAD.search(line) and not any(b in line for b in LOG_BENIGN):
            bad.append(line)
    return bad


def show_sockets(pid: int) -> None:
    subprocess.run(f"ss -apn | grep 'pid={pid},'", shell=True, check=False)


def settle_fds(pid: int, baseline: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    fds = proc_status(pid)["fds"]
    while fds > baseline and time.monotonic() < deadline:
        time.sleep(0.2)
        fds = proc_status(pid)["fds"]
    return fds


def parse_ports(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--ports", type=parse_ports, default=(30000, 31999))
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--settle", type=float, default=0.0, help="seconds to wait for a last RSS sample"
    )
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    tmp = short_tmpdir()
    paths = {
        "cunix": os.path.join(tmp, "c.sock"),
        "unix": os.path.join(tmp, "u.sock"),
        "tcp": ("127.0.0.1", free_tcp_port()),
    }
    udp_port = free_udp_port()
    flags = (
        "-s", f"udp:127.0.0.1:{udp_port}",
        "-s", f"cunix:{paths['cunix']}",
        "-s", f"tcp:127.0.0.1:{paths['tcp'][1]}",
        "-s", f"unix:{paths['unix']}",
        "-n", f"unix:{tmp}/nobody.sock",
        "-l", "127.0.0.1",
        "-T", "3", "-W", "3", "-d", os.environ.get("FUZZ_LOG", "WARN"),
    )  # fmt: skip
    print(f"fuzz_control: {args.count} inputs, seed {seed}", flush=True)
    proxy = start_proxy(*flags, ports=args.ports)
    failures: list[str] = []
    try:
        pid = proxy.pid
        for _ in range(20):  # warm up every code path that allocates once
            proxy.cmd("G nsess_created")
        before = proc_status(pid)
        t0 = time.monotonic()
        stats = fuzz(proxy, paths, args.count, seed, progress=not args.quiet)
        duration = time.monotonic() - t0
        failures += stats.failures
        if proxy.cmd("V") != "20040107":
            failures.append("V not answered after the run")
        proxy.cmd("X")
        after_fds = settle_fds(pid, before["fds"], FD_SETTLE_S)
        after = proc_status(pid)
        if after_fds > before["fds"] + FD_TOLERANCE:
            failures.append(f"descriptors grew from {before['fds']} to {after_fds}")
            show_sockets(pid)
        settled = None
        if args.settle > 0:  # the UDP reply cache holds entries for 35-38 s
            time.sleep(args.settle)
            settled = proc_status(pid)["VmRSS"]
        status = proxy.stop(signal.SIGTERM, timeout=10)
        if status != 0:
            failures.append(f"SIGTERM exit status {status}")
        bad_log = scan_log(proxy.stderr_text())
        failures += [f"log: {line}" for line in bad_log[:20]]
        total = stats.total
        print(f"inputs tried: {total} ({stats.sent}), {total / duration:.0f}/s")
        print(f"duration: {duration:.1f} s, UDP retransmits: {stats.retransmits}")
        print(f"crashes: {len(bad_log)} (log lines with Traceback/crash/died/failed)")
        print(f"fds: {before['fds']} -> {after_fds} (drift {after_fds - before['fds']:+d})")
        print(
            f"RSS: {before['VmRSS']} -> {after['VmRSS']} KiB "
            f"(drift {after['VmRSS'] - before['VmRSS']:+d} KiB, peak {after['VmHWM']} KiB)"
        )
        if settled is not None:
            drift = settled - before["VmRSS"]
            print(f"RSS after {args.settle:.0f} s idle: {settled} KiB (drift {drift:+d} KiB)")
    finally:
        proxy.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    for line in failures:
        print(f"FAIL: {line}")
    print("fuzz_control: " + ("FAILED" if failures else "OK"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
