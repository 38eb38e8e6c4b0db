"""Receive and forward media: one long-lived greenlet owns each stream socket.

The plain case (latched source, known destination, nothing attached) is handled by
a few lines that only count and forward. Everything else - learning and checking
source addresses, players, recorders, copies, the resizer, drops - goes through
`slow_packet`, which is complete on its own: the fast path is only a shortcut for a
state `Session.refresh_fast` has proven simple.

Two drivers exist for the same per-packet code. In "watcher" mode (the default) the
greenlet installs the socket's I/O watcher with the packet handler as its callback
and then just waits to be closed, so forwarding costs no greenlet switch. In
"greenlet" mode the greenlet itself blocks on the watcher and drains the socket.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.event import Event
from gevent.monkey import get_original

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
MODE = os.environ.get("RTPP_RELAY", "watcher")

_RTP_HEAD = struct.Struct("!BBHII")
_buf = bytearray(RECV_BUF_BYTES)
_view = memoryview(_buf)


@dataclass(slots=True)
class RelayContext:
    counters: Counters
    strict_source: bool = False
    dup_small: bool = False


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
    st.nrcvd += 1
    data = view[:n]
    if not accept_source(st, data, n, src, now, ctx):
        st.nignored += 1
        counters["npkts_discard"] += 1
        return
    st.npkts_in += 1
    if st.analyzer is not None:
        st.analyzer.feed(data, now)
    resizer = st.resizer
    if resizer is not None:
        packet = bytes(data)
        if resizer.ingest(packet, now):
            while (out := resizer.poll(now)) is not None:
                deliver(st, out, src, ctx)
            return
    deliver(st, data, src, ctx)


def deliver(st: Stream, data, src: tuple, ctx: RelayContext) -> bool:
    """Record, copy and relay one accepted packet from the party `st` faces."""
    counters = ctx.counters.values
    peer = st.peer
    if peer.player is not None:
        st.ndropped += 1
        st.nplayer_drop += 1
        counters["npkts_discard"] += 1
        return False
    if st.recorder is not None or st.copier is not None:
        _record(st, data, src)
    if peer.sock is None or peer.remote is None or not _send(peer, data, ctx):
        st.ndropped += 1
        counters["npkts_discard"] += 1
        return False
    st.nrelayed += 1
    return True


def _record(st: Stream, data, src: tuple) -> None:
    """Hand a packet to the stream's recorder and copy; their failure never drops it."""
    wall = time.time()
    for sink in (st.recorder, st.copier):
        if sink is None:
            continue
        try:
            sink.write(data, src, st.local, wall)
        except Exception:
            log.exception("recording failed", extra=st.session.log_ctx)


def make_reader(st: Stream, ctx: RelayContext, burst: int):
    """The packet handler of one stream socket: reads up to `burst` packets."""
    recv = st.sock.recvfrom_into
    buf = _buf
    view = _view
    monotonic = time.monotonic
    counters = ctx.counters.values

    def on_readable() -> None:
        now = monotonic()
        for _ in range(burst):
            try:
                n, src = recv(buf)
            except BlockingIOError:
                return
            except OSError as exc:
                # ICMP errors surface here (ECONNREFUSED); the packet is gone either way.
                log.debug("recvfrom: %s", exc)
                counters["npkts_discard"] += 1
                continue
            if st.fast and src == st.remote:
                st.nrcvd += 1
                st.npkts_in += 1
                data = view[:n]
                if st.analyzer is not None:
                    st.analyzer.feed(data, now)
                peer = st.peer
                try:
                    peer.sock.sendto(data, peer.remote)
                    st.nrelayed += 1
                except OSError:
                    st.ndropped += 1
                    counters["npkts_discard"] += 1
            else:
                try:
                    slow_packet(st, view, n, src, now, ctx)
                except Exception:
                    log.exception("%s: packet handling failed", st.session.call_id)
                    counters["npkts_discard"] += 1

    return on_readable


class EpollDispatcher:
    """One epoll set for every media socket, drained from a single hub watcher."""

    MAX_EVENTS = 1024

    def __init__(self) -> None:
        epoll = get_original("select", "epoll")
        self.epoll = epoll()
        self.handlers: dict[int, Any] = {}
        self.watcher = gevent.get_hub().loop.io(self.epoll.fileno(), 1)
        self.watcher.start(self.dispatch)

    def add(self, fd: int, handler) -> None:
        self.handlers[fd] = handler
        self.epoll.register(fd, 1)

    def remove(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            self.epoll.unregister(fd)

    def dispatch(self) -> None:
        handlers = self.handlers
        for fd, _ in self.epoll.poll(0, self.MAX_EVENTS):
            handler = handlers.get(fd)
            if handler is not None:
                handler()


_dispatcher: EpollDispatcher | None = None


def dispatcher() -> EpollDispatcher:
    global _dispatcher
    if _dispatcher is None:
        _dispatcher = EpollDispatcher()
    return _dispatcher


class StreamRelay:
    """Owns one stream socket: its watcher, its greenlet, and closing both."""

    __slots__ = ("stream", "watcher", "greenlet", "closed", "_stop")

    def __init__(self, st: Stream, ctx: RelayContext) -> None:
        self.stream = st
        self.closed = False
        self._stop = Event()
        hub = gevent.get_hub()
        self.watcher = hub.loop.io(st.sock.fileno(), 1)
        self.greenlet = gevent.spawn(self._run, ctx)
        self.greenlet.link_exception(_log_crash)

    def _run(self, ctx: RelayContext) -> None:
        st = self.stream
        if MODE == "greenlet":
            reader = make_reader(st, ctx, DRAIN_BURST)
            wait = gevent.get_hub().wait
            while not self.closed:
                wait(self.watcher)
                reader()
        elif MODE == "epoll":
            dispatcher().add(st.sock.fileno(), make_reader(st, ctx, 1))
            self._stop.wait()
        else:
            self.watcher.start(make_reader(st, ctx, 1))
            self._stop.wait()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.watcher.stop()
        self.watcher.close()
        if MODE == "epoll":
            dispatcher().remove(self.stream.sock.fileno())
        self.stream.sock.close()
        self._stop.set()
        if self.greenlet is not gevent.getcurrent():
            self.greenlet.kill(block=False)


def _log_crash(greenlet: Any) -> None:
    log.error("relay greenlet died: %r", greenlet.exception)
