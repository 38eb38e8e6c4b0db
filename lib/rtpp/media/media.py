"""The media plane's front: creating sessions, giving legs their ports, copies, teardown.

`Media` is the media context: it owns the port allocators, the descriptor budget,
the relay driver (drivers.py, chosen once from the configuration), recording and
playback, and it folds a session's counters (stats.py) when the session ends. It
raises only its own errors (errors.py).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable

from rtpp.config import Config, ListenAddr
from rtpp.media.analyzer import RtpAnalyzer
from rtpp.media.drivers import make_driver
from rtpp.media.errors import BindFailed, DescriptorsExhausted, Draining, Overloaded, PortsExhausted
from rtpp.media.fdbudget import FdBudget, nofile_limit
from rtpp.media.kernel_driver import KernelDriver
from rtpp.media.notify import Notifier
from rtpp.media.playback.attach import Players
from rtpp.media.playback.resizer import Resizer
from rtpp.media.ports import PortAllocator, SocketPair, bind_pair
from rtpp.media.recording.attach import Recording
from rtpp.media.recording.copy import RemoteCopy, StreamMirror
from rtpp.media.relay import RelayContext
from rtpp.media.session import Session, Stream
from rtpp.media.table import SessionTable
from rtpp.netutil import routed_source
from rtpp.ratelimit import LogThrottle
from rtpp.stats import RESIZER_COUNTERS, Counter, Counters, fold

log = logging.getLogger(__name__)


class Media:
    def __init__(
        self, config: Config, counters: Counters, sessions: SessionTable, notifier: Notifier
    ) -> None:
        self.config = config
        self.counters = counters
        self.sessions = sessions
        self.notifier = notifier
        self.draining = False
        self.load = 0.0  # share of one core used in the last second
        self.unswept_rcvd = 0  # packets of sessions destroyed since the last sweep
        self.overloaded = False
        self.fds = FdBudget(nofile_limit())
        self.ctx = RelayContext(counters, config.strict_source, config.dup_small, self.fds)
        self.driver = KernelDriver.wrap(config, make_driver(config.relay_driver, self.ctx))
        #: The kernel route, when --kernel-offload is given and the host allows it.
        self.kernel = self.driver if isinstance(self.driver, KernelDriver) else None
        self.allocators = {
            family: PortAllocator(config.port_min, config.port_max, config.seq_ports)
            for family in (socket.AF_INET, socket.AF_INET6)
        }
        self._fd_log = LogThrottle()
        self.recording = Recording(config)
        self.players = Players(counters, config.dup_small)
        #: Called with (session, reason) once a session has ended and been folded in.
        self.on_end: Callable[[Session, str], None] | None = None

    # Creation and ports.

    def create_session(self, call_id: str, from_tag: str) -> Session:
        if self.draining:
            raise Draining
        if self.overloaded and self.config.overload_prot:
            self.counters.incr("nsess_refused_overload")
            raise Overloaded
        sess = Session(call_id, from_tag, time.monotonic(), time.time())
        sess.allow_fast = not self.config.dup_small
        sess.driver = self.driver
        sess.set_ttl_max(self.config.setup_ttl_s)
        for st in sess.rtp.streams:
            st.analyzer = RtpAnalyzer()
        return sess

    def register(self, sess: Session) -> None:
        self.sessions.add(sess)
        self.counters.incr("nsess_created")
        log.info("new session, tag %s", sess.from_tag, extra=sess.log_ctx)

    def allocate_leg(self, sess: Session, index: int, laddr: ListenAddr) -> None:
        """Bind an RTP/RTCP port pair for leg `index`, replacing any pair it had.

        Raises NoPorts (PortsExhausted, DescriptorsExhausted, BindFailed).
        """
        try:
            pair = self.allocate_pair(laddr.family, laddr.host, sess.leg(index)[0].tos)
        except PortsExhausted:
            self.counters.incr("nsess_refused_ports")
            log.error("can't allocate a port pair: range exhausted", extra=sess.log_ctx)
            raise
        self.release_leg(sess, index)
        rtp, rtcp = sess.leg(index)
        rtp.open(pair.rtp, laddr)
        rtcp.open(pair.rtcp, laddr)

    def allocate_pair(self, family: int, host: str, tos: int | None = None) -> SocketPair:
        """Bind a port pair within the descriptor budget (a leg's, or a `C` copy's).

        Raises NoPorts (PortsExhausted, DescriptorsExhausted, BindFailed). The caller
        gives the port back to `allocators[family]` and reports each socket closed to
        `fds`.
        """
        if not self.fds.room_for(2):
            self._refuse_for_fds()
            raise DescriptorsExhausted
        try:
            tos = self.config.tos if tos is None else tos
            pair = self.allocators[family].allocate(bind_pair(family, host, tos))
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._refuse_for_fds()
                raise DescriptorsExhausted from exc
            raise BindFailed(str(exc)) from exc
        self.fds.opened(2)
        return pair

    def _refuse_for_fds(self) -> None:
        self.counters.incr("nsess_refused_fds")
        fds = self.fds
        self._fd_log.log(
            log,
            logging.ERROR,
            "refusing media ports: %s of %s file descriptors in use, %d kept for the "
            "control sockets; raise the limit (-L)",
            fds.in_use,
            fds.limit,
            fds.reserve,
        )

    def release_leg(self, sess: Session, index: int) -> None:
        rtp, rtcp = sess.leg(index)
        if rtp.sock is None:
            return
        self.allocators[rtp.laddr.family].release(rtp.port)
        self.fds.closed(2)
        rtp.close()
        rtcp.close()

    def complete(self, sess: Session) -> None:
        if sess.complete:
            return
        sess.start_call_ttl(self.config.ttl_s)
        self.counters.incr("nsess_complete")
        sess.mark_complete()

    # Copies (C to a remote listener, `&& C` mirroring another session).

    def copy_to_remote(self, sess: Session, leg: int, dest: tuple[str, int]) -> tuple[int, str]:
        """Send a copy of what leg `leg` receives to `dest` (RTCP to port + 1) from a port
        pair of its own; (that port, the local address). Raises NoPorts."""
        try:
            local = routed_source(dest[0])
        except OSError as exc:
            raise BindFailed(str(exc)) from exc
        pair = self.allocate_pair(socket.AF_INET, local)  # within the descriptor budget
        fds, allocator = self.fds, self.allocators[socket.AF_INET]

        def rtp_closed() -> None:
            allocator.release(pair.port)
            fds.closed(1)

        def rtcp_closed() -> None:
            fds.closed(1)

        rtp, rtcp = sess.leg(leg)
        rtp.attach_copier(RemoteCopy(pair.rtp, dest, rtp_closed))
        rtcp_copy = RemoteCopy(pair.rtcp, (dest[0], dest[1] + 1), rtcp_closed)
        if self.config.no_rtcp_record:
            rtcp_copy.release()
            rtcp.detach_copier()
        else:
            rtcp.attach_copier(rtcp_copy)
        return pair.port, local

    @staticmethod
    def mirror(source: Session, into: Session) -> None:
        """Copy both directions of `source` out of `into`'s streams."""
        for pipe, own in ((source.rtp, into.rtp), (source.rtcp, into.rtcp)):
            for src_st, dst_st in zip(pipe.streams, own.streams, strict=True):
                src_st.attach_copier(StreamMirror(dst_st))

    # Teardown.

    def destroy(self, sess: Session, reason: str) -> None:
        """Close a session; reason is "delete", "timeout" or "shutdown"."""
        if sess.deleted:
            return
        sess.mark_deleted()
        self.sessions.remove(sess)
        for st in sess.streams():
            self._close_attachments(st)
        for index in (0, 1):
            self.release_leg(sess, index)
        self._fold(sess)
        if reason == "timeout":
            self.counters.incr("nsess_timeout")
            if sess.notify_target is not None and sess.notify_tag is not None:
                self.notifier.send(sess.notify_target, sess.notify_tag)
        caller, callee = sess.rtp.streams[1], sess.rtp.streams[0]
        log.info(
            "session ended (%s): RTP from caller %d, from callee %d, relayed %d/%d, "
            "ignored %d/%d, lasted %.1f s",
            reason,
            caller.npkts_in,
            callee.npkts_in,
            caller.nrelayed,
            callee.nrelayed,
            caller.nignored,
            callee.nignored,
            time.monotonic() - sess.created,
            extra=sess.log_ctx,
        )
        if self.on_end is not None:
            self.on_end(sess, reason)

    def destroy_all(self, reason: str) -> int:
        sessions = list(self.sessions)
        for sess in sessions:
            self.destroy(sess, reason)
        return len(sessions)

    def _close_attachments(self, st: Stream) -> None:
        self.players.stop(st)
        st.detach_recorder()
        st.detach_copier()
        self.set_resize(st, 0)

    # The resizer (U/L `Z<ms>`).

    def set_resize(self, st: Stream, ptime_ms: int) -> None:
        """Re-packetize what `st` receives to `ptime_ms` (0: stop, folding its counters)."""
        if ptime_ms:
            if st.resizer is None:
                st.attach_resizer(Resizer(ptime_ms))
            else:
                st.resizer.set_ptime(ptime_ms)
        elif st.resizer is not None:
            st.resizer.remove()  # what it still holds counts as discarded
            fold(self.counters.values, st, RESIZER_COUNTERS)
            st.detach_resizer()

    def _fold(self, sess: Session) -> None:
        values = self.counters.values
        values["nsess_destroyed"] += 1
        values["total_duration"] += time.monotonic() - sess.created
        # The packets of its last moments, which the sweeper will not see.
        self.unswept_rcvd += sess.take_rcvd()
        for st in sess.streams():
            fold(values, st)
        if sess.complete:
            for pipe, prefix in ((sess.rtp, "nsess_%srtp"), (sess.rtcp, "nsess_%srtcp")):
                active = sum(1 for st in pipe.streams if st.npkts_in > 0)
                if active == 0:
                    values[prefix % "no"] += 1
                elif active == 1:
                    values[prefix % "ow"] += 1

    # Live figures for G and I.

    def sync_kernel(self, sess: Session | None = None) -> None:
        """Bring the packets the kernel relayed into the streams' counters (G, I and the
        sweeper for all sessions, Q for its own)."""
        self.driver.refresh(sess)

    def live_sum(self, counter: Counter) -> float:
        """The live streams' part of a STREAM counter."""
        of_stream = counter.of_stream
        assert of_stream is not None
        return sum(of_stream(st) for sess in self.sessions for st in sess.streams())

    def close(self) -> None:
        """Shutdown: every session destroyed, every recording finished, then the driver."""
        if self.kernel is not None:
            self.kernel.release(self.sessions)  # one commit for all
        self.destroy_all("shutdown")
        self.recording.close()  # every recording written, closed and moved
        self.driver.close()
