"""Small address helpers: which local address reaches a host, is an address ours."""

from __future__ import annotations

import socket

#: Any port will do for a routing lookup: connect() on UDP sends nothing.
PROBE_PORT = 9


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def routed_source(host: str) -> str:
    """The local address the kernel would send from to reach `host`; raises OSError."""
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as probe:
        probe.connect((host, PROBE_PORT))
        return probe.getsockname()[0]


def check_bindable(host: str) -> None:
    """Raise OSError unless a UDP socket can be bound to `host`."""
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
