"""A private network for kernel tests: a relay namespace between two phone subnets.

    phone A  10.<n>.1.2, fd00:<n>:1::2 (+ .3/::3, a stranger) -- veth --
        relay 10.<n>.1.1, fd00:<n>:1::1 | 10.<n>.2.1, fd00:<n>:2::1 (forwarding on)
    phone B  10.<n>.2.2, fd00:<n>:2::2                       -- veth --

Packets between the phones and the relay cross interfaces, so relayed packets take
the kernel's forward path, not only loopback. The test process opens its phone
sockets inside the phone namespaces (a socket keeps the namespace it was made in) and
runs the daemon in the relay namespace under `ip netns exec`; it talks to the daemon
over a unix control socket, which namespaces do not separate. Everything made is
removed at the end, whatever happened.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from helpers import UdpClient

_serial = itertools.count(1)


def run(*cmd: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    return subprocess.run(full, capture_output=True, text=True, check=check, timeout=30)


def skip_reason() -> str | None:
    """Why kernel tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "kernel tests need root (network namespaces, nftables)"
    for tool in ("ip", "nft", "conntrack"):
        if shutil.which(tool) is None:
            return f"kernel tests need the {tool} command"
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return "kernel tests need pyroute2"
    name = f"rtpkprobe{os.getpid()}"
    if run("ip", "netns", "add", name, check=False).returncode != 0:
        return "cannot create a network namespace"
    try:
        probe = run(
            "nft",
            "add table inet probe; add chain inet probe p { type nat hook prerouting priority 0; }",
            check=False,
            ns=name,
        )
        if probe.returncode != 0:
            return f"no nf_tables NAT in this kernel: {probe.stderr.strip()}"
    finally:
        run("ip", "netns", "del", name, check=False)
    return None


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block in namespace `ns` (sockets made there stay there)."""
    from pyroute2.netns import popns, pushns

    pushns(ns)
    try:
        yield
    finally:
        popns()


@dataclass
class Lab:
    n: int
    tag: str
    relay: str = ""
    a: str = ""
    b: str = ""
    sockets: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.relay, self.a, self.b = (f"{self.tag}{p}" for p in "rab")

    # Addresses.

    def v4(self, side: str, host: int) -> str:
        return f"10.{self.n}.{1 if side == 'a' else 2}.{host}"

    def v6(self, side: str, host: int) -> str:
        return f"fd00:{self.n}:{1 if side == 'a' else 2}::{host}"

    def addr(self, family: int, side: str, host: int) -> str:
        return self.v6(side, host) if family == socket.AF_INET6 else self.v4(side, host)

    # Set-up and tear-down.

    def build(self) -> None:
        for ns in (self.relay, self.a, self.b):
            run("ip", "netns", "add", ns)
            run("ip", "link", "set", "lo", "up", ns=ns)
        for side, ns in (("a", self.a), ("b", self.b)):
            near, far = f"{self.tag}r{side}", f"{self.tag}{side}r"
            run("ip", "link", "add", near, "netns", self.relay, "type", "veth", "peer", "name",
                far, "netns", ns)  # fmt: skip
            run("ip", "addr", "add", f"{self.v4(side, 1)}/24", "dev", near, ns=self.relay)
            run("ip", "-6", "addr", "add", f"{self.v6(side, 1)}/64", "dev", near, "nodad",
                ns=self.relay)  # fmt: skip
            for host in (2, 3):
                run("ip", "addr", "add", f"{self.v4(side, host)}/24", "dev", far, ns=ns)
                run("ip", "-6", "addr", "add", f"{self.v6(side, host)}/64", "dev", far, "nodad",
                    ns=ns)  # fmt: skip
            run("ip", "link", "set", near, "up", ns=self.relay)
            run("ip", "link", "set", far, "up", ns=ns)
            run("ip", "route", "add", "default", "via", self.v4(side, 1), ns=ns)
            run("ip", "-6", "route", "add", "default", "via", self.v6(side, 1), ns=ns)
        self.forwarding(True)

    def forwarding(self, on: bool) -> None:
        value = "1" if on else "0"
        run("sysctl", "-qw", f"net.ipv4.ip_forward={value}",
            f"net.ipv6.conf.all.forwarding={value}", ns=self.relay)  # fmt: skip

    def destroy(self) -> None:
        for sock in self.sockets:
            sock.close()
        for ns in (self.relay, self.a, self.b):
            run("ip", "netns", "del", ns, check=False)

    # Phones.

    def phone(self, side: str, family: int = socket.AF_INET, host: int = 2) -> UdpClient:
        """A UDP socket of the phone on `side` ("a" or "b"; host 3 is another address)."""
        with inside(self.a if side == "a" else self.b):
            client = UdpClient(self.addr(family, side, host))
        self.sockets.append(client)
        return client

    # What the kernel holds.

    def nft(self, *args: str) -> str:
        return run("nft", *args, ns=self.relay).stdout

    def tables(self) -> list[str]:
        """`family name` of every nftables table in the relay namespace."""
        return [" ".join(line.split()[1:]) for line in self.nft("list", "tables").splitlines()]

    def instance_tables(self) -> list[str]:
        """The tables of rtpproxy instances (`ip NAME` and `ip6 NAME` each)."""
        return sorted(t for t in self.tables() if t.split()[-1].startswith("rtpproxy_"))

    def elements(self) -> int:
        """Map and set elements in every table of the relay namespace."""
        ruleset = json.loads(self.nft("-j", "list", "ruleset"))["nftables"]
        return sum(len(obj.get(k, {}).get("elem", ())) for obj in ruleset for k in ("map", "set"))

    def conntrack(self, family: int = socket.AF_INET) -> list[str]:
        """Conntrack entries of the relay namespace (UDP)."""
        fam = "ipv6" if family == socket.AF_INET6 else "ipv4"
        out = run("conntrack", "-L", "-p", "udp", "-f", fam, check=False, ns=self.relay)
        return [line for line in out.stdout.splitlines() if line.startswith("udp")]


@contextmanager
def lab() -> Iterator[Lab]:
    n = 100 + (os.getpid() + next(_serial)) % 150
    the_lab = Lab(n, f"rk{n}{next(_serial) % 10}")
    try:
        the_lab.build()
        yield the_lab
    finally:
        the_lab.destroy()
