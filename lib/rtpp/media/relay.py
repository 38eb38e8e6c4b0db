"""The packet path: what happens to one packet read from a stream socket.

A packet from the latched source of a PLAIN stream (route.py) takes the fast path:
count (or defer for analysis), forward. Everything else - checking and learning
sources (latch.py), players, recorders, copies, the resizer, drops - goes through
`slow_packet`, which is complete on its own: the fast path is only a shortcut for a
state the route decision has proven simple.

The drivers (drivers.py) decide how sockets are waited on; both hand packets to the
code here, and the epoll driver inlines the fast path of `relay_ready`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rtpp.media.latch import Verdict, judge_packet
from rtpp.media.rtp import PACKET_OFFSET, PLAIN_V2, RTP_HEADER_LENGTH, ReceiveBuffer
from rtpp.stats import Counters

if TYPE_CHECKING:
    from rtpp.media.session import Stream

log = logging.getLogger(__name__)

SMALL_PACKET_BYTES = 128

#: The one receive buffer of the process (rtp.ReceiveBuffer: poll time, then packet).
RECV = ReceiveBuffer()


@dataclass(slots=True)
class RelayContext:
    """What the packet path needs besides the stream: counters and the relay options."""

    counters: Counters
    strict_source: bool = False
    dup_small: bool = False
    fds: Any = None  # fdbudget.FdBudget of the media sockets, when there is one
    #: The shortest time between the ends of two polls of the media sockets.
    poll_pause: float = 0.0


def _send(st: Stream, data, ctx: RelayContext) -> bool:
    """Send `data` from stream `st` to its party; False when the kernel refused it."""
    try:
        st.sock.sendto(data, st.remote)
        if ctx.dup_small and len(data) < SMALL_PACKET_BYTES:
            st.sock.sendto(data, st.remote)
    except OSError:
        return False
    return True


def accept_source(st: Stream, data, n: int, src: tuple, now: float, ctx: RelayContext) -> bool:
    """Latching (latch.py) for one packet of `n` bytes: True if the packet is accepted."""
    verdict = judge_packet(st, data, n, src, now, ctx.strict_source)
    if verdict is Verdict.DROP:
        return False
    if verdict is not Verdict.ACCEPT:
        st.take_source(src, verdict)
    return True


def slow_packet(st: Stream, view, n: int, src: tuple, now: float, ctx: RelayContext) -> None:
    counters = ctx.counters.values
    sess = st.session
    if not sess.complete or sess.deleted:
        counters["npkts_discard"] += 1
        return
    st.slow_rcvd += 1
    data = view[:n]
    if not accept_source(st, data, n, src, now, ctx):
        st.nignored += 1
        counters["npkts_discard"] += 1
        return
    st.slow_in += 1
    st.slow_bytes_in += n
    if st.analyzer is not None:
        st.analyzer.feed(data, now)
    if st.peer.player is not None:
        # The other party listens to a prompt: dropped as received, before the
        # resizer, and not activity for the session timer (housekeeping.leg_active).
        st.ndropped += 1
        st.nplayer_drop += 1
        counters["npkts_discard"] += 1
        return
    resizer = st.resizer
    if resizer is not None:
        packet = bytes(data)
        if resizer.ingest(packet, now):
            while (out := resizer.poll(now)) is not None:
                if deliver(st, out, src, ctx, now):
                    resizer.npkts_out += 1
            return
    deliver(st, data, src, ctx, now)


def deliver(st: Stream, data, src: tuple, ctx: RelayContext, now: float) -> bool:
    """Record, copy and relay one accepted packet from the party `st` faces."""
    counters = ctx.counters.values
    peer = st.peer
    if st.recorder is not None or st.copier is not None:
        _record(st, data, src, now)
    if peer.sock is None or peer.remote is None or not _send(peer, data, ctx):
        st.ndropped += 1
        counters["npkts_discard"] += 1
        return False
    st.slow_relayed += 1
    st.slow_bytes_relayed += len(data)
    return True


class _WallClock:
    """Monotonic receive time -> wall-clock time, without a clock read per packet.

    The offset between the two clocks is read again at most once a second, so a
    stepped wall clock shows in recordings within a second.
    """

    __slots__ = ("offset", "read_at")

    def __init__(self) -> None:
        self.offset = 0.0
        self.read_at = -1e9

    def at(self, now: float) -> float:
        if not 0.0 <= now - self.read_at < 1.0:
            self.offset = time.time() - time.monotonic()
            self.read_at = now
        return now + self.offset


_wall_clock = _WallClock()


def _record(st: Stream, data, src: tuple, now: float) -> None:
    """Hand a packet to the stream's recorder and copy; their failure never drops it.

    Records carry the packet's receive time (`now`, monotonic) on the wall clock.
    """
    wall = _wall_clock.at(now)
    for sink in (st.recorder, st.copier):
        if sink is None:
            continue
        try:
            sink.write(data, src, st.local, wall)
        except Exception:
            log.exception("recording failed", extra=st.session.log_ctx)


def relay_ready(st: Stream, now: float, ctx: RelayContext) -> bool:
    """Read and handle one packet of `st`'s socket; False when there was none.

    The caller has stamped RECV with `now` (a plain packet's analysis is deferred).
    """
    recv = RECV
    try:
        n, src = st.sock.recvfrom_into(recv.packet)
    except BlockingIOError:
        return False
    except OSError as exc:
        # ICMP errors surface here (ECONNREFUSED); the packet is gone either way.
        log.debug("recvfrom: %s", exc)
        ctx.counters.values["npkts_discard"] += 1
        return True
    if src != st.fast_src:
        slow(st, n, src, now, ctx)
        return True
    data = recv.packet[:n]
    st.nbytes_fast += n
    an = st.analyzer
    if an is None:
        st.nfast_rtcp += 1
    elif n >= RTP_HEADER_LENGTH and recv.mem[PACKET_OFFSET] == PLAIN_V2:
        an.pending += recv.record
        if len(an.pending) >= an.sync_at:
            an.sync()
    else:
        an.feed(data, now)
    try:
        st.fwd(data, st.fwd_dst)
    except OSError:
        unsent(st, n, ctx)
    return True


def slow(st: Stream, n: int, src: tuple, now: float, ctx: RelayContext) -> None:
    """`slow_packet` for the packet in RECV; a failure costs that packet only."""
    try:
        slow_packet(st, RECV.packet, n, src, now, ctx)
    except Exception:
        log.exception("packet handling failed", extra=st.session.log_ctx)
        ctx.counters.values["npkts_discard"] += 1


def unsent(st: Stream, n: int, ctx: RelayContext) -> None:
    """The kernel refused a fast-path packet of `n` bytes."""
    st.nfast_unsent += 1
    st.nbytes_unsent += n
    st.ndropped += 1
    ctx.counters.values["npkts_discard"] += 1
