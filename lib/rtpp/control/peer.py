"""Who sent a control command: the transport kind, the sender's address and cookie room."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Peer:
    kind: str  # "udp", "udp6", "unix", "cunix", "tcp", "tcp6", "stdio", "systemd"
    addr: tuple | str | None = None  # (host, port[, ...]) for inet kinds
    #: Reply-buffer bytes taken before the body: `len(cookie) + 1` on UDP, else 0.
    overhead: int = 0

    @property
    def ipv4_host(self) -> str:
        """The sender's IPv4 address, or 127.0.0.1 for non-IPv4 senders (%%CC_SELF%%)."""
        if self.kind in ("udp", "tcp") and isinstance(self.addr, tuple):
            return self.addr[0]
        return "127.0.0.1"


def cookie_overhead(cookie: bytes | None) -> int:
    """Bytes the UDP cookie prefix (`<cookie> `) takes in the reply buffer."""
    return len(cookie) + 1 if cookie else 0
