"""The kernel route: the driver (route.Driver) that hands plain RTP pipes to the kernel.

`Session._reroute` gives each stream its route (route.decide) and calls the session's
driver. With --kernel-offload that is a `KernelDriver`: it lets the user-space driver
it wraps serve every route first (so the user-space fast path is in place under a
bound pipe: a packet that still reaches a socket, at the moment of a change or from a
stranger, is handled as before), then binds the session's RTP pipe in the kernel
(kernel.py) when both of its streams are offloadable (route.offloadable), and unbinds
it otherwise; the change is committed before `_reroute` returns, so the next packet
takes the new route. Streams of a bound pipe get `Route.KERNEL`. Reading the sockets
stays with the wrapped driver.

RTCP stays in user space: it is about one packet in 250, and leaving it there halves
the counters read every second.

Counts: what the kernel relayed is added to `Stream.nkernel` by `refresh` (the sweeper
every second, Q, G and I) and when a binding is removed (a session's end included).
The analyzer sees none of those packets; `Stream.seq_skew` gives re-latching
(latch.may_relatch) the sequence numbers they moved the party's stream on by, and a
stream back from the kernel starts a new analyzer run (RtpAnalyzer.skip_run).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from rtpp.config import Config
from rtpp.media.kernel import Counts, KernelOffload, Leg, OffloadError, table_name
from rtpp.media.route import Driver, Route, offloadable
from rtpp.ratelimit import LogThrottle

if TYPE_CHECKING:
    from rtpp.media.session import Pipe, Session, Stream

log = logging.getLogger(__name__)

#: IP and UDP header bytes of a packet (no IPv4 options, no IPv6 extension headers).
IP_UDP_HEADERS = 20 + 8
IP6_UDP_HEADERS = 40 + 8


class KernelDriver:
    name = "kernel"

    def __init__(self, engine: KernelOffload, inner: Driver) -> None:
        self.engine = engine
        self.inner = inner
        self._log = LogThrottle()
        #: A live handoff's successor restoring its sessions: bindings are queued, not
        #: committed, until `adopt` matches them with the table's.
        self.adopting = False

    @classmethod
    def wrap(cls, config: Config, inner: Driver) -> Driver:
        """`inner` wrapped when --kernel-offload is given and the host allows it (else
        `inner` itself, after one log line saying what is missing)."""
        if not config.kernel_offload:
            return inner
        locals_ = [(laddr.family, laddr.host) for laddr in config.listen]
        low, high = config.port_min, config.port_max + 1  # + the last RTCP port
        engine = KernelOffload.open(table_name(low, high, [h for _, h in locals_]), low, high,
                                    locals_, adopt=config.kernel_adopt)  # fmt: skip
        if engine is None:
            return inner
        driver = cls(engine, inner)
        driver.adopting = config.kernel_adopt
        return driver

    # route.Driver

    def watch(self, st: Stream) -> None:
        self.inner.watch(st)

    def unwatch(self, st: Stream) -> None:
        self.inner.unwatch(st)

    def pause(self) -> None:
        """Stop reading the sockets (a live handoff); the kernel forwards on."""
        self.inner.pause()

    def resume(self) -> None:
        self.inner.resume()

    @property
    def add_twin(self):
        """The wrapped driver's (twins.TwinWatch), None for one without twins: a live
        handoff's successor watches the handed-over twins with it."""
        return getattr(self.inner, "add_twin", None)

    def apply_routes(self, sess: Session) -> None:
        self.inner.apply_routes(sess)
        if self.engine.closed:
            return
        pipe = sess.rtp
        s0, s1 = pipe.streams
        engine = self.engine
        before = engine.live.get(pipe)
        if offloadable(s0) and offloadable(s1):
            bound = engine.bind(pipe, _leg(s0), _leg(s1))
        else:
            engine.unbind(pipe)
            bound = False
        if self.adopting:
            return  # committed (and marked) by `adopt`
        if engine.dirty:
            self._commit()
        after = engine.live.get(pipe)
        bound = bound and after is not None
        _mark(pipe, bound, moved=before not in (None, after))
        if bound:
            s0.route = s1.route = Route.KERNEL

    def refresh(self, sess: Session | None = None) -> None:
        """Add what the kernel relayed since the last call to the streams' counters;
        with `sess`, at least that session's (a read of its counters' shard only)."""
        keys = None if sess is None else (sess.rtp,)
        try:
            counts = self.engine.read_counters(keys)
        except OffloadError as exc:
            self._log.log(log, logging.ERROR, "kernel offload: reading counters failed: %s", exc)
            return
        _apply(counts)

    def release(self, sessions: Iterable[Session]) -> None:
        """Unbind these sessions in one commit, their last counts applied (shutdown: the
        sessions are destroyed after this, each without a commit of its own)."""
        pipes = [sess.rtp for sess in sessions]
        for pipe in pipes:
            self.engine.unbind(pipe)
        if self.engine.dirty:
            self._commit()
        for pipe in pipes:
            _mark(pipe, False)

    def export(self) -> list:
        """For a live handoff: the bindings and their counters' last readings, after the
        streams' counters took what the kernel relayed so far."""
        self.refresh()
        return self.engine.export()

    def adopt(self, handed: list, sessions: Iterable[Session]) -> None:
        """A live handoff's successor, its sessions restored: take over the bindings
        the predecessor handed over, in one commit (the kernel keeps forwarding them
        meanwhile), then serve the routes as usual."""
        self.adopting = False
        kept = self.engine.adopt_bindings(handed)
        if self.engine.dirty:
            self._commit()
        for sess in sessions:
            self.apply_routes(sess)
        log.info("kernel offload: %d of %d handed-over bindings kept", kept, len(handed))

    def close(self) -> None:
        """Remove every binding and the tables (after every stream is closed)."""
        self.engine.close()
        _apply(self.engine.take_counts())
        self.inner.close()

    def _commit(self) -> None:
        try:
            self.engine.commit()
        except OffloadError as exc:
            self._log.log(log, logging.ERROR, "kernel offload: update failed: %s", exc)
        _apply(self.engine.take_counts())


