#!/usr/bin/env python3
"""Where the kernel route's per-packet cost goes: alternative netfilter mechanisms for
forwarding a latched RTP pipe, measured by whole-machine CPU per relayed packet.

`serve` is a control server speaking what bench/loadgen sends (U, L, D, V as in
bench/direct_ctl.py) that plays a relay without user space: it holds a UDP socket on
every port it hands out (never read) and, before answering a call's L, installs the
variant's nftables rules for both directions in one table of its own, which it deletes
on exit. Variants:

* ``stateless``: no conntrack for the port range (`notrack` in raw prerouting and
  output); one hash lookup on the 4-tuple (`vmap`) jumps to a per-direction chain
  holding a counter and four payload statements (saddr, sport, daddr, dport), in a
  route chain on output (packets sent on this host) and a filter chain on prerouting
  (packets arriving on interfaces);
* ``stateless-maps``: the same without per-direction chains: a 4-tuple -> mark map
  with per-element counters, then one map lookup by mark per rewritten field;
* ``ct``: the kernel mode's NAT (maps d4 and s4, nat chains, raw notrack of the range's
  own sends) without its counting chain, nf_conntrack_acct off;
* ``ct-acct``: the same with nf_conntrack_acct on (counts from conntrack instead of
  a counting chain).

The driver (default command) alternates rounds of every variant with the real daemon's
--kernel-offload (``kernel``) and the ``direct`` floor (bench/direct_ctl.py, no relay, no
table), at N calls, and reports the whole-machine busy time per relayed packet over
the loadgen's measurement window (bench/driver.py's method). Pinning as in the bench:
server on CPU 0, loadgen on CPU 1. Needs root and bench/out/loadgen (bench/run.sh).

Usage: kernel_paths.py [--rounds R] [--calls N] [--variants a,b,...]
       kernel_paths.py serve --variant V --ctl IP:PORT --base PORT
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from direct_ctl import answer  # noqa: E402
from driver import KERNEL_BIND_S, machine_busy_s, proc_cpu_seconds  # noqa: E402

TABLE_PREFIX = "kpaths_"
RELAY = "127.0.0.1"
SERVED = (
    "stateless",
    "stateless-ct",
    "stateless-lo",
    "stateless-filter",
    "stateless-maps",
    "ct",
    "ct-acct",
    "ct-countermap",
    "ct-count",
)
ALL = ("kernel", *SERVED, "direct")
SHARDS = 16
DURATION = 8  # seconds of the measurement window
COUNTS = Path(f"/tmp/kernel_paths_counts.{os.getpid()}")
ACCT = "/proc/sys/net/netfilter/nf_conntrack_acct"
FLOW = "ip saddr . udp sport . ip daddr . udp dport"
TUPLE = "ipv4_addr . inet_service . ipv4_addr . inet_service"

STATELESS = f"""
  map pipes {{ type {TUPLE} : verdict; }}
  chain raw_pre {{ type filter hook prerouting priority raw; udp dport %LO%-%HI% notrack; }}
  chain raw_out {{ type filter hook output priority raw; udp dport %LO%-%HI% notrack; }}
  chain out {{ type route hook output priority -150; meta l4proto udp {FLOW} vmap @pipes; }}
  chain pre {{ type filter hook prerouting priority -150; meta l4proto udp {FLOW} vmap @pipes; }}
"""
MAPS_RULE = (
    f"meta l4proto udp meta mark set {FLOW} map @m ip saddr set meta mark map @sa "
    "udp sport set meta mark map @sp ip daddr set meta mark map @da "
    "udp dport set meta mark map @dp meta mark set 0"
)
STATELESS_MAPS = f"""
  map m {{ type {TUPLE} : mark; counter; }}
  map sa {{ type mark : ipv4_addr; }}
  map sp {{ type mark : inet_service; }}
  map da {{ type mark : ipv4_addr; }}
  map dp {{ type mark : inet_service; }}
  chain raw_pre {{ type filter hook prerouting priority raw; udp dport %LO%-%HI% notrack; }}
  chain raw_out {{ type filter hook output priority raw; udp dport %LO%-%HI% notrack; }}
  chain out {{ type route hook output priority -150; {MAPS_RULE}; }}
  chain pre {{ type filter hook prerouting priority -150; {MAPS_RULE}; }}
