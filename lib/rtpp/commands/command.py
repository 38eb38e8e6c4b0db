"""Typed, validated control commands: what the parser produces and handlers consume.

Call-ids, tags and names are kept as `str` decoded with latin-1, so every byte of the
wire form survives a round trip (`s.encode("latin-1")` gives the original bytes back).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AddrMods:
    """Modifiers of U and L (and of the `&& L` sub-command), PROTOCOL.md §4.3."""

    asymmetric: bool = False  # A
    symmetric: bool = False  # S
    weak: bool = False  # W
    ipv6: bool = False  # 6
    bridge: str = ""  # E/I letters in order, lower case: "", "e", "i", "ei", "ie", "ee", ...
    resize_ms: int = 0  # Z<n>, 0 = off
    codecs: str | None = None  # c<list>, raw text such as "0,8,101"
    local_addr: str | None = None  # L<ipv4> or L[<ipv6>] (brackets removed)
    local_label: str | None = None  # L{label}
    route_to: str | None = None  # R<ipv4> or R[<ipv6>] (brackets removed)
    new_port: bool = False  # N


@dataclass(frozen=True, slots=True)
class RemoteAddr:
    """The `<addr> <port>` pair of U/L after validation.

    `host` is None when the address text had a length outside the accepted range and is
    silently ignored; `hold` is True for 0.0.0.0 / ::.
    """

    host: str | None
    port: int
    hold: bool = False


# Sub-commands (after `&&`), PROTOCOL.md §4.15.


@dataclass(frozen=True, slots=True)
class SubLookup:
    mods: AddrMods
    remote: RemoteAddr


@dataclass(frozen=True, slots=True)
class SubDelete:
    weak: bool = False


@dataclass(frozen=True, slots=True)
class SubSet:
    reverse: bool
    ttl: int | None = None
    tos: int | None = None


@dataclass(frozen=True, slots=True)
class SubCopy:
    call_id: str
    from_tag: str
    to_tag: str


SubCommand = SubLookup | SubDelete | SubSet | SubCopy


# Main commands.


@dataclass(frozen=True, slots=True)
class Update:
    """U (lookup=False) and L (lookup=True)."""

    call_id: str
    remote: RemoteAddr
    from_tag: str
    to_tag: str | None
    mods: AddrMods
    lookup: bool = False
    notify_socket: str | None = None
    notify_tag: bytes | None = None  # already %-decoded
    subcommands: tuple[SubCommand, ...] = ()


@dataclass(frozen=True, slots=True)
class Delete:
    call_id: str
    from_tag: str
    to_tag: str | None
    weak: bool = False


@dataclass(frozen=True, slots=True)
class Play:
    call_id: str
    name: str
    codecs: str  # "session" or the raw comma list
    from_tag: str
    to_tag: str | None
    count: int = 1


@dataclass(frozen=True, slots=True)
class StopPlay:
    call_id: str
    from_tag: str
    to_tag: str | None


@dataclass(frozen=True, slots=True)
class Record:
    call_id: str
    from_tag: str
    to_tag: str | None
    single_file: bool = False


@dataclass(frozen=True, slots=True)
class Copy:
    call_id: str
    target: str
    from_tag: str
    to_tag: str | None
    single_file: bool = False
    want_port: bool = False


@dataclass(frozen=True, slots=True)
class NoRecord:
    call_id: str
    from_tag: str
    to_tag: str | None
    both: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """Q. `mods` is the raw modifier text: it is validated only after the session lookup."""

    call_id: str
    from_tag: str
    to_tag: str | None
    mods: str = ""
    names: tuple[str, ...] = ()
    subcommands: tuple[SubCommand, ...] = ()


@dataclass(frozen=True, slots=True)
class Stats:
    verbose: bool = False
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Info:
    brief: bool = False
    load: bool = False


@dataclass(frozen=True, slots=True)
class Version:
    pass


@dataclass(frozen=True, slots=True)
class VersionFeature:
    date: str


@dataclass(frozen=True, slots=True)
class DeleteAll:
    pass


Command = (
    Update
    | Delete
    | Play
    | StopPlay
    | Record
    | Copy
    | NoRecord
    | Query
    | Stats
    | Info
    | Version
    | VersionFeature
    | DeleteAll
)


@dataclass(frozen=True, slots=True)
class ParseContext:
    """The parts of the daemon configuration that change how commands parse."""

    bridged: bool = False
    extra: dict = field(default_factory=dict)