def _apply(counts: dict[Pipe, Counts]) -> None:
    for pipe, (pkts_ab, bytes_ab, pkts_ba, bytes_ba) in counts.items():
        s0, s1 = pipe.streams
        s0.nkernel += pkts_ab
        s1.nkernel += pkts_ba
        # nftables counts whole IP packets; the streams count UDP payload bytes.
        headers = IP6_UDP_HEADERS if s0.laddr is not None and s0.laddr.ipv6 else IP_UDP_HEADERS
        s0.nbytes_kernel += bytes_ab - pkts_ab * headers
        s1.nbytes_kernel += bytes_ba - pkts_ba * headers


def _mark(pipe: Pipe, bound: bool, moved: bool = False) -> None:
    """Keep what Stream.seq_skew needs: where the binding's count started, and the skew
    a stream takes back to user space. After a move the analyzer is about to see the
    packet that moved it, the newest of all, so the skew counts again from there."""
    for st in pipe.streams:
        an = st.analyzer
        if bound and moved:
            st.skew_base = 0
            st.kernel_mark = st.nkernel
        elif bound and st.kernel_mark < 0:
            if an is None or an.nfed != st.skew_nfed:
                st.skew_base = 0
            st.kernel_mark = st.nkernel
        elif not bound and st.kernel_mark >= 0:
            relayed = st.nkernel - st.kernel_mark
            st.skew_base += relayed
            if an is not None:
                if relayed:
                    an.skip_run(st.skew_base)
                st.skew_nfed = an.nfed
            st.kernel_mark = -1


def _leg(st: Stream) -> Leg:
    remote, local = st.remote, st.local
    assert remote is not None
    return Leg((remote[0], remote[1]), (local[0], local[1]))