"""
CT = f"""
  map d4 {{ type {TUPLE} : ipv4_addr . inet_service; }}
  map s4 {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}
  chain pre {{ type nat hook prerouting priority dstnat; dnat to {FLOW} map @d4; }}
  chain out {{ type nat hook output priority -100; dnat to {FLOW} map @d4; }}
  chain post {{ type nat hook postrouting priority srcnat;
    ct status dnat meta l4proto udp snat to ct original ip daddr . ct original proto-dst map @s4; }}
  chain untracked {{ type filter hook output priority raw; udp sport %LO%-%HI% notrack; }}
"""
STATELESS_LO = f"""
  map pipes {{ type {TUPLE} : verdict; }}
  chain raw_out {{ type filter hook output priority raw; udp dport %LO%-%HI% notrack; }}
  chain out {{ type route hook output priority -150; meta l4proto udp {FLOW} vmap @pipes; }}
"""
#: Registers conntrack's hooks (a host with any stateful rule) without a rule that
#: loopback traffic passes: the relayed packets then meet conntrack's `notrack` test.
CT_LOADED = """
  chain ctload { type filter hook forward priority 0; ct state invalid drop; }
"""
OPENED = "ct original ip daddr . ct original proto-dst"
ANSWERED = "ct reply ip daddr . ct reply proto-dst"
COUNTER_MAP = f"""
  map cm {{ type ipv4_addr . inet_service : counter; }}
  chain count {{ type filter hook postrouting priority filter;
    ct status dnat meta l4proto udp ct direction original counter name {OPENED} map @cm
    ct status dnat meta l4proto udp ct direction reply counter name {ANSWERED} map @cm
  }}
"""
#: The kernel mode's counting chain as lib/rtpp/media/kernel.py builds it (16 shards).
COUNT_CHAIN = """
  map cv4 { type ipv4_addr . inet_service : verdict; }
  chain count { type filter hook postrouting priority filter; ct status dnat jump counted; }
  chain counted {
    meta l4proto udp ct direction original ct original ip daddr . ct original proto-dst vmap @cv4
    meta l4proto udp ct direction reply ct reply ip daddr . ct reply proto-dst vmap @cv4
  }
""" + "".join(
    f"""
  set c4_{j} {{ type ipv4_addr . inet_service; counter; }}
  chain k4_{j} {{
    meta l4proto udp ct direction original ct original ip daddr . ct original proto-dst @c4_{j}
    meta l4proto udp ct direction reply ct reply ip daddr . ct reply proto-dst @c4_{j}
  }}
"""
    for j in range(SHARDS)
)
TEMPLATES = {
    "stateless": STATELESS,
    "stateless-ct": STATELESS + CT_LOADED,
    "stateless-lo": STATELESS_LO,
    "stateless-filter": STATELESS_LO.replace("type route", "type filter"),
    "stateless-maps": STATELESS_MAPS,
    "ct": CT,
    "ct-acct": CT,
    "ct-countermap": CT + COUNTER_MAP,
    "ct-count": CT + COUNT_CHAIN,
}

Addr = tuple[str, int]


def nft(script: str) -> None:
    r = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True)
    if r.returncode:
        raise RuntimeError(f"nft: {r.stderr.strip()}")


class Relay:
    """Ports, sockets and nftables elements of one variant's calls."""

    def __init__(self, variant: str, base: int, table: str) -> None:
        self.variant, self.next, self.table = variant, base, table
        self.calls: dict[bytes, tuple[Addr, int, int]] = {}  # caller, port A, port B
        self.socks: list[socket.socket] = []
        self.marks = 0

    def port(self) -> int:
        while True:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            p, self.next = self.next, self.next + 1
            try:
                s.bind((RELAY, p))
            except OSError:
                s.close()
                continue
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.socks.append(s)
            return p

    def offer(self, call: bytes, caller: Addr) -> int:
        """U: the port the callee is to send to (B)."""
        if call not in self.calls:
            self.calls[call] = (caller, self.port(), self.port())
        return self.calls[call][2]

    def answer(self, call: bytes, callee: Addr, out: list[str]) -> int:
        """L: the port the caller is to send to (A); the elements go to out."""
        caller, a, b = self.calls[call]
        self.direction(caller, a, (RELAY, b), callee, out)
        self.direction(callee, b, (RELAY, a), caller, out)
        return a

    def direction(self, src: Addr, port: int, via: Addr, dst: Addr, out: list[str]) -> None:
        """Packets from src to our port leave from via to dst."""
        t = self.table
        key = f"{src[0]} . {src[1]} . {RELAY} . {port}"
        if self.variant.startswith("stateless") and self.variant != "stateless-maps":
            out.append(f"add chain ip {t} f{port}")
            out.append(
                f"add rule ip {t} f{port} counter ip saddr set {via[0]} udp sport set {via[1]} "
                f"ip daddr set {dst[0]} udp dport set {dst[1]} accept"
            )
            out.append(f"add element ip {t} pipes {{ {key} : jump f{port} }}")
        elif self.variant == "stateless-maps":
            self.marks += 1
            m = self.marks
            out.append(f"add element ip {t} m {{ {key} : {m} }}")
            out.append(f"add element ip {t} sa {{ {m} : {via[0]} }}")
            out.append(f"add element ip {t} sp {{ {m} : {via[1]} }}")
            out.append(f"add element ip {t} da {{ {m} : {dst[0]} }}")
            out.append(f"add element ip {t} dp {{ {m} : {dst[1]} }}")
        else:
            if self.variant == "ct-count":
                j = via[1] % SHARDS if port > via[1] else port % SHARDS  # the binding's shard
                out.append(f"add element ip {t} cv4 {{ {RELAY} . {port} : jump k4_{j} }}")
                out.append(f"add element ip {t} c4_{j} {{ {RELAY} . {port} }}")
            if self.variant == "ct-countermap":
                out.append(f"add counter ip {t} c{port}")
                out.append(f'add element ip {t} cm {{ {RELAY} . {port} : "c{port}" }}')
            out.append(f"add element ip {t} d4 {{ {key} : {dst[0]} . {dst[1]} }}")
            out.append(f"add element ip {t} s4 {{ {RELAY} . {port} : {via[0]} . {via[1]} }}")


