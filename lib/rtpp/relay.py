"""Receive and forward media: one long-lived greenlet owns each stream socket.

The plain case (latched source, known destination, nothing attached) is handled by
a few lines that only count and forward. Everything else - learning and checking
source addresses, players, recorders, copies, the resizer, drops - goes through
`slow_packet`, which is complete on its own: the fast path is only a shortcut for a
state `Session.refresh_fast` has proven simple.

Two drivers exist for the same per-packet code (`relay_ready`), chosen by the
environment variable RTPP_RELAY. In "epoll" mode (the default) the greenlet hands
its socket to one shared epoll set that a single hub I/O watcher drains, so
forwarding costs no greenlet switch. In "greenlet" mode the greenlet itself blocks
on its socket's watcher and drains the socket. bench/RESULTS.md compares them.

Poll pacing (epoll mode): while the process keeps its core busy, the dispatcher lets
packets gather between two polls of the media sockets instead of waking up for every
few of them. Each wake-up costs a context switch and an event-loop iteration (several
microseconds on a virtual machine, as much as relaying a packet); under load a paced
poll serves several times as many packets. The pause grows with the share of a core the
process used in the last second (`poll_pause`: 2 ms per core, at most 1 ms), so an idle
relay answers every packet at once and a busy one adds at most 1 ms. The classic polls
at most 200 times a second, always.

Connected twins (epoll mode): once an RTP stream has latched, a second socket is
bound to the same local address and port and connected to the latched source.
Linux delivers a datagram to the connected socket that matches its source exactly,
so that source's packets arrive on the twin with the address check already done by
the kernel (no source tuple to build and compare), and the peer's twin sends without
an address (no per-packet address parsing or route lookup). Everything from any other
source still arrives on the stream's own socket and takes the checked path, so drops
are counted and re-latching works as before. SO_REUSEPORT is set only for the moment
of the twin's bind and cleared again, so no other socket can join the port.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.event import Event
from gevent.monkey import get_original

from rtpp.ports import RCVBUF_BYTES
from rtpp.rtp import RECORD_BYTES
from rtpp.session import Stream
from rtpp.stats import Counters

log = logging.getLogger(__name__)

RECV_BUF_BYTES = 65536
#: Packets read per wake-up in greenlet mode before yielding to the hub.
DRAIN_BURST = 64
#: A command that changed a leg's address lets a new source take the leg over for this long.
UPDATE_WINDOW_S = 10.0
#: How far a packet's sequence number may be from the last one seen to move a latch.
RELATCH_SEQ_RANGE = 536
SMALL_PACKET_BYTES = 128
MODE = os.environ.get("RTPP_RELAY", "epoll")
#: Poll pacing: seconds of pause per core of load, and the longest pause.
POLL_PAUSE_PER_LOAD_S = 0.002
POLL_PAUSE_MAX_S = 0.001

_RTP_HEAD = struct.Struct("!BBHII")
#: Packets are read at offset 8 of _mem, after the time of the poll that found them: the
#: first 20 bytes are then a plain RTP packet's analyzer record (rtp.RECORD).
_mem = bytearray(8 + RECV_BUF_BYTES)
_view = memoryview(_mem)[8:]
_buf = _view
_rtpa_record = memoryview(_mem)[:RECORD_BYTES]
_STAMP = struct.Struct("!d")


@dataclass(slots=True)
class RelayContext:
    counters: Counters
    strict_source: bool = False
    dup_small: bool = False
    fds: Any = None  # fdbudget.FdBudget of the media sockets, when there is one
    #: The shortest time between the ends of two polls of the media sockets.
    poll_pause: float = 0.0


def poll_pause(load: float) -> float:
    """The pause between polls for a process that used `load` of a core last second."""
    return min(POLL_PAUSE_MAX_S, POLL_PAUSE_PER_LOAD_S * max(0.0, load))


def _send(st: Stream, data, ctx: RelayContext) -> bool:
    """Send `data` from stream `st` to its party; False when the kernel refused it."""
    try:
        st.sock.sendto(data, st.remote)
        if ctx.dup_small and len(data) < SMALL_PACKET_BYTES:
            st.sock.sendto(data, st.remote)
    except OSError:
        return False
    return True


def _guess_rtcp(st: Stream, src: tuple) -> None:
    """After an RTP source is learned, point the RTCP leg at port+1 of the same host."""
    rtcp = st.session.rtcp.streams[st.index]
    port = src[1]
    if port >= 65535 or rtcp.learned:
        return
    if rtcp.remote is not None and rtcp.remote[0] == src[0]:
        return
    rtcp.remote = (src[0], port + 1, *src[2:])


def _learn(st: Stream, src: tuple) -> None:
    st.remote = src
    st.latched = True
    st.learned = True
    if st.is_rtp:
        _guess_rtcp(st, src)
    st.session.refresh_fast()


def _may_relatch(st: Stream, data, n: int, now: float) -> bool:
    """A latched RTP leg moves only after a changed command address or for its own SSRC."""
    if not st.is_rtp or n < 12:
        return False
    b0, _, seq, _, ssrc = _RTP_HEAD.unpack_from(data)
    if b0 >> 6 != 2:
        return False
    an = st.analyzer
    if an is None or an.last_ssrc is None:
        return False
    if now - st.cmd_changed_at < UPDATE_WINDOW_S:
        return True
    if ssrc != an.last_ssrc or an.last_seq is None:
        return False
    dist = (seq - an.last_seq) & 0xFFFF
    return min(dist, 0x10000 - dist) <= RELATCH_SEQ_RANGE


def accept_source(st: Stream, data, n: int, src: tuple, now: float, ctx: RelayContext) -> bool:
    """Latching rules (PROTOCOL.md §8.2, tightened): True if the packet is accepted."""
    remote = st.remote
    if remote is None:
        _move(st, src, "latched to")
        return True
    if src == remote:
        if not st.latched:
            st.latched = True
            st.session.refresh_fast()
        return True
    if st.asymmetric:
        return src[0] == remote[0]
    if not st.latched:
        _move(st, src, "moved to")
        return True
    if ctx.strict_source or not _may_relatch(st, data, n, now):
        return False
    _move(st, src, "re-latched to")
    return True


def _move(st: Stream, src: tuple, what: str) -> None:
    old = st.remote[:2] if st.remote is not None else None
    log.info(
        "%s leg %d %s %s (was %s)",
        _kind(st),
        st.index,
        what,
        src[:2],
        old,
        extra=st.session.log_ctx,
    )
    _learn(st, src)


def _kind(st: Stream) -> str:
    return "RTP" if st.is_rtp else "RTCP"


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
    """Read and handle one packet of `st`'s socket; False when there was none."""
    try:
        n, src = st.sock.recvfrom_into(_buf)
    except BlockingIOError:
        return False
    except OSError as exc:
        # ICMP errors surface here (ECONNREFUSED); the packet is gone either way.
        log.debug("recvfrom: %s", exc)
        ctx.counters.values["npkts_discard"] += 1
        return True
    if src != st.fast_src:
        _slow(st, n, src, now, ctx)
        return True
    data = _view[:n]
    st.nbytes_fast += n
    if st.analyzer is not None:
        st.analyzer.feed(data, now)
    else:
        st.nfast_rtcp += 1
    try:
        st.fwd(data, st.fwd_dst)
    except OSError:
        _unsent(st, n, ctx)
    return True


