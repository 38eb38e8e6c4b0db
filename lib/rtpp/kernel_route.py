"""The kernel route of a session's RTP pipe: when it applies, and the counts it brings.

An RTP pipe goes to the kernel (kernel_offload.py) while both of its streams are plain:
the session complete, each leg's address known (latched, or fixed by the controller on
an asymmetric leg), nothing that needs the packets in user space (recorder, copy,
resizer, a player on either side) and both legs in one address family. The user-space
fast route stays in place under it: a packet that still reaches the socket (the moment
of a change, a stranger) is handled as before. RTCP stays in user space: it is about
one packet in 250, and leaving it there halves the counters read every second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from rtpp.config import Config
from rtpp.kernel_offload import KernelOffload, Leg, OffloadError, table_name
from rtpp.ratelimit import LogThrottle
from rtpp.session import Pipe, Session, Stream

log = logging.getLogger(__name__)


class KernelRoute:
    def __init__(self, engine: KernelOffload) -> None:
        self.engine = engine
        self._log = LogThrottle()

    @classmethod
    def open(cls, config: Config) -> KernelRoute | None:
        """The route when --kernel-offload is given and the host allows it, else None."""
        if not config.kernel_offload:
            return None
        locals_ = [(laddr.family, laddr.host) for laddr in config.listen]
        low, high = config.port_min, config.port_max + 1  # + the last RTCP port
        name = table_name(low, high, [host for _, host in locals_])
        engine = KernelOffload.open(name, low, high, locals_)
        return cls(engine) if engine is not None else None

    def update(self, sess: Session) -> None:
        """Bind or unbind the session's RTP pipe to match its state; applied before it
        returns, so the next packet takes the new route."""
        pipe = sess.rtp
        s0, s1 = pipe.streams
        engine = self.engine
        before = engine.live.get(pipe)
        if _plain(s0) and _plain(s1):
            bound = engine.bind(pipe, _leg(s0), _leg(s1))
        else:
            engine.unbind(pipe)
            bound = False
        if engine.dirty:
            self._commit()
            self._apply(engine.take_counts())
        after = engine.live.get(pipe)
        self._mark(pipe, bound and after is not None, moved=before not in (None, after))

    def release(self, sessions: Iterable[Session]) -> None:
        """Sessions ending: no packet is forwarded once this returns, and their last
        counts are applied. Many at once (shutdown) cost one commit."""
        pipes = [sess.rtp for sess in sessions]
        for pipe in pipes:
            self.engine.unbind(pipe)
        if self.engine.dirty:
            self._commit()
            self._apply(self.engine.take_counts())
        for pipe in pipes:
            self._mark(pipe, False)

    def sync(self, sess: Session | None = None) -> None:
        """Add what the kernel relayed since the last call to the streams' counters (with
        `sess`, at least that session's: a read of its shard only)."""
        keys = None if sess is None else (sess.rtp,)
        try:
            counts = self.engine.read_counters(keys)
        except OffloadError as exc:
            self._log.log(log, logging.ERROR, "kernel offload: reading counters failed: %s", exc)
            return
        self._apply(counts)

    @staticmethod
    def _apply(counts: dict) -> None:
        for pipe, (pkts_ab, _, pkts_ba, _) in counts.items():
            s0, s1 = pipe.streams
            s0.nkernel += pkts_ab
            s1.nkernel += pkts_ba

    def close(self) -> None:
        self.engine.close()

    def _commit(self) -> None:
        try:
            self.engine.commit()
        except OffloadError as exc:
            self._log.log(log, logging.ERROR, "kernel offload: update failed: %s", exc)

    @staticmethod
    def _mark(pipe: Pipe, bound: bool, moved: bool = False) -> None:
        """Keep the sequence-number skew that re-latching needs (relay._may_relatch).

        After a move the analyzer is about to see the packet that moved it, the newest
        of all, so the skew counts again from there."""
        for st in pipe.streams:
            if bound and moved:
                st.seq_skew = 0
                st.kernel_mark = st.nkernel
            elif bound and st.kernel_mark < 0:
                if st.analyzer is None or st.analyzer.nfed != st.skew_nfed:
                    st.seq_skew = 0
                st.kernel_mark = st.nkernel
            elif not bound and st.kernel_mark >= 0:
                relayed = st.nkernel - st.kernel_mark
                st.seq_skew += relayed
                if st.analyzer is not None:
                    if relayed:
                        st.analyzer.skip_run(st.seq_skew)
                    st.skew_nfed = st.analyzer.nfed
                st.kernel_mark = -1


def seq_skew(st: Stream, sync: Callable[[Session], None] | None) -> int:
    """RTP packets of `st`'s party the analyzer has not seen because the kernel relayed
    them after the last one it saw (0 when it has seen packets since)."""
    if st.kernel_mark < 0:
        if st.analyzer is not None and st.analyzer.nfed == st.skew_nfed:
            return st.seq_skew
        return 0
    if sync is not None:
        sync(st.session)  # its shard only
    return st.seq_skew + st.nkernel - st.kernel_mark


def _plain(st: Stream) -> bool:
    sess = st.session
    peer = st.peer
    return (
        sess.allow_fast
        and sess.complete
        and not sess.deleted
        and st.remote is not None
        and (st.latched or st.asymmetric)
        and st.sock is not None
        and st.recorder is None
        and st.copier is None
        and st.resizer is None
        and st.player is None
        and peer.player is None
    )


def _leg(st: Stream) -> Leg:
    return Leg((st.remote[0], st.remote[1]), (st.local[0], st.local[1]))
