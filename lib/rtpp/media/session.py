"""Session state: Session -> two Pipes (RTP, RTCP) -> two Streams each.

Stream index 1 faces the party named by the session's from-tag (the "caller"), stream
0 faces the other party. Packets from a party arrive on the socket of the stream that
faces it and leave from the socket of the opposite stream of the same pipe.

A stream owns its route: every change of what the route depends on (sockets,
addresses, latching, recorders, copies, players, the resizer, the session's state)
is a method here, and each ends in `Session._reroute`, the one place where routes
change (route.py decides, the media context's driver serves the result).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rtpp.config import ListenAddr
from rtpp.media import latch
from rtpp.media.analyzer import RtpAnalyzer
from rtpp.media.latch import Address, Verdict
from rtpp.media.route import Driver, Route, decide
from rtpp.media.sink import Sink

if TYPE_CHECKING:
    from rtpp.media.playback.player import Player
    from rtpp.media.playback.resizer import Resizer

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Stream:
    session: Session
    index: int
    is_rtp: bool
    # What the relay reads for each packet, kept together at the start of the object.
    # Fast path: a packet from `fast_src` needs no checks and goes out as
    # `fwd(data, fwd_dst)`; `fast_src` is None unless the stream's route is PLAIN.
    fast_src: Address | None = None
    # A second socket on the same local port, connected to the latched source (twins.py,
    # epoll driver, `twin_dst` below): the kernel sorts that source's packets onto it,
    # and `tfwd(data)` sends the other way through the peer's one.
    twin: socket.socket | None = None
    tfwd: Callable[[Any], int] | None = None
    analyzer: RtpAnalyzer | None = None  # on RTP streams
    # The fast path of a stream without an analyzer (RTCP) counts its packets here; an
    # analyzer counts those it is fed, so an RTP stream's fast path counts nothing more.
    nfast_rtcp: int = 0
    nbytes_fast: int = 0  # bytes of the packets the fast path read
    fwd: Callable[[Any, Address], int] | None = None
    fwd_dst: Address | None = None
    peer: Stream = None  # type: ignore[assignment]  # opposite stream of the same pipe
    route: Route = Route.FULL
    laddr: ListenAddr | None = None
    sock: socket.socket | None = None  # a bound non-blocking socket once the leg has ports
    port: int = 0
    local: tuple = ()  # (host, port) the socket is bound to
    # Remote party (latch.py reads and writes these).
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
    # The kernel route (kernel_driver.py): packets from the party the kernel relayed;
    # while the stream is bound, nkernel when the binding started (else -1); the
    # sequence numbers the analyzer missed in the kernel, valid while it has been fed
    # `skew_nfed` packets (see seq_skew).
    nkernel: int = 0
    nbytes_kernel: int = 0  # UDP payload bytes of those
    kernel_mark: int = -1
    skew_base: int = 0
    skew_nfed: int = -1
    # Attachments: set only through the methods below.
    recorder: Sink | None = None
    copier: Sink | None = None  # remote copy, mirror or local copy recorder
    resizer: Resizer | None = None
    player: Player | None = None  # plays to the party this stream faces
    codecs: str | None = None
    ptime_ms: int = 0
    weak: bool = False
    tos: int | None = None  # `S tos=N` (None: -t), also for ports the leg gets later

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
        return self.slow_rcvd + self.nfast + self.nkernel

    @property
    def npkts_in(self) -> int:
        """Packets accepted from the party this stream faces."""
        return self.slow_in + self.nfast + self.nkernel

    @property
    def nrelayed(self) -> int:
        return self.slow_relayed + self.nfast - self.nfast_unsent + self.nkernel

    @property
    def seq_skew(self) -> int:
        """RTP packets of the party the kernel relayed after the last one the analyzer
        saw: how far its sequence moved on unseen (latch.may_relatch adds it). While the
        stream is bound the counts are read first (its session's shard only)."""
        if self.kernel_mark >= 0:
            driver = self.session.driver
            if driver is not None:
                driver.refresh(self.session)
            return self.skew_base + self.nkernel - self.kernel_mark
        an = self.analyzer
        return self.skew_base if an is not None and an.nfed == self.skew_nfed else 0

    @property
    def nbytes_in(self) -> int:
        """Bytes of the packets counted in `npkts_in`."""
        return self.slow_bytes_in + self.nbytes_fast + self.nbytes_kernel

    @property
    def nbytes_relayed(self) -> int:
        """Bytes of the packets counted in `nrelayed`."""
        return self.slow_bytes_relayed + self.nbytes_fast - self.nbytes_unsent + self.nbytes_kernel

    @property
    def kind(self) -> str:
        return "RTP" if self.is_rtp else "RTCP"

    # The socket: bound by the media plane, read by the session's driver.

    def open(self, sock: socket.socket, laddr: ListenAddr) -> None:
        """Take `sock` (bound on `laddr`) as this stream's socket; the driver reads it."""
        self.sock = sock
        self.local = sock.getsockname()[:2]
        self.port = self.local[1]
        self.laddr = laddr
        driver = self.session.driver
        if driver is not None:
            driver.watch(self)
        self.session._reroute()

    def close(self) -> None:
        """Stop reading and close the socket (the port goes back to its allocator)."""
        sock = self.sock
        if sock is None:
            return
        driver = self.session.driver
        if driver is not None:
            driver.unwatch(self)
        self.sock = None
        sock.close()
        self.session._reroute()

    def set_tos(self, tos: int) -> None:
        """IP TOS of this stream's sockets (the connected twin too), kept for a socket
        it gets later. The caller checks the stream is IPv4."""
        self.tos = tos
        for sock in (self.sock, self.twin):
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)

    # Latching, packet side (the controller side is Session.update_leg).

    def take_source(self, src: Address, verdict: Verdict) -> None:
        """Apply what latch.judge_packet said of a packet from `src` (not ACCEPT or DROP)."""
        if verdict is Verdict.CONFIRM:
            self.latched = True
        else:
            old = self.remote[:2] if self.remote is not None else None
            log.info(
                "%s leg %d %s %s (was %s)",
                self.kind,
                self.index,
                verdict.value,
                src[:2],
                old,
                extra=self.session.log_ctx,
            )
            rtcp = self.session.rtcp.streams[self.index] if self.is_rtp else None
            latch.learn(self, src, rtcp)
        self.session._reroute()

    # Sinks and the resizer: what the stream receives, besides the other party.

    def attach_recorder(self, sink: Sink) -> None:
        self._put("recorder", sink)

    def attach_copier(self, sink: Sink) -> None:
        self._put("copier", sink)

    def detach_recorder(self) -> bool:
        return self._put("recorder", None)

    def detach_copier(self) -> bool:
        return self._put("copier", None)

    def _put(self, slot: str, sink: Sink | None) -> bool:
        """Replace the sink in `slot` (releasing the old one); True if there was one."""
        old = getattr(self, slot)
        if old is not None:
            old.release()
        setattr(self, slot, sink)
        self.session._reroute()
        return old is not None

    def attach_resizer(self, resizer: Resizer) -> None:
        self.resizer = resizer
        self.session._reroute()

    def detach_resizer(self) -> Resizer | None:
        resizer = self.resizer
        self.resizer = None
        self.session._reroute()
        return resizer

    # The player: what the party this stream faces hears instead of the other party.

    def set_player(self, player: Player | None) -> None:
        self.player = player
        self.session._reroute()


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
    # A leg's timeout once the call is set up, from `S ttl=N` (None: the -T default).
    ttl_set: list[int | None] = field(default_factory=lambda: [None, None])
    notify_target: Any = None
    notify_tag: bytes | None = None
    deleted: bool = False
    seq: int = 0  # creation order within the table
    allow_fast: bool = True  # False when every packet needs the full path (-2)
    #: Reads the streams' sockets and serves their routes: the media context's driver
    #: (drivers.py). None outside a media plane (unit tests): routes are decided only.
    driver: Driver | None = None
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

    def set_leg_ttl(self, value: int, legs: tuple[int, ...]) -> None:
        """`S ttl=N`: the legs' timeout from now on, setup phase or not."""
        for i in legs:
            self.ttl_set[i] = value
        self.set_ttl_max(value, legs)

    def start_call_ttl(self, default_s: int) -> None:
        """Setup is over: each leg's timer restarts on its `S ttl=` value or `default_s`."""
        for i in (0, 1):
            value = self.ttl_set[i]
            self.set_ttl_max(default_s if value is None else value, (i,))

    # State changes that move routes.

    def mark_complete(self) -> None:
        self.complete = True
        self._reroute()

    def mark_deleted(self) -> None:
        self.deleted = True
        self._reroute()

    def update_leg(
        self,
        index: int,
        remote: tuple[str, int] | None,
        family: int,
        hold: bool,
        asymmetric: bool,
        codecs: str | None,
    ) -> None:
        """What a U/L says about leg `index`'s party: its address `(host, port)` (RTCP at
        port + 1; None leaves it), whether it is on hold, symmetry and codecs."""
        rtp, rtcp = self.leg(index)
        if remote is not None:
            latch.command_remote(rtp, rtcp, *remote, family, hold, time.monotonic())
        rtp.asymmetric = rtcp.asymmetric = asymmetric
        rtp.codecs = codecs
        self._reroute()

    def _reroute(self) -> None:
        """Recompute every stream's route (route.decide) and have the driver serve them.

        The single point where routes change: the driver (drivers.py) installs the
        user-space fast path of PLAIN streams; a kernel engine hooks in here too, as
        the session's driver.
        """
        for st in self.streams():
            st.route = decide(st)
        if self.driver is not None:
            self.driver.apply_routes(self)


def _make_pipe(session: Session, is_rtp: bool) -> Pipe:
    s0 = Stream(session, 0, is_rtp)
    s1 = Stream(session, 1, is_rtp)
    s0.peer, s1.peer = s1, s0
    return Pipe((s0, s1))