def reply(relay: Relay, line: bytes, batch: list[str]) -> bytes | None:
    def media(letter: bytes, args: list[bytes]) -> bytes | None:
        party = (args[1].decode(), int(args[2]))
        if letter == b"U":
            return b"%d %s" % (relay.offer(args[0], party), RELAY.encode())
        if args[0] not in relay.calls:
            return None
        return b"%d %s" % (relay.answer(args[0], party, batch), RELAY.encode())

    return answer(line, media)


def counted(table: str) -> int:
    """Packets all counters of the table hold (rules, set elements, named counters)."""
    r = subprocess.run(["nft", "-j", "list", "table", "ip", table], capture_output=True, text=True)

    def walk(x: object) -> int:
        if isinstance(x, dict):
            c = x.get("counter")
            own = c["packets"] if isinstance(c, dict) and "packets" in c else 0
            return own + sum(walk(v) for k, v in x.items() if k != "counter")
        if isinstance(x, list):
            return sum(walk(v) for v in x)
        return 0

    return walk(json.loads(r.stdout)) if r.returncode == 0 else -1


def serve(variant: str, ctl: str, base: int, counts: str | None) -> int:
    """Answer loadgen's commands until SIGTERM; the table is deleted on the way out."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    table = f"{TABLE_PREFIX}{os.getpid()}"
    span = 4000
    body = TEMPLATES[variant].replace("%LO%", str(base)).replace("%HI%", str(base + span))
    nft(f"table ip {table} {{{body}}}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    relay = Relay(variant, base, table)
    host, _, port = ctl.rpartition(":")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, int(port)))
            while True:
                got = [sock.recvfrom(4096)]
                sock.setblocking(False)
                try:
                    while len(got) < 256:
                        got.append(sock.recvfrom(4096))
                except BlockingIOError:
                    pass
                sock.setblocking(True)
                batch: list[str] = []
                replies = [(reply(relay, data, batch), peer) for data, peer in got]
                if batch:
                    nft("\n".join(batch))  # before the answers: no packet goes unforwarded
                for r, peer in replies:
                    if r is not None:
                        sock.sendto(r, peer)
    finally:
        if counts:
            Path(counts).write_text(str(counted(table)))
        subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)


def measure(ctl_port: int, calls: int, warmup: float, direct: bool, pid: int) -> dict:
    """The loadgen's figures, the machine's busy microseconds per packet that arrived in
    the window and the server process's own CPU microseconds per packet."""
    cmd = ["taskset", "-c", "1", str(BENCH / "out" / "loadgen"), "--ctl", f"127.0.0.1:{ctl_port}"]
    cmd += [
        "--calls",
        str(calls),
        "--duration",
        str(DURATION),
        "--warmup",
        f"{warmup:.1f}",
        "--drain",
        "1",
    ]
    cmd += ["--socks", "1", *(["--direct"] if direct else [])]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    b0 = b1 = None
    c0 = c1 = 0.0
    res: dict = {}
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith("MEASURE_START"):
            b0, c0 = machine_busy_s(), proc_cpu_seconds(pid)
        elif line.startswith("MEASURE_END"):
            b1, c1 = machine_busy_s(), proc_cpu_seconds(pid)
        elif line.startswith("RESULT "):
            res = json.loads(line[7:])
    p.wait()
    if b0 is None or b1 is None or "error" in res:
        raise RuntimeError(f"loadgen failed: {res}")
    res["us_per_pkt"] = (b1 - b0) / res["rx_window_arrivals"] * 1e6
    res["server_us_per_pkt"] = (c1 - c0) / res["rx_window_arrivals"] * 1e6
    # An undisturbed window receives exactly its schedule; anything else means the
    # generator's timing was disturbed (a stall of the machine) and the figure is noise.
    res["disturbed"] = res["rx_window_arrivals"] != calls * res["rate"] * 2 * DURATION
    return res


