"""Small address helpers: which local address reaches a host, is an address ours."""

from __future__ import annotations

import socket

#: Any port will do for a routing lookup: connect() on UDP sends nothing.
PROBE_PORT = 9


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def numeric_host(host: str) -> str:
    """`host` as a canonical numeric address; OSError if it is not one.

    Never consults the resolver: a name would block on DNS (or yield to other
    greenlets mid-command) and malformed text can make the resolver raise oddities.
    """
    if ":" in host:
        addr, sep, scope = host.partition("%")
        return (
            socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, addr)) + sep + scope
        )
    return socket.inet_ntoa(socket.inet_aton(host))


def ipv4_of(host: str, no_resolve: bool) -> str:
    """The IPv4 address of `host` at start-up; with `no_resolve` (--no_resolve) only a
    numeric address is taken and DNS is never asked. Raises OSError (gaierror)."""
    if not no_resolve:
        return socket.gethostbyname(host)
    flags = socket.AI_NUMERICHOST
    infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM, 0, flags)
    return str(infos[0][4][0])


def routed_source(host: str) -> str:
    """The local address the kernel would send from to reach `host`; raises OSError."""
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as probe:
        probe.connect((numeric_host(host), PROBE_PORT))
        return probe.getsockname()[0]


def check_bindable(host: str) -> None:
    """Raise OSError unless a UDP socket can be bound to `host`."""
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as probe:
        probe.bind((numeric_host(host), 0))


def split_host_port(text: str) -> tuple[str, int] | None:
    """`HOST:PORT` or `[V6]:PORT` -> (host, port); None when malformed."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port.isascii() and port.isdigit()) or len(port) > 5:
        return None
    number = int(port)
    return (host, number) if 0 < number < 65536 else None
