"""The `-s` control socket syntax: text -> ControlSpec."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CTRL_PORT = 22222

#: Schemes with a listening/bound socket of their own.
INET_KINDS = ("udp", "udp6", "tcp", "tcp6")
UNIX_KINDS = ("unix", "cunix")
STDIO_KINDS = ("stdio", "stdioc")
DATAGRAM_KINDS = ("udp", "udp6")
STREAM_KINDS = ("cunix", "tcp", "tcp6", "systemd")
_PREFIXES = INET_KINDS + UNIX_KINDS + STDIO_KINDS + ("systemd",)


@dataclass(frozen=True, slots=True)
class ControlSpec:
    kind: str  # one of _PREFIXES
    text: str  # the `-s` argument verbatim (used in messages)
    path: str | None = None  # unix, cunix
    host: str | None = None  # inet kinds; "" for any
    port: int | None = None

    @property
    def ipv6(self) -> bool:
        return self.kind in ("udp6", "tcp6")

    @property
    def datagram(self) -> bool:
        return self.kind in DATAGRAM_KINDS

    @property
    def one_shot(self) -> bool:
        return self.kind == "unix"

    @property
    def stdio(self) -> bool:
        return self.kind in STDIO_KINDS


class SpecError(ValueError):
    pass


def parse_spec(text: str) -> ControlSpec:
    """Parse one `-s` argument. Prefixes are case-sensitive; no prefix means a unix path."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in _PREFIXES:
        return ControlSpec("unix", text, path=text)
    if kind in UNIX_KINDS:
        if not rest:
            raise SpecError(f"{text}: socket path is empty")
        return ControlSpec(kind, text, path=rest)
    if kind in INET_KINDS:
        host, port = _split_host_port(text, rest)
        return ControlSpec(kind, text, host=host, port=port)
    return ControlSpec(kind, text)


def _split_host_port(text: str, rest: str) -> tuple[str, int]:
    """Split at the last ':'; an empty/missing port is 22222, `*` is any."""
    host, sep, port_text = rest.rpartition(":")
    if not sep:
        host, port_text = rest, ""
    if host == "*":
        host = ""
    if not port_text:
        return host, DEFAULT_CTRL_PORT
    if not _is_port(port_text):
        raise SpecError(f"{text}: invalid port")
    return host, int(port_text)


def _is_port(text: str) -> bool:
    """1..65535 in ASCII decimal (str.isdigit() alone also takes "²" and huge numbers)."""
    return text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536
