#!/usr/bin/env python3
"""Capacity and cost benchmark: rtpproxy vs rtpengine vs a bare Python relay.

For every target (relay under test) and every N of the ladder, interleaved
(N=100 for all targets, then N=200 for all, ...), the driver starts the target
fresh, pinned to one core, and runs bench/loadgen pinned to the other core.
The load generator sets N calls up over the UDP control socket (U, L), sends
RTP both ways at 50 pps per direction, then deletes the calls (D).  During the
generator's measurement window the driver samples the target's
utime+stime from /proc/<pid>/stat.

A point holds when loss <= --loss-limit (percent) and p99 <= --p99-limit-ms.
N is raised for a target until a point fails (a failing point is re-run once
up to --retries times,
to rule out a transient disturbance); the largest N that held is reported,
with the CPU cost per relayed packet and the latency at --fixed-n.

Targets: ``rtpproxy`` (this project's daemon), ``rtpproxy-kernel`` (the same with
--kernel-offload: the kernel forwards the media), ``rtpengine`` (Debian's
rtpengine-daemon, user space), ``bare`` (bench/bare_relay.py), ``direct`` (no relay:
bench/direct_ctl.py points every call's media straight from caller to callee; the
floor of the whole-machine CPU comparison, measured at --cpu-n only).  Select with
--targets or the RTPP_BENCH_TARGETS environment variable (comma separated).

On loopback the kernel charges a packet's forwarding to the process that sent it
(here the generator), so a relay's own CPU says nothing about the kernel mode: the
driver also reads the busy time of the whole machine (all cores: wall time less the
idle time of /proc/stat) over the window, and compares targets by that figure per
relayed packet minus the same figure for ``direct``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import selectors
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ALL_TARGETS = ("rtpproxy", "rtpproxy-kernel", "rtpengine", "bare", "direct")
#: Targets measured only at the CPU comparison point (not on the capacity ladder).
CPU_ONLY = ("direct",)
KERNEL_TABLE_PREFIX = "rtpproxy_"
#: The kernel mode binds a call when both parties have sent (a few ms of CPU each,
#: mostly conntrack requests): its warm-up is this much longer per call, so that every
#: call is bound before the window opens.
KERNEL_BIND_S = 0.004
DEFAULT_LADDER = (100, 200, 400, 800, 1200, 1600, 2000, 2400, 3200, 4000, 4800, 6400)
GEN_BUSY_LIMIT = 0.90
NOISE_LIMIT = 0.10


def free_udp_port() -> int:
    """A free control port below the ephemeral range, so no other socket takes it
    between this check and the target's bind."""
    for _ in range(200):
        port = random.randrange(9000, 10000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP port in 9000-9999")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime/stime are fields 14/15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def socket_drops(pid: int) -> int | None:
    """Datagrams dropped by the process's UDP sockets (full receive buffers)."""
    try:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        total = 0
        with open(f"/proc/{pid}/net/udp") as f:
            next(f)
            for line in f:
                cols = line.split()
                if len(cols) >= 13 and cols[9] in inodes:
                    total += int(cols[12])
        return total
    except OSError:
        return None


def pin(cpu: str, cmd: list[str]) -> list[str]:
    """Prefix cmd with taskset unless pinning is off (cpu == "none")."""
    return cmd if cpu == "none" else ["taskset", "-c", cpu, *cmd]


def core_ticks(cpu: str) -> tuple[int, int] | None:
    """(busy ticks other than softirq, softirq ticks) of one CPU from /proc/stat."""
    if not cpu.isdigit():
        return None
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:9]]
                user, nice, system, _idle, _iowait, irq, softirq, steal = v
                return user + nice + system + irq + steal, softirq
    return None


def machine_busy_s() -> float:
    """CPU seconds all cores together have been busy, for differences over a window:
    wall time times the cores, less what /proc/stat counts as idle, iowait and steal.

    The idle times are measured (tickless kernels account them exactly), while user,
    system, irq and softirq are sampled at each tick: on this kind of machine their
    sum fell some 10 % short of the processes' own CPU time under a UDP load, so
    the busy time is what is not idle."""
    cores, idle = 0, 0
    with open("/proc/stat") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0].startswith("cpu") and fields[0] != "cpu":
                cores += 1
                idle += int(fields[4]) + int(fields[5]) + int(fields[8])  # idle iowait steal
    return time.monotonic() * cores - idle / CLK_TCK


def kernel_tables(low: int) -> list[list[str]]:
    """[family, name] of the nftables tables of a --kernel-offload daemon with media
    ports from `low`."""
    try:
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    tables = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("table")]
    return [t for t in tables if t[-1].startswith(f"{KERNEL_TABLE_PREFIX}{low}_")]