def _slow(st: Stream, n: int, src: tuple, now: float, ctx: RelayContext) -> None:
    try:
        slow_packet(st, _view, n, src, now, ctx)
    except Exception:
        log.exception("packet handling failed", extra=st.session.log_ctx)
        ctx.counters.values["npkts_discard"] += 1


def _unsent(st: Stream, n: int, ctx: RelayContext) -> None:
    st.nfast_unsent += 1
    st.nbytes_unsent += n
    st.ndropped += 1
    ctx.counters.values["npkts_discard"] += 1


class EpollDispatcher:
    """One epoll set for every media socket, drained from a single hub I/O watcher.

    Forwarding then costs no greenlet switch and one watcher callback per loop
    iteration rather than per socket. After a large batch the set is polled again
    (up to MAX_ROUNDS times) before returning to the hub, so one hub iteration serves
    many packets under load; after a small one it is not, as that poll would mostly
    find nothing and cost a system call per wake-up.

    A paced dispatcher (see the module's notes) polls again until a poll finds
    nothing (up to MAX_PACED_ROUNDS times) before its pause: a socket is read once per
    poll, and a stream sending faster than once per pause, or a burst, must not wait
    one pause per packet.
    """

    MAX_EVENTS = 1024
    MAX_ROUNDS = 4
    MAX_PACED_ROUNDS = 64
    #: A batch at least this large is followed by another poll.
    REPOLL_EVENTS = 32

    def __init__(self, ctx: RelayContext) -> None:
        epoll = get_original("select", "epoll")
        self.epoll = epoll()
        self.ctx = ctx
        # Indexed by descriptor (a list index is cheaper than a dict lookup per packet);
        # both lists always have the same length.
        self.streams: list[Stream | None] = []
        self.twins: list[Stream | None] = []
        self.last_end = 0.0  # monotonic time the last paced poll returned
        self.watcher = gevent.get_hub().loop.io(self.epoll.fileno(), 1)
        self.watcher.start(self.dispatch)

    def add(self, st: Stream) -> None:
        self._watch(self.streams, st.sock, st)

    def remove(self, st: Stream) -> None:
        self._unwatch(self.streams, st.sock, st)

    def add_twin(self, st: Stream) -> None:
        self._watch(self.twins, st.twin, st)

    def remove_twin(self, st: Stream) -> None:
        self._unwatch(self.twins, st.twin, st)

    def _watch(self, table: list[Stream | None], sock: Any, st: Stream) -> None:
        fd = sock.fileno()
        if fd >= len(table):
            more = [None] * (max(fd + 1, 2 * len(table)) - len(table))
            self.streams.extend(more)
            self.twins.extend(more)
        table[fd] = st
        self.epoll.register(fd, 1)

    def _unwatch(self, table: list[Stream | None], sock: Any, st: Stream) -> None:
        fd = sock.fileno()
        if fd < len(table) and table[fd] is st:
            table[fd] = None
            self.epoll.unregister(fd)

    def dispatch(self) -> None:
        streams = self.streams
        twins = self.twins
        poll = self.epoll.poll
        ctx = self.ctx
        buf, view, mem, record = _buf, _view, _mem, _rtpa_record
        now = time.monotonic()
        _STAMP.pack_into(mem, 0, now)
        pause = ctx.poll_pause
        for _ in range(self.MAX_PACED_ROUNDS if pause else self.MAX_ROUNDS):
            events = poll(0, self.MAX_EVENTS)
            for fd, _ in events:
                st = twins[fd]
                if st is not None:
                    # A packet from the latched source: the kernel checked the address.
                    try:
                        n = st.twin.recv_into(buf)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        # An ICMP error about the connected source; the packet is gone.
                        log.debug("twin recv: %s", exc)
                        ctx.counters.values["npkts_discard"] += 1
                        continue
                    if st.fast_src is None:
                        _slow(st, n, st.twin_dst, now, ctx)
                        continue
                else:
                    st = streams[fd]
                    if st is None:
                        continue
                    # relay_ready() inlined for its common case: this runs per packet.
                    try:
                        n, src = st.sock.recvfrom_into(buf)
                    except OSError:
                        relay_ready(st, now, ctx)
                        continue
                    if src != st.fast_src:
                        _slow(st, n, src, now, ctx)
                        continue
                data = view[:n]
                st.nbytes_fast += n
                an = st.analyzer
                if an is None:
                    st.nfast_rtcp += 1
                elif n >= 12 and mem[8] == 0x80:
                    # Analysed later, in order (RtpAnalyzer.sync); counted now (Stream.nfast).
                    pending = an.pending
                    pending += record
                    if len(pending) >= an.sync_at:
                        an.sync()
                else:
                    an.feed(data, now)
                try:
                    if st.tfwd is not None:
                        st.tfwd(data)
                    else:
                        st.fwd(data, st.fwd_dst)
                except OSError:
                    _unsent(st, n, ctx)
            if pause:
                if not events:
                    self._pace(pause)
                    return
            elif len(events) < self.REPOLL_EVENTS:
                return

    _sleep = staticmethod(get_original("time", "sleep"))

    def _pace(self, pause: float) -> None:
        """Return no sooner than `pause` after the previous paced poll returned.

        This blocks the whole process, on purpose: a gevent timer would need the
        dispatcher's watcher stopped and started (an epoll_ctl pair each time) and the
        hub would still wake up for the sockets. Commands and timers wait as long as
        packets do, at most POLL_PAUSE_MAX_S. After an idle spell it costs nothing.
        """
        end = time.monotonic()
        rest = self.last_end + pause - end
        if rest > 0:
            self._sleep(rest)
            end += rest
        self.last_end = end


