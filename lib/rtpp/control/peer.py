"""Who sent a control command: the transport kind and the sender's address."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Peer:
    kind: str  # "udp", "udp6", "unix", "cunix", "tcp", "tcp6", "stdio", "systemd"
    addr: tuple | str | None = None  # (host, port[, ...]) for inet kinds

    @property
    def ipv4_host(self) -> str:
        """The sender's IPv4 address, or 127.0.0.1 for non-IPv4 senders (%%CC_SELF%%)."""
        if self.kind in ("udp", "tcp") and isinstance(self.addr, tuple):
            return self.addr[0]
        return "127.0.0.1"