def port_range(n_calls: int) -> tuple[int, int]:
    """Media ports for the target: 4 per call (RTP+RTCP per leg) with head-room."""
    lo = 10000
    return lo, min(lo + max(2000, 6 * n_calls), 64998)


@dataclass
class Target:
    name: str
    python: str
    relay_cpu: str

    def command(self, ctl_port: int, n_calls: int) -> list[str]:
        lo, hi = port_range(n_calls)
        if self.name in ("rtpproxy", "rtpproxy-kernel"):
            cmd = [self.python, str(ROOT / "rtpproxy.py"), "-f", "-F"]
            cmd += ["-s", f"udp:127.0.0.1:{ctl_port}", "-l", "127.0.0.1"]
            cmd += ["-m", str(lo), "-M", str(hi), "-T", "60", "-d", "ERR"]
            if self.name == "rtpproxy-kernel":
                cmd.append("--kernel-offload")
        elif self.name == "direct":
            cmd = [self.python, str(BENCH / "direct_ctl.py"), "--ctl", f"127.0.0.1:{ctl_port}"]
        elif self.name == "rtpengine":
            cmd = ["rtpengine", "--config-file=none", "--table=-1", "--delete-delay=0"]
            cmd += ["--num-threads=1", "--foreground", f"--listen-udp=127.0.0.1:{ctl_port}"]
            cmd += ["--interface=127.0.0.1", f"--port-min={lo}", f"--port-max={hi}"]
            cmd += ["--log-stderr", "--log-level=3"]
        elif self.name == "bare":
            cmd = [self.python, str(BENCH / "bare_relay.py"), "--ctl", f"127.0.0.1:{ctl_port}"]
            cmd += ["--port-min", str(lo), "--port-max", str(hi)]
        else:
            raise ValueError(self.name)
        return pin(self.relay_cpu, cmd)

    def unavailable(self) -> str | None:
        if self.name == "rtpengine" and not shutil.which("rtpengine"):
            return "rtpengine not installed (apt-get install rtpengine-daemon)"
        if self.name.startswith("rtpproxy") and not (ROOT / "rtpproxy.py").exists():
            return "rtpproxy.py not found"
        if self.name == "rtpproxy-kernel" and (os.geteuid() != 0 or not shutil.which("nft")):
            return "--kernel-offload needs root (CAP_NET_ADMIN) and nftables"
        return None


class Running:
    """A started target: process, control port, stderr log."""

    def __init__(self, target: Target, n_calls: int, log_path: Path) -> None:
        self.target = target.name
        self.low = port_range(n_calls)[0]
        self.ctl_port = free_udp_port()
        self.cmd = target.command(self.ctl_port, n_calls)
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 15.0) -> str | None:
        """None when the control socket answers V; else the reason."""
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            s.connect(("127.0.0.1", self.ctl_port))
            n = 0
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return f"exited with status {self.proc.returncode}: {self.log_tail()}"
                n += 1
                try:
                    s.send(b"ready_%d V" % n)
                    reply = s.recv(256)
                except OSError:
                    continue
                if reply.split()[1:2] == [b"20040107"]:
                    return self.kernel_check()
        return f"no reply to V within {timeout:.0f} s: {self.log_tail()}"

    def kernel_check(self) -> str | None:
        """For rtpproxy-kernel: None once the daemon's nftables table exists."""
        if self.target != "rtpproxy-kernel" or kernel_tables(self.low):
            return None
        return f"kernel offload not active (no nftables table): {self.log_tail()}"

    def log_tail(self, n: int = 300) -> str:
        self.log.flush()
        try:
            text = self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""
        return " ".join(text.split()) or "(no output)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self.target == "rtpproxy-kernel":
            for family, name in kernel_tables(self.low):  # left by a daemon that was killed
                subprocess.run(["nft", "delete", "table", family, name], check=False)