_dispatchers: dict[int, EpollDispatcher] = {}


def _wants_twin(st: Stream) -> bool:
    sess = st.session
    return (
        sess.allow_fast
        and not sess.deleted
        and st.latched
        and st.remote is not None
        and not st.asymmetric
        and st.sock is not None
        and st.relay is not None
    )


def sync_twins(sess) -> None:
    """Give each latched RTP stream a twin connected to its source; route the fast path
    through the peer's twin when it is connected where the packets go."""
    for st in sess.rtp.streams:
        want = st.remote if _wants_twin(st) else None
        if st.twin_dst != want:
            drop_twin(st)
            if want is not None:
                _open_twin(st, want)
    for st in sess.rtp.streams:
        peer = st.peer
        fast = st.fast_src is not None and peer.twin is not None and peer.twin_dst == st.fwd_dst
        st.tfwd = peer.twin.send if fast else None


def _open_twin(st: Stream, dst: tuple) -> None:
    ctx = st.relay.ctx
    if ctx.fds is not None and not ctx.fds.room_for(1):
        return
    sock = st.sock
    twin = socket._socket.socket(sock.family, socket.SOCK_DGRAM)  # type: ignore[attr-defined]
    try:
        twin.setblocking(False)
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        if sock.family == socket.AF_INET6:
            twin.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        else:
            tos = sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)
            if tos:
                twin.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        # Both sockets share the port only for the moment of the bind: with the flag off
        # again on the first one, nobody else can join the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            twin.bind(sock.getsockname())
        finally:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
        twin.connect(dst)
    except OSError as exc:
        log.debug("no connected twin for port %d: %s", st.port, exc)
        twin.close()
        return
    st.twin = twin
    st.twin_dst = dst
    if ctx.fds is not None:
        ctx.fds.opened(1)
    dispatcher(ctx).add_twin(st)