def start(args: list[str]) -> subprocess.Popen:
    p = subprocess.Popen(["taskset", "-c", "0", *args], cwd=ROOT, stdout=subprocess.DEVNULL)
    time.sleep(2)
    if p.poll() is not None:
        raise RuntimeError(f"{args} exited with {p.returncode}")
    return p


def stop(p: subprocess.Popen) -> None:
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run(variant: str, calls: int, k: int) -> dict:
    """One measurement of one variant; k rotates the port blocks between runs, so no
    conntrack entry of an earlier run has the same tuple."""
    ctl = 9700 + k % 50
    warmup = 2.0
    if variant == "kernel":
        hi = 10000 + 8 * calls
        args = [".venv/bin/python", "rtpproxy.py", "-f", "-F", "-s", f"udp:127.0.0.1:{ctl}"]
        args += ["-l", "127.0.0.1", "-m", "10000", "-M", str(hi), "-T", "60", "-d", "ERR"]
        args += ["--kernel-offload"]
        warmup += calls * KERNEL_BIND_S
    elif variant == "direct":
        args = [sys.executable, "bench/direct_ctl.py", "--ctl", f"127.0.0.1:{ctl}"]
    else:
        base = 18000 + (k % 3) * 4100
        args = [sys.executable, __file__, "serve", "--variant", variant]
        args += ["--ctl", f"127.0.0.1:{ctl}", "--base", str(base), "--counts", str(COUNTS)]
    COUNTS.unlink(missing_ok=True)
    with open(ACCT, "w") as f:
        f.write("1" if variant == "ct-acct" else "0")
    p = start(args)
    try:
        res = measure(ctl, calls, warmup, variant == "direct", p.pid)
    finally:
        stop(p)
    res["counted"] = int(COUNTS.read_text()) if COUNTS.exists() else None
    return res


def leftover_tables() -> list[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return [ln.split()[-1] for ln in out.splitlines() if TABLE_PREFIX in ln]


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--variant", choices=SERVED, required=True)
        ap.add_argument("--ctl", required=True)
        ap.add_argument("--base", type=int, required=True)
        ap.add_argument("--counts", help="write the packets counted to this file on exit")
        a = ap.parse_args(argv[1:])
        return serve(a.variant, a.ctl, a.base, a.counts)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=800)
    ap.add_argument("--variants", default=",".join(ALL))
    a = ap.parse_args(argv)
    variants = a.variants.split(",")
    with open(ACCT) as f:
        acct = f.read()
    figures: dict[str, list[float]] = {v: [] for v in variants}
    k = 0
    try:
        for r in range(a.rounds):
            shift = r % len(variants)  # each round starts with another variant
            for v in variants[shift:] + variants[:shift]:
                res = run(v, a.calls, k)
                k += 1
                if not res["disturbed"]:
                    figures[v].append(res["us_per_pkt"])
                print(
                    f"round {r + 1} {v}: {res['us_per_pkt']:.2f} us/pkt "
                    f"loss {res['lost']} ({res['loss_pct']:.4f} %) "
                    f"arrivals {res['rx_window_arrivals']} "
                    f"sent {res['tx_total']} received {res['rx_total']} counted {res['counted']} "
                    f"server {res['server_us_per_pkt']:.2f} us/pkt"
                    + (" DISTURBED" if res["disturbed"] else ""),
                    flush=True,
                )
    finally:
        with open(ACCT, "w") as f:
            f.write(acct)
        for t in leftover_tables():
            subprocess.run(["nft", "delete", "table", "ip", t], capture_output=True)
    floor = statistics.median(figures["direct"]) if figures.get("direct") else None
    for v, xs in figures.items():
        if not xs:
            continue
        med = statistics.median(xs)
        above = f" above floor {med - floor:.2f}" if floor is not None else ""
        print(f"{v}: {' '.join(f'{x:.2f}' for x in xs)} median {med:.2f}{above}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
