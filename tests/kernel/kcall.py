"""Calls through a daemon running with --kernel-offload in a netns_lab relay namespace."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from helpers import Proxy, UdpClient
from integration.media_util import parse_port_reply, rtp
from netns_lab import Lab

SSRC_A = 0x1111AAAA
SSRC_B = 0x2222BBBB
#: Packets sent before they are read back (well within a socket's receive buffer).
BURST = 50


def start_relay(rtpproxy, lab: Lab, *flags: str, family: int = socket.AF_INET, **kw) -> Proxy:
    """The daemon in the relay namespace, unix control socket, kernel offload on."""
    listen = ("-6", "::") if family == socket.AF_INET6 else ("-l", "0.0.0.0")
    if any(f in ("-l", "-6") for f in flags):
        listen = ()
    return rtpproxy(
        "--kernel-offload",
        *listen,
        *flags,
        ctrl="unix",
        wrap=("ip", "netns", "exec", lab.relay),
        **kw,
    )


@dataclass
class KCall:
    """A call between phone A (caller) and phone B (callee) through the relay."""

    proxy: Proxy
    lab: Lab
    call_id: str
    a: UdpClient
    b: UdpClient
    to_a: tuple  # where B's packets go: the relay's port facing B
    to_b: tuple  # where A's packets go
    seq_a: int = 0
    seq_b: int = 0

    @property
    def tags(self) -> str:
        return f"{self.call_id} ftag;1 ttag;1"

    def send_a(self, count: int = 1, size: int = 160) -> list[bytes]:
        sent = []
        for _ in range(count):
            data = rtp(self.seq_a, self.seq_a * 160, SSRC_A, bytes([self.seq_a % 256]) * size)
            self.a.send(data, self.to_b)
            sent.append(data)
            self.seq_a += 1
        return sent

    def send_b(self, count: int = 1, size: int = 160) -> list[bytes]:
        sent = []
        for _ in range(count):
            data = rtp(self.seq_b, self.seq_b * 160, SSRC_B, bytes([self.seq_b % 256]) * size)
            self.b.send(data, self.to_a)
            sent.append(data)
            self.seq_b += 1
        return sent

    def a_to_b(self, count: int = 1) -> None:
        """Send `count` packets from A; B gets each, from the relay's port facing B."""
        for done in range(0, count, BURST):
            for data in self.send_a(min(BURST, count - done)):
                got, src = self.b.recv(timeout=2.0)
                assert got == data
                assert src[:2] == self.to_a

    def b_to_a(self, count: int = 1) -> None:
        for done in range(0, count, BURST):
            for data in self.send_b(min(BURST, count - done)):
                got, src = self.a.recv(timeout=2.0)
                assert got == data
                assert src[:2] == self.to_b

    def latch(self) -> None:
        """The first packet each way: user space learns both parties, the kernel binds."""
        self.a_to_b()
        self.b_to_a()

    def query(self, *names: str) -> dict[str, int]:
        reply = self.proxy.cmd(f"Qv {self.tags} {' '.join(names)}")
        assert not reply.startswith("E"), reply
        return {k: int(float(v)) for k, v in (item.split("=") for item in reply.split())}

    def delete(self) -> str:
        return self.proxy.cmd(f"D {self.tags}")


def make_call(
    proxy: Proxy,
    lab: Lab,
    family: int = socket.AF_INET,
    a: UdpClient | None = None,
    b: UdpClient | None = None,
    mods: str = "",
) -> KCall:
    """U with A's address, L with B's (as Kamailio does); both parties are told the
    relay's address on their own subnet."""
    call_id = f"k{os.urandom(5).hex()}"
    a = a or lab.phone("a", family)
    b = b or lab.phone("b", family)
    mod = mods + ("6" if family == socket.AF_INET6 else "")
    port_a, _ = parse_port_reply(proxy.cmd(f"U{mod} {call_id} {a.addr[0]} {a.port} ftag;1"))
    port_b, _ = parse_port_reply(proxy.cmd(f"L{mod} {call_id} {b.addr[0]} {b.port} ftag;1 ttag;1"))
    to_a = (lab.addr(family, "b", 1), port_a)
    to_b = (lab.addr(family, "a", 1), port_b)
    return KCall(proxy, lab, call_id, a, b, to_a, to_b)


def wait_for(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