def drop_twin(st: Stream) -> None:
    twin = st.twin
    if twin is None:
        return
    ctx = st.relay.ctx  # a twin exists only while the stream's relay does
    dispatcher(ctx).remove_twin(st)
    twin.close()
    st.twin = None
    st.twin_dst = None
    st.tfwd = None
    if ctx.fds is not None:
        ctx.fds.closed(1)


def prepare_relay(ctx: RelayContext) -> None:
    """Create what the relay mode needs up front (its descriptors belong to the baseline)."""
    if MODE != "greenlet":
        dispatcher(ctx)


def dispatcher(ctx: RelayContext) -> EpollDispatcher:
    """The dispatcher of this process (one per context)."""
    found = _dispatchers.get(id(ctx))
    if found is None:
        found = _dispatchers[id(ctx)] = EpollDispatcher(ctx)
    return found


class StreamRelay:
    """Owns one stream socket for its whole life: registering it, and closing it.

    In "greenlet" mode the greenlet itself waits on the socket and drains it; in the
    default "epoll" mode it hands the socket to the shared dispatcher and waits to
    be closed.
    """

    __slots__ = ("stream", "ctx", "greenlet", "closed", "_stop", "_watcher")

    def __init__(self, st: Stream, ctx: RelayContext) -> None:
        self.stream = st
        self.ctx = ctx
        self.closed = False
        self._stop = Event()
        self._watcher = None
        if MODE != "greenlet":
            dispatcher(ctx).add(st)
        self.greenlet = gevent.spawn(self._run)
        self.greenlet.link_exception(_log_crash)

    def _run(self) -> None:
        if MODE != "greenlet":
            self._stop.wait()
            return
        st, ctx = self.stream, self.ctx
        hub = gevent.get_hub()
        self._watcher = hub.loop.io(st.sock.fileno(), 1)
        while not self.closed:
            hub.wait(self._watcher)
            now = time.monotonic()
            for _ in range(DRAIN_BURST):
                if not relay_ready(st, now, ctx):
                    break

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
        if MODE != "greenlet":
            drop_twin(self.stream)
            dispatcher(self.ctx).remove(self.stream)
        self.stream.sock.close()
        self._stop.set()
        if self.greenlet is not gevent.getcurrent():
            self.greenlet.kill(block=False)


def _log_crash(greenlet: Any) -> None:
    log.error("relay greenlet died: %r", greenlet.exception)
