"""Relay drivers: how the stream sockets are waited on, and how PLAIN routes are served.

One driver per process, chosen once at start-up from the configuration
(`Config.relay_driver`, which cli.py reads from the RTPP_RELAY environment variable)
and owned by the media plane (media.Media.driver). Every session points at it
(`Session.driver`), and `Session._reroute` hands it each route change
(`apply_routes`). All drivers share one interface:

* `watch(st)` / `unwatch(st)`: start and stop reading a stream's socket
  (Stream.open / Stream.close call them);
* `apply_routes(sess)`: serve the routes route.decide gave the session's streams:
  a PLAIN stream gets the user-space fast path (`fast_src`, `fwd`, `fwd_dst`),
  a FULL stream none;
* `close()`: release what the driver holds;
* `pause()` / `resume()`: stop and start reading every socket (a live handoff, whose
  new process also restores its sessions paused), packets waiting in the kernel.

`EpollDriver` (the default) puts every socket in one epoll set drained from a single
hub I/O watcher, so forwarding costs no greenlet switch; the stream object owns its
socket's life (Stream.open/close), no greenlet waits for it. It also keeps connected
twins (twins.py). `GreenletDriver` runs one greenlet per stream that blocks on its
socket and drains it: the design's "a greenlet per stream" literally.

Poll pacing (epoll): while the process keeps its core busy, the dispatcher lets
packets gather between two polls instead of waking up for every few of them. Each
wake-up costs a context switch and an event-loop iteration (several microseconds on
a virtual machine, as much as relaying a packet); under load a paced poll serves
several times as many packets. The pause grows with the share of a core the process
used in the last second (`poll_pause`: 2 ms per core, at most 1 ms), so an idle
relay answers every packet at once and a busy one adds at most 1 ms. The classic
polls at most 200 times a second, always.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import gevent
from gevent.monkey import get_original

from rtpp.media.relay import RECV, RelayContext, relay_ready, slow, unsent
from rtpp.media.route import Route
from rtpp.media.rtp import PACKET_OFFSET, PLAIN_V2, RTP_HEADER_LENGTH
from rtpp.media.twins import drop_twin, sync_twins
from rtpp.spawn import spawn_logged

if TYPE_CHECKING:
    from rtpp.media.session import Session, Stream

log = logging.getLogger(__name__)

#: Packets read per wake-up in greenlet mode before yielding to the hub.
DRAIN_BURST = 64
#: Poll pacing: seconds of pause per core of load, and the longest pause.
POLL_PAUSE_PER_LOAD_S = 0.002
POLL_PAUSE_MAX_S = 0.001


def poll_pause(load: float) -> float:
    """The pause between polls for a process that used `load` of a core last second."""
    return min(POLL_PAUSE_MAX_S, POLL_PAUSE_PER_LOAD_S * max(0.0, load))


class UserSpaceDriver:
    """The part every driver shares (route.Driver is the interface): PLAIN routes are
    served by the user-space fast path. It reads no socket itself."""

    name = "user space"

    def watch(self, st: Stream) -> None:
        """Start reading `st.sock`."""

    def unwatch(self, st: Stream) -> None:
        """Stop reading `st.sock` (the stream closes it)."""

    def apply_routes(self, sess: Session) -> None:
        for st in sess.streams():
            if st.route is Route.PLAIN:
                peer = st.peer
                st.fast_src = st.remote
                st.fwd = peer.sock.sendto  # type: ignore[union-attr]
                st.fwd_dst = peer.remote
            else:
                st.fast_src = st.fwd = st.fwd_dst = None

    def refresh(self, sess: Session | None = None) -> None:
        """Nothing relays outside the process here: the streams count everything."""

    def close(self) -> None:
        """Release what the driver holds (after every stream is closed)."""

    def pause(self) -> None:
        """Stop reading every socket (see the module's notes)."""

    def resume(self) -> None:
        """Read every socket again."""


class GreenletDriver(UserSpaceDriver):
    """A greenlet per stream that waits on its socket and drains it."""

    name = "greenlet"

    def __init__(self, ctx: RelayContext) -> None:
        self.ctx = ctx
        self.loops: dict[Stream, tuple[gevent.Greenlet, Any] | None] = {}
        self.paused = False

    def watch(self, st: Stream) -> None:
        self.loops[st] = None if self.paused else self._loop(st)

    def _loop(self, st: Stream) -> tuple[gevent.Greenlet, Any]:
        watcher = gevent.get_hub().loop.io(st.sock.fileno(), 1)  # type: ignore[union-attr]
        return spawn_logged(self.recv_loop, st, watcher, name="recv_loop"), watcher

    def unwatch(self, st: Stream) -> None:
        loop = self.loops.pop(st)
        if loop is not None:
            self._stop(loop)

    @staticmethod
    def _stop(loop: tuple[gevent.Greenlet, Any]) -> None:
        greenlet, watcher = loop
        watcher.stop()
        watcher.close()
        if greenlet is not gevent.getcurrent():
            greenlet.kill(block=False)  # waiting on its watcher: nothing read is lost

    def pause(self) -> None:
        self.paused = True
        for st, loop in self.loops.items():
            if loop is not None:
                self._stop(loop)
                self.loops[st] = None

    def resume(self) -> None:
        self.paused = False
        for st, loop in self.loops.items():
            if loop is None:
                self.loops[st] = self._loop(st)

    def recv_loop(self, st: Stream, watcher: Any) -> None:
        ctx = self.ctx
        hub = gevent.get_hub()
        while st.sock is not None:
            hub.wait(watcher)
            now = time.monotonic()
            RECV.stamp(now)
            for _ in range(DRAIN_BURST):
                if st.sock is None or not relay_ready(st, now, ctx):
                    break


class EpollDriver(UserSpaceDriver):
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

    name = "epoll"
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

    # The driver interface.

    def watch(self, st: Stream) -> None:
        self._watch(self.streams, st.sock, st)

    def unwatch(self, st: Stream) -> None:
        drop_twin(st, self, self.ctx.fds)
        self._unwatch(self.streams, st.sock, st)

    def apply_routes(self, sess: Session) -> None:
        super().apply_routes(sess)
        sync_twins(sess, self, self.ctx.fds)

    def close(self) -> None:
        self.watcher.stop()
        self.watcher.close()
        self.epoll.close()

    def pause(self) -> None:
        self.watcher.stop()

    def resume(self) -> None:
        if not self.watcher.active:
            self.watcher.start(self.dispatch)

    # Twins (twins.py).

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

    # The hot loop.

    def dispatch(self) -> None:
        streams = self.streams
        twins = self.twins
        poll = self.epoll.poll
        ctx = self.ctx
        recv = RECV
        buf, mem, record = recv.packet, recv.mem, recv.record
        first, plain, header_bytes = PACKET_OFFSET, PLAIN_V2, RTP_HEADER_LENGTH
        now = time.monotonic()
        recv.stamp(now)
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
                        slow(st, n, st.twin_dst, now, ctx)
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
                        slow(st, n, src, now, ctx)
                        continue
                data = buf[:n]
                st.nbytes_fast += n
                an = st.analyzer
                if an is None:
                    st.nfast_rtcp += 1
                elif n >= header_bytes and mem[first] == plain:
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
                    unsent(st, n, ctx)
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


DRIVERS: dict[str, type[UserSpaceDriver]] = {"epoll": EpollDriver, "greenlet": GreenletDriver}


def make_driver(name: str, ctx: RelayContext) -> UserSpaceDriver:
    """The driver `name` ("epoll" or "greenlet"); its descriptors belong to the baseline."""
    return DRIVERS[name](ctx)
