"""Session state: Session -> two Pipes (RTP, RTCP) -> two Streams each.

Stream index 1 faces the party named by the session's from-tag (the "caller"), stream
0 faces the other party. Packets from a party arrive on the socket of the stream that
faces it and leave from the socket of the opposite stream of the same pipe.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from rtpp.config import ListenAddr

Address = tuple  # (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6


def make_address(family: int, host: str, port: int) -> Address:
    """The address tuple in the exact shape recvfrom() returns, so `==` compares sources."""
    if family == socket.AF_INET6:
        # recvfrom() carries the zone only as the scope id, never in the host text.
        addr, _, scope = host.partition("%")
        text = socket.inet_ntop(family, socket.inet_pton(family, addr))
        return (text, port, 0, _scope_id(scope))
    return (host, port)


def _scope_id(scope: str) -> int:
    """The interface index of an IPv6 zone (`fe80::1%eth0`, `%2`); 0 when absent or gone."""
    if scope.isdigit():
        return int(scope)
    try:
        return socket.if_nametoindex(scope) if scope else 0
    except OSError:
        return 0


@dataclass(slots=True, eq=False)
class Stream:
    session: Session
    index: int
    is_rtp: bool
    # What the relay reads for each packet, kept together at the start of the object.
    # Fast path: a packet from `fast_src` needs no checks and goes out as
    # `fwd(data, fwd_dst)`; `fast_src` is None unless `Session.refresh_fast` allows it.
    fast_src: Address | None = None
    # A second socket on the same local port, connected to the latched source (relay.py,
    # epoll driver, `twin_dst` below): the kernel sorts that source's packets onto it,
    # and `tfwd(data)` sends the other way through the peer's one.
    twin: Any = None
    tfwd: Any = None
    analyzer: Any = None  # rtp.RtpAnalyzer for RTP streams
    # The fast path of a stream without an analyzer (RTCP) counts its packets here; an
    # analyzer counts those it is fed, so an RTP stream's fast path counts nothing more.
    nfast_rtcp: int = 0
    nbytes_fast: int = 0  # bytes of the packets the fast path read
    fwd: Any = None
    fwd_dst: Address | None = None
    peer: Stream = None  # type: ignore[assignment]  # opposite stream of the same pipe
    laddr: ListenAddr | None = None
    sock: Any = None  # a bound non-blocking socket once the leg has ports
    port: int = 0
    local: tuple = ()  # (host, port) the socket is bound to
    # Remote party.
    remote: Address | None = None
    latched: bool = False
    learned: bool = False  # remote came from packets: commands never override it
    asymmetric: bool = False
    on_hold: bool = False
    cmd_remote: Address | None = None  # the last address a command supplied
    cmd_changed_at: float = -1e9  # monotonic time a command last changed the address
    twin_dst: Address | None = None
    # Counters. The fast path only counts `nfast`; the totals are the properties below.
    nfast_unsent: int = 0  # of those, refused by the kernel
    nbytes_unsent: int = 0
    slow_bytes_in: int = 0
    slow_bytes_relayed: int = 0
    slow_rcvd: int = 0  # read on a complete session by the full path
    slow_in: int = 0  # accepted by the full path
    slow_relayed: int = 0
    ndropped: int = 0
    nignored: int = 0
    nplayer_drop: int = 0  # accepted but dropped for an active player (no TTL refresh)
    ttl_mark: int = 0  # npkts_in - nplayer_drop at the last sweep
    longest_ipi: float = 0.0
    # Attachments.
    recorder: Any = None
    copier: Any = None  # remote copy (udp) or local copy recorder
    resizer: Any = None
    player: Any = None
    codecs: str | None = None
    ptime_ms: int = 0
    weak: bool = False
    relay: Any = None  # relay.StreamRelay owning the socket

    @property
    def has_ports(self) -> bool:
        return self.sock is not None

    @property
    def nfast(self) -> int:
        """Packets read, accepted and handed to the kernel by the fast path."""
        an = self.analyzer
        # Every packet the full path accepts (slow_in) is fed to the analyzer too.
        return self.nfast_rtcp if an is None else an.nfed - self.slow_in

    @property
    def nrcvd(self) -> int:
        """Packets read while the session was complete."""
        return self.slow_rcvd + self.nfast

    @property
    def npkts_in(self) -> int:
        """Packets accepted from the party this stream faces."""
        return self.slow_in + self.nfast

    @property
    def nrelayed(self) -> int:
        return self.slow_relayed + self.nfast - self.nfast_unsent

    @property
    def nbytes_in(self) -> int:
        """Bytes of the packets counted in `npkts_in`."""
        return self.slow_bytes_in + self.nbytes_fast

    @property
    def nbytes_relayed(self) -> int:
        """Bytes of the packets counted in `nrelayed`."""
        return self.slow_bytes_relayed + self.nbytes_fast - self.nbytes_unsent


@dataclass(slots=True, eq=False)
class Pipe:
    streams: tuple[Stream, Stream]


@dataclass(slots=True, eq=False)
class Session:
    call_id: str
    from_tag: str
    created: float  # monotonic
    created_wall: float
    to_tag: str | None = None  # the other party's tag, once a command named it
    rtp: Pipe = None  # type: ignore[assignment]
    rtcp: Pipe = None  # type: ignore[assignment]
    strong: bool = True
    complete: bool = False
    # Inactivity timers per leg; in unified mode both move together.
    ttl: list[int] = field(default_factory=lambda: [0, 0])
    ttl_max: list[int] = field(default_factory=lambda: [0, 0])
    notify_target: Any = None
    notify_tag: bytes | None = None
    deleted: bool = False
    seq: int = 0  # creation order within the table
    allow_fast: bool = True  # False when every packet needs the full path (-2)
    on_route: Any = None  # called after every refresh_fast (the relay's socket upkeep)
    rcvd_mark: int = 0  # packets read (nrcvd of every stream) when the sweeper last looked

    def __post_init__(self) -> None:
        self.rtp = _make_pipe(self, True)
        self.rtcp = _make_pipe(self, False)

    def leg(self, index: int) -> tuple[Stream, Stream]:
        """The RTP and RTCP streams of leg `index`."""
        return self.rtp.streams[index], self.rtcp.streams[index]

    def streams(self) -> tuple[Stream, Stream, Stream, Stream]:
        return (*self.rtp.streams, *self.rtcp.streams)

    @property
    def nrcvd(self) -> int:
        """Packets read on all four streams."""
        return sum(st.nrcvd for st in self.streams())

    def take_rcvd(self) -> int:
        """Packets read since the last call (the sweeper's pps_in gauge)."""
        total = self.nrcvd
        delta = total - self.rcvd_mark
        self.rcvd_mark = total
        return delta

    @property
    def weak(self) -> bool:
        return self.rtp.streams[0].weak or self.rtp.streams[1].weak

    @property
    def log_ctx(self) -> dict:
        """`extra=` for log calls about this session: the call-id is the log context."""
        return {"ctx": self.call_id}

    @property
    def tag_base(self) -> str:
        return self.from_tag.split(";", 1)[0]

    def reset_ttl(self) -> None:
        self.ttl[0], self.ttl[1] = self.ttl_max

    def set_ttl_max(self, value: int, legs: tuple[int, ...] = (0, 1)) -> None:
        for i in legs:
            self.ttl_max[i] = value
            self.ttl[i] = value

    def refresh_fast(self) -> None:
        """Recompute each stream's fast-path route after any state change."""
        for st in self.streams():
            peer = st.peer
            fast = (
                self.allow_fast
                and self.complete
                and not self.deleted
                and st.latched
                and st.remote is not None
                and not st.asymmetric
                and peer.sock is not None
                and peer.remote is not None
                and peer.player is None
                and st.recorder is None
                and st.copier is None
                and st.resizer is None
            )
            st.fast_src = st.remote if fast else None
            st.fwd = peer.sock.sendto if fast else None
            st.fwd_dst = peer.remote if fast else None
        if self.on_route is not None:
            self.on_route(self)


def _make_pipe(session: Session, is_rtp: bool) -> Pipe:
    s0 = Stream(session, 0, is_rtp)
    s1 = Stream(session, 1, is_rtp)
    s0.peer, s1.peer = s1, s0
    return Pipe((s0, s1))