@dataclass
class Point:
    target: str
    calls: int
    ok: bool = False
    reason: str = ""
    result: dict = field(default_factory=dict)
    relay_cpu_s: float = 0.0
    window_s: float = 0.0
    attempt: int = 1
    elapsed_s: float = 0.0
    # share of the window (0..1) on each pinned core: softirq, and busy time of
    # anything but the measured process (other processes, steal)
    relay_core_softirq: float = 0.0
    relay_core_other: float = 0.0
    gen_core_other: float = 0.0
    gen_core_busy_s: float = 0.0
    relay_drops: int | None = None
    machine_cpu_s: float = 0.0  # busy time of all cores over the window

    @property
    def pps(self) -> float:
        w = self.result.get("window_s") or 0
        return self.result.get("rx_window_arrivals", 0) / w if w else 0.0

    @property
    def cpu_us_per_pkt(self) -> float | None:
        pkts = self.result.get("rx_window_arrivals", 0)
        return self.relay_cpu_s / pkts * 1e6 if pkts else None

    @property
    def machine_us_per_pkt(self) -> float | None:
        """Whole-machine CPU (all cores, the generator and the kernel included) per
        packet delivered in the window."""
        pkts = self.result.get("rx_window_arrivals", 0)
        if not pkts or not self.machine_cpu_s or not self.machine_consistent:
            return None
        return self.machine_cpu_s / pkts * 1e6

    @property
    def machine_consistent(self) -> bool:
        """The whole machine was at least as busy as the target and the generator (two
        ticks of slack); a run where it was not is left out of the machine figures."""
        own = self.relay_cpu_s + float(self.result.get("gen_cpu_s", 0.0))
        return self.machine_cpu_s + 2 / CLK_TCK >= own

    @property
    def relay_busy(self) -> float:
        return self.relay_cpu_s / self.window_s if self.window_s else 0.0

    @property
    def gen_busy(self) -> float:
        return float(self.result.get("gen_busy", 0.0))

    @property
    def flags(self) -> str:
        f = []
        if self.gen_busy > GEN_BUSY_LIMIT:
            f.append("GEN>90%")
        if self.result.get("gen_rx_drops"):
            f.append(f"gen-drops={self.result['gen_rx_drops']}")
        if self.relay_drops:
            f.append(f"relay-drops={self.relay_drops}")
        if self.relay_core_other > NOISE_LIMIT or self.gen_core_other > NOISE_LIMIT:
            f.append(
                f"NOISY(other load {self.relay_core_other * 100:.0f}%/"
                f"{self.gen_core_other * 100:.0f}%)"
            )
        if self.attempt > 1:
            f.append(f"try{self.attempt}")
        if self.result and self.machine_cpu_s and not self.machine_consistent:
            f.append("machine-stat-short")
        late = self.result.get("max_late_us", 0) if self.result else 0
        if late > 5000:
            f.append(f"gen-stall={late / 1000:.0f}ms")
        return ",".join(f)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loadgen = str(Path(args.loadgen).resolve())
        OUT.mkdir(exist_ok=True)
        self.points: list[Point] = []  # verdict per (target, N)
        self.cpu_rounds: list[Point] = []  # further runs at the CPU comparison point
        self.runs: list[Point] = []  # every run, retries included
        self.unavailable: dict[str, str] = {}
        self.commands: dict[str, str] = {}
        self.loadgen_cmd = ""
        self.t_start = time.monotonic()

    def log(self, msg: str) -> None:
        el = time.monotonic() - self.t_start
        print(f"[{el:6.0f}s] {msg}", file=sys.stderr, flush=True)

    def loadgen_argv(self, ctl_port: int, n: int, target: str = "") -> list[str]:
        a = self.args
        return pin(
            a.gen_cpu,
            [
                self.loadgen,
                *(["--direct"] if target == "direct" else []),
                "--ctl",
                f"127.0.0.1:{ctl_port}",
                "--calls",
                str(n),
                "--duration",
                str(a.duration),
                "--warmup",
                str(a.warmup + (n * KERNEL_BIND_S if target == "rtpproxy-kernel" else 0.0)),
                "--drain",
                str(a.drain),
                "--socks",
                str(a.socks),
            ],
        )

    def run_point(self, target: Target, n: int, attempt: int = 1) -> Point:
        t0 = time.monotonic()
        pt = Point(target.name, n, attempt=attempt)
        for start in range(3):  # a start can lose its control port to another process
            run = Running(target, n, OUT / f"{target.name}-{n}-{attempt}.log")
            why = run.wait_ready()
            if not why or start == 2 or "in use" not in why:
                break
            run.stop()
        self.commands.setdefault(target.name, shlex.join(run.cmd))
        try:
            if why:
                pt.reason = f"target not ready: {why}"
                return pt
            argv = self.loadgen_argv(run.ctl_port, n, target.name)
            if not self.loadgen_cmd:
                self.loadgen_cmd = shlex.join(argv)
            self._drive(run, argv, pt)
        finally:
            run.stop()
            pt.elapsed_s = time.monotonic() - t0
        return pt

    def _drive(self, run: Running, argv: list[str], pt: Point) -> None:
        a = self.args
        budget = a.warmup + a.duration + a.drain + 120 + pt.calls / 20
        gen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            self._collect(run, gen, pt, budget)
        finally:
            if gen.poll() is None:
                gen.kill()
                gen.wait()

    def _collect(self, run: Running, gen: subprocess.Popen, pt: Point, budget: float) -> None:
        a = self.args
        sel = selectors.DefaultSelector()
        assert gen.stdout is not None and gen.stderr is not None
        sel.register(gen.stdout, selectors.EVENT_READ, "out")
        sel.register(gen.stderr, selectors.EVENT_READ, "err")
        cpu0 = t0 = drops0 = None
        stderr_lines: list[str] = []
        deadline = time.monotonic() + budget
        open_streams = 2
        while open_streams and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                line = key.fileobj.readline()
                if not line:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                if key.data == "err":
                    stderr_lines.append(line.strip())
                    continue
                if line.startswith("MEASURE_START"):
                    drops0 = socket_drops(run.proc.pid)
                    machine0 = machine_busy_s()
                    cpu0, t0 = self._sample(run)
                    cores0 = core_ticks(a.relay_cpu), core_ticks(a.gen_cpu)
                elif line.startswith("MEASURE_END"):
                    cpu1, t1 = self._sample(run)
                    pt.machine_cpu_s = machine_busy_s() - machine0
                    cores1 = core_ticks(a.relay_cpu), core_ticks(a.gen_cpu)
                    drops1 = socket_drops(run.proc.pid)
                    if drops0 is not None and drops1 is not None:
                        pt.relay_drops = drops1 - drops0
                    if cpu0 is not None and cpu1 is not None:
                        pt.relay_cpu_s = cpu1 - cpu0
                        pt.window_s = t1 - t0
                        self._core_shares(pt, cores0, cores1)
                elif line.startswith("RESULT "):
                    pt.result = json.loads(line[7:])
        try:
            gen.wait(timeout=5 if open_streams == 0 else 0.1)
        except subprocess.TimeoutExpired:
            gen.kill()
            gen.wait()
            pt.reason = "load generator timed out"
        sel.close()
        r = pt.result
        if r and pt.window_s > 0:
            other = pt.gen_core_busy_s - float(r.get("gen_cpu_s", 0.0))
            pt.gen_core_other = max(0.0, other) / pt.window_s
        if not r:
            pt.reason = pt.reason or "no result from load generator: " + " ".join(stderr_lines[-3:])
        elif "error" in r:
            pt.reason = r["error"]
        elif r["tx"] == 0:
            pt.reason = "nothing sent"
        elif run.proc.poll() is not None:
            pt.reason = f"target exited during the run: {run.log_tail()}"
        elif r["loss_pct"] > a.loss_limit:
            pt.reason = f"loss {r['loss_pct']:.3f}% > {a.loss_limit}%"
        elif r["lat_p99_us"] > a.p99_limit_ms * 1000:
            pt.reason = f"p99 {r['lat_p99_us'] / 1000:.2f} ms > {a.p99_limit_ms} ms"
        else:
            pt.ok = True

    @staticmethod
    def _core_shares(pt: Point, c0: tuple, c1: tuple) -> None:
        w = pt.window_s
        if c0[0] and c1[0] and w > 0:
            busy = (c1[0][0] - c0[0][0]) / CLK_TCK
            pt.relay_core_softirq = (c1[0][1] - c0[0][1]) / CLK_TCK / w
            pt.relay_core_other = max(0.0, busy - pt.relay_cpu_s) / w
        if c0[1] and c1[1] and w > 0:
            pt.gen_core_busy_s = (c1[1][0] - c0[1][0]) / CLK_TCK

    @staticmethod
    def _sample(run: Running) -> tuple[float | None, float]:
        t = time.monotonic()
        try:
            return proc_cpu_seconds(run.proc.pid), t
        except (OSError, ValueError, IndexError):
            return None, t

    def describe(self, pt: Point) -> str:
        r = pt.result
        if not r or "error" in r:
            return f"{pt.target:9s} N={pt.calls:5d} FAIL ({pt.reason})"
        cpp = pt.cpu_us_per_pkt
        return (
            f"{pt.target:9s} N={pt.calls:5d} {'ok  ' if pt.ok else 'FAIL'} "
            f"loss={r['loss_pct']:.3f}% p50={r['lat_p50_us']:.0f}us "
            f"p99={r['lat_p99_us']:.0f}us max={r['lat_max_us']:.0f}us "
            f"relay={pt.relay_busy * 100:.0f}% si={pt.relay_core_softirq * 100:.0f}% "
            f"cpu/pkt={'-' if cpp is None else f'{cpp:.2f}us'} "
            f"machine/pkt={fmt_us(pt.machine_us_per_pkt, 2)}us "
            f"gen={pt.gen_busy * 100:.0f}% {pt.flags} {pt.reason}"
        )

    def measure(self, target: Target, n: int) -> Point:
        pt = self.run_point(target, n)
        self.runs.append(pt)
        self.log(self.describe(pt))
        # Disturbances (other processes, the hypervisor) only ever make a point
        # worse, so a failing point is re-run and the first pass counts.
        for attempt in range(2, self.args.retries + 2):
            if pt.ok or not pt.result or "error" in pt.result:
                break
            again = self.run_point(target, n, attempt=attempt)
            self.runs.append(again)
            self.log(self.describe(again))
            if again.ok or (again.result and "error" not in again.result and worse(pt, again)):
                pt = again  # a held run, else the least disturbed failing one
        self.points.append(pt)
        return pt

    def run(self, targets: list[Target]) -> None:
        alive = []
        for t in targets:
            why = t.unavailable()
            if why:
                self.unavailable[t.name] = why
                self.log(f"{t.name}: skipped: {why}")
            else:
                alive.append(t)
        measured: dict[str, set[int]] = {t.name: set() for t in alive}
        stopped: set[str] = set()
        for n in self.args.ladder:
            for t in alive:
                if t.name in stopped or t.name in CPU_ONLY:
                    continue
                if time.monotonic() - self.t_start > self.args.max_minutes * 60:
                    self.log(f"time budget of {self.args.max_minutes} min used: stop raising N")
                    stopped.update(x.name for x in alive)
                    break
                pt = self.measure(t, n)
                measured[t.name].add(n)
                if not pt.ok:
                    stopped.add(t.name)
                    if not pt.result or "error" in pt.result:
                        if n == self.args.ladder[0]:
                            self.unavailable[t.name] = pt.reason
        # The latency and CPU comparison points are measured for every target that runs.
        for t in alive:
            points = (
                (self.args.cpu_n,) if t.name in CPU_ONLY else (self.args.fixed_n, self.args.cpu_n)
            )
            for n in points:
                if n not in measured[t.name] and t.name not in self.unavailable:
                    self.measure(t, n)
                    measured[t.name].add(n)
        # CPU per packet moves with whatever else the machine does: more rounds at the
        # comparison point, interleaved target by target, and the median is reported.
        for _ in range(self.args.cpu_rounds - 1):
            for t in alive:
                if t.name not in self.unavailable:
                    pt = self.run_point(t, self.args.cpu_n)
                    self.runs.append(pt)
                    self.cpu_rounds.append(pt)
                    self.log(self.describe(pt))

    def cpu_samples(self, name: str) -> list[float]:
        """CPU us/pkt of every held run of `name` at the CPU comparison point."""
        first = self.at(name, self.args.cpu_n)
        runs = ([first] if first else []) + [p for p in self.cpu_rounds if p.target == name]
        return [p.cpu_us_per_pkt for p in runs if p.ok and p.cpu_us_per_pkt]

    def machine_samples(self, name: str) -> list[float]:
        """Whole-machine CPU us/pkt of every held run of `name` at the comparison point."""
        first = self.at(name, self.args.cpu_n)
        runs = ([first] if first else []) + [p for p in self.cpu_rounds if p.target == name]
        return [p.machine_us_per_pkt for p in runs if p.ok and p.machine_us_per_pkt]

    def machine_median(self, name: str) -> float | None:
        samples = sorted(self.machine_samples(name))
        return statistics.median(samples) if samples else None

    def machine_section(self, targets: list[str]) -> list[str]:
        """Whole-machine CPU per relayed packet at --cpu-n, above the floor (direct)."""
        a = self.args
        floor = self.machine_median("direct")
        if floor is None:
            return []
        engine = self.machine_median("rtpengine")
        engine_above = engine - floor if engine is not None else None
        lines = [
            "",
            f"## Whole-machine CPU per relayed packet at N={a.cpu_n}",
            "",
            "Busy time of all cores (wall time less /proc/stat's idle, iowait and steal) "
            "over the window, per packet delivered to the generator; median of the rounds. "
            "The floor is `direct`: the same generator with no relay, each call's media "
            "sent straight from caller to callee. On loopback the kernel charges forwarding "
            "to the sending process, so for the kernel mode only this figure counts.",
            "",
            "| target | machine us/pkt | above the floor | / rtpengine's above the floor "
            "| generator-limited runs | every round |",
            "|---|---|---|---|---|---|",
        ]
        for name in targets:
            med = self.machine_median(name)
            if med is None:
                continue
            above = med - floor
            ratio = f"{above / engine_above:.2f}" if engine_above else "-"
            runs = [p for p in self.runs if p.target == name and p.calls == a.cpu_n]
            limited = sum(1 for p in runs if p.gen_busy > GEN_BUSY_LIMIT)
            rounds = ", ".join(f"{v:.2f}" for v in self.machine_samples(name))
            lines.append(
                f"| {name} | {med:.2f} | {'-' if name == 'direct' else f'{above:.2f}'} "
                f"| {'-' if name in ('direct', 'rtpengine') else ratio} "
                f"| {limited} of {len(runs)} | {rounds} |"
            )
        return lines

    def cpu_median(self, name: str) -> float | None:
        samples = sorted(self.cpu_samples(name))
        return statistics.median(samples) if samples else None

    # -- report ---------------------------------------------------------------

    def best(self, name: str) -> Point | None:
        held = [p for p in self.points if p.target == name and p.ok]
        # the ladder stops at the first failure, so the largest passing N is the answer
        return max(held, key=lambda p: p.calls) if held else None

    def at(self, name: str, n: int) -> Point | None:
        for p in self.points:
            if p.target == name and p.calls == n:
                return p
        return None

    def report(self, targets: list[str], argv: list[str]) -> str:
        a = self.args
        now = dt.datetime.now().astimezone()
        lines = [
            "# Benchmark results",
            "",
            f"Date: {now:%Y-%m-%d %H:%M %Z}  ",
            f"Machine: {machine_summary()}  ",
            f"Run time: {(time.monotonic() - self.t_start) / 60:.1f} min",
            "",
            "Pass criteria per point: loss <= "
            f"{a.loss_limit}% and p99 one-way latency <= {a.p99_limit_ms} ms, with "
            f"{a.duration:g} s of measured traffic after {a.warmup:g} s of warm-up; "
            "50 packets/s per direction per call (100 relayed packets/s per call), "
            f"relay pinned to CPU {a.relay_cpu}, load generator to CPU {a.gen_cpu}. "
            "CPU per packet = relay utime+stime over the window / packets it delivered "
            "in the window. Latency = kernel receive time at the generator minus the send "
            "time stamped in the payload (so it includes two loopback hops; the bare "
            "socket-to-socket loopback floor is given below).",
            "",
            *self.noise_warning(),
            "## Summary",
            "",
            f"| target | largest N held | relayed pps at that N | CPU us/pkt at N={a.fixed_n}"
            f" | CPU us/pkt at N={a.cpu_n} (median) | CPU us/pkt at largest N"
            f" | p50 at N={a.fixed_n}"
            f" | p99 at N={a.fixed_n} | max at N={a.fixed_n} | disturbed runs |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name in targets:
            if name in self.unavailable:
                lines.append(f"| {name} | not measured: {self.unavailable[name]} |||||||||")
                continue
            if name in CPU_ONLY:
                continue
            b = self.best(name)
            f = self.at(name, a.fixed_n)
            lines.append(
                "| "
                + " | ".join(
                    [
                        name,
                        f"{b.calls}{mark(b)}" if b else f"none (< {a.ladder[0]})",
                        f"{b.pps:,.0f}" if b else "-",
                        fmt_us(f.cpu_us_per_pkt if f else None, 2) + mark(f),
                        fmt_us(self.cpu_median(name), 2),
                        fmt_us(b.cpu_us_per_pkt if b else None, 2),
                        lat(f, "lat_p50_us"),
                        lat(f, "lat_p99_us"),
                        lat(f, "lat_max_us"),
                        self.disturbed(name),
                    ]
                )
                + " |"
            )
        lines += ["", "## Ratios", ""]
        pairs = [
            ("rtpproxy", "rtpengine"),
            ("rtpproxy", "bare"),
            ("bare", "rtpengine"),
            ("rtpproxy-kernel", "rtpengine"),
        ]
        rows = []
        for x, y in pairs:
            if x in targets and y in targets:
                rows.append(self.ratio_row(x, y))
        if rows:
            lines += [
                f"| ratio | largest N held | CPU/pkt at N={a.fixed_n}"
                f" | CPU/pkt at N={a.cpu_n} (medians)"
                f" | p50 at N={a.fixed_n} | p99 at N={a.fixed_n} |",
                "|---|---|---|---|---|---|",
                *rows,
            ]
        rounds = [
            f"{name} " + ", ".join(f"{v:.2f}" for v in self.cpu_samples(name))
            for name in targets
            if self.cpu_samples(name)
        ]
        if rounds:
            lines += ["", f"CPU us/pkt at N={a.cpu_n}, every round: " + "; ".join(rounds) + "."]
        lines += self.machine_section(targets)
        lines += [
            "",
            "## All points",
            "",
            "| target | N | verdict | relayed pps | loss % | p50 | p99 | max | relay CPU % "
            "| relay core softirq % | CPU us/pkt | generator CPU % | setup s | notes |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in sorted(
            self.points, key=lambda p: targets.index(p.target) if p.target in targets else 9
        ):
            r = p.result
            if not r or "error" in r:
                lines.append(f"| {p.target} | {p.calls} | FAIL ||||||||||| {p.reason} |")
                continue
            lines.append(
                f"| {p.target} | {p.calls} | {'held' if p.ok else 'FAIL'} | {p.pps:,.0f} "
                f"| {r['loss_pct']:.3f} | {lat(p, 'lat_p50_us')} | {lat(p, 'lat_p99_us')} "
                f"| {lat(p, 'lat_max_us')} | {p.relay_busy * 100:.0f} "
                f"| {p.relay_core_softirq * 100:.0f} "
                f"| {fmt_us(p.cpu_us_per_pkt, 2)} | {p.gen_busy * 100:.0f} "
                f"| {r.get('setup_s', 0):.2f} | {' '.join(x for x in (p.flags, p.reason) if x)} |"
            )
        lb = [p.result.get("loopback_p50_us") for p in self.runs if p.result]
        lb = [x for x in lb if x and x > 0]
        lines += [
            "",
            "GEN>90% marks a point where the load generator itself was more than 90 % busy "
            "(its figures are then an upper bound on the relay's latency and loss); "
            "gen-drops and relay-drops count datagrams dropped by the generator's and by the "
            "target's sockets (full receive buffers) during the window; tryN marks "
            "the N-th run of a point (a point holds if any run held); gen-stall=X marks a "
            "run where the generator sent a slot X ms late (it was not running); "
            "NOISY(a%/b%) marks a run where other processes (or the hypervisor) used more "
            "than 10 % of the relay's core (a) "
            "or of the generator's core (b) during the window. Relay core softirq % is "
            "kernel packet processing on the relay's core that the kernel's tick accounting "
            "does not charge to the relay process (not included in CPU us/pkt).",
        ]
        if lb:
            lines.append(
                f"Socket-to-socket loopback latency without any relay (p50): {min(lb):.1f} us."
            )
        lines += [
            "",
            "## Commands",
            "",
            "```",
            "make bench    # = bench/run.sh: builds bench/out/loadgen, installs rtpengine-daemon",
            "              #   if missing, then:",
            shlex.join([sys.executable, *argv]) if argv else "",
            "```",
            "",
            "Targets as started for one point (control port free, media port range sized to N):",
            "",
            "```",
            *[f"{k}: {v}" for k, v in self.commands.items()],
            "```",
            "",
            "Load generator for one point:",
            "",
            "```",
            self.loadgen_cmd,
            "```",
            "",
            "Versions: " + versions(),
            "",
            "How the relay's per-packet path got here, and what was tried and dropped: "
            "bench/EXPERIMENTS.md.",
            "",
        ]
        return "\n".join(lines)

    def noise_warning(self) -> list[str]:
        bad = [p for p in self.runs if "NOISY" in p.flags or "gen-stall" in p.flags]
        if not self.runs or len(bad) * 4 < len(self.runs):
            return []
        return [
            f"**Warning: {len(bad)} of {len(self.runs)} runs were disturbed** (other load on "
            "the pinned cores, or the generator not running for over 5 ms: see the notes "
            "column). Latency and the largest N held are then lower bounds for what the "
            "relays do on a quiet machine; CPU per packet is less affected. Re-run on an "
            "idle machine for figures to quote.",
            "",
        ]

    def disturbed(self, name: str) -> str:
        runs = [p for p in self.runs if p.target == name]
        bad = [p for p in runs if "NOISY" in p.flags or "gen-stall" in p.flags]
        return f"{len(bad)} of {len(runs)}"

    def ratio_row(self, x: str, y: str) -> str:
        a = self.args
        bx, by = self.best(x), self.best(y)
        fx, fy = self.at(x, a.fixed_n), self.at(y, a.fixed_n)

        def rat(u: float | None, v: float | None) -> str:
            if u is None or not v:
                return "-"
            r = u / v
            return f"{r:.0f}" if r >= 100 else f"{r:.3g}" if r >= 0.01 else f"{r:.4f}"

        cells = [
            f"{x} / {y}",
            rat(bx.calls if bx else None, by.calls if by else None),
            rat(fx.cpu_us_per_pkt if fx else None, fy.cpu_us_per_pkt if fy else None),
            rat(self.cpu_median(x), self.cpu_median(y)),
            rat(lat_v(fx, "lat_p50_us"), lat_v(fy, "lat_p50_us")),
            rat(lat_v(fx, "lat_p99_us"), lat_v(fy, "lat_p99_us")),
        ]
        return "| " + " | ".join(cells) + " |"


def worse(a: Point, b: Point) -> bool:
    """Whether failing run a is worse than failing run b (more loss, then higher p99)."""
    ra, rb = a.result or {}, b.result or {}
    if "error" in ra or not ra:
        return True
    return (ra["loss_pct"], ra["lat_p99_us"]) > (rb["loss_pct"], rb["lat_p99_us"])


def mark(p: Point | None) -> str:
    return " *" if p is not None and p.gen_busy > GEN_BUSY_LIMIT else ""


def fmt_us(v: float | None, nd: int = 0) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def lat_v(p: Point | None, key: str) -> float | None:
    if p is None or not p.result or "error" in p.result:
        return None
    return p.result.get(key)


def lat(p: Point | None, key: str) -> str:
    v = lat_v(p, key)
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} us"


