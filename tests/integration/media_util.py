"""Shared pieces of the media tests: RTP packets, calls set up the way controllers do."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from helpers import Proxy, UdpClient

RTP_HEAD = struct.Struct("!BBHII")


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 0, marker: bool = False) -> bytes:
    return RTP_HEAD.pack(0x80, pt | (0x80 if marker else 0), seq & 0xFFFF, ts, ssrc) + payload


def parse_port_reply(reply: str) -> tuple[int, str | None]:
    parts = reply.split()
    return int(parts[0]), (parts[1] if len(parts) > 1 else None)


@dataclass
class Call:
    """A two-party call through the proxy: `a` is the caller, `b` the callee."""

    proxy: Proxy
    call_id: str
    a: UdpClient
    b: UdpClient
    port_a: int  # proxy port the callee sends to (returned by U, given to the callee)
    port_b: int  # proxy port the caller sends to (returned by L)
    addr: str = "127.0.0.1"
    ftag: str = "ftag;1"
    ttag: str = "ttag;1"

    def a_to_b(self, data: bytes) -> tuple[bytes, tuple]:
        self.a.send(data, (self.addr, self.port_b))
        return self.b.recv()

    def b_to_a(self, data: bytes) -> tuple[bytes, tuple]:
        self.b.send(data, (self.addr, self.port_a))
        return self.a.recv()

    def delete(self) -> str:
        return self.proxy.cmd(f"D {self.call_id} {self.ftag} {self.ttag}")

    def close(self) -> None:
        self.a.close()
        self.b.close()


def kamailio_call(proxy: Proxy, call_id: str | None = None, host: str = "127.0.0.1") -> Call:
    """U with the caller's address, L with the callee's, tags with a media index."""
    call_id = call_id or f"c{os.urandom(6).hex()}@test"
    a, b = UdpClient(host), UdpClient(host)
    mod = "6" if ":" in host else ""
    port_a, _ = parse_port_reply(proxy.cmd(f"U{mod} {call_id} {host} {a.port} ftag;1"))
    port_b, _ = parse_port_reply(proxy.cmd(f"L{mod} {call_id} {host} {b.port} ftag;1 ttag;1"))
    return Call(proxy, call_id, a, b, port_a, port_b, host)


def open_fds(proxy: Proxy) -> int:
    return len(os.listdir(f"/proc/{proxy.pid}/fd"))