def machine_summary() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model or platform.machine()}), Linux {platform.release()}"


def versions() -> str:
    out = [f"Python {platform.python_version()}"]
    try:
        p = subprocess.run(["rtpengine", "--version"], capture_output=True, text=True, timeout=10)
        v = (p.stdout + p.stderr).strip()
        out.append("rtpengine " + v.replace("Version:", "").strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return ", ".join(out) + "."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    env_targets = os.environ.get("RTPP_BENCH_TARGETS", ",".join(ALL_TARGETS))
    ap.add_argument(
        "--targets", default=env_targets, help="comma separated (RTPP_BENCH_TARGETS): %(default)s"
    )
    ap.add_argument(
        "--ladder",
        default=os.environ.get("RTPP_BENCH_LADDER", ",".join(map(str, DEFAULT_LADDER))),
        help="concurrent call counts (RTPP_BENCH_LADDER)",
    )
    ap.add_argument("--fixed-n", type=int, default=400, help="latency comparison point")
    ap.add_argument("--cpu-n", type=int, default=800, help="CPU per packet comparison point")
    ap.add_argument(
        "--cpu-rounds", type=int, default=3, help="interleaved runs per target at --cpu-n"
    )
    ap.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("RTPP_BENCH_DURATION", "10")),
        help="measured seconds per point (RTPP_BENCH_DURATION)",
    )
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--drain", type=float, default=1.0)
    ap.add_argument("--loss-limit", type=float, default=0.1, help="percent")
    ap.add_argument("--p99-limit-ms", type=float, default=10.0)
    ap.add_argument("--retries", type=int, default=2, help="re-runs of a failing point")
    two = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    ap.add_argument("--relay-cpu", default="0" if two else "none", help="'none': no pinning")
    ap.add_argument("--gen-cpu", default="1" if two else "none", help="'none': no pinning")
    ap.add_argument("--socks", type=int, default=1, help="generator socket pairs")
    ap.add_argument("--max-minutes", type=float, default=18.0)
    ap.add_argument("--loadgen", default=str(OUT / "loadgen"))
    ap.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    ap.add_argument("--results", default=str(BENCH / "RESULTS.md"))
    ap.add_argument("--json", default=str(OUT / "results.json"))
    args = ap.parse_args(argv)
    args.ladder = sorted({int(x) for x in args.ladder.split(",") if x.strip()})
    names = [x.strip() for x in args.targets.split(",") if x.strip()]
    bad = [x for x in names if x not in ALL_TARGETS]
    if bad or not names:
        ap.error(f"unknown target(s) {bad}; choose from {','.join(ALL_TARGETS)}")
    if not Path(args.loadgen).exists():
        ap.error(f"{args.loadgen} missing: build it with bench/run.sh (or cc bench/loadgen.c)")
    python = args.python if Path(args.python).exists() else sys.executable
    targets = [Target(n, python, args.relay_cpu) for n in names]
    bench = Bench(args)
    try:
        bench.run(targets)
    except KeyboardInterrupt:
        bench.log("interrupted: reporting what was measured")
    text = bench.report(names, [str(Path(__file__).relative_to(ROOT)), *argv])
    print(text)
    Path(args.results).write_text(text)
    Path(args.json).write_text(
        json.dumps(
            [
                {
                    "target": p.target,
                    "calls": p.calls,
                    "ok": p.ok,
                    "reason": p.reason,
                    "attempt": p.attempt,
                    "relay_cpu_s": p.relay_cpu_s,
                    "window_s": p.window_s,
                    "cpu_us_per_pkt": p.cpu_us_per_pkt,
                    "relay_core_softirq": p.relay_core_softirq,
                    "relay_core_other": p.relay_core_other,
                    "gen_core_other": p.gen_core_other,
                    "relay_drops": p.relay_drops,
                    "machine_cpu_s": p.machine_cpu_s,
                    "machine_us_per_pkt": p.machine_us_per_pkt,
                    "verdict": p in bench.points,
                    "result": p.result,
                }
                for p in bench.runs
            ],
            indent=1,
        )
    )
    bench.log(f"wrote {args.results} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
