"""Session lifecycle: creating sessions, giving legs their ports, tearing them down."""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable

from rtpp.commands.errors import CommandError, ECode
from rtpp.config import Config, ListenAddr
from rtpp.fdbudget import FdBudget, nofile_limit
from rtpp.notify import Notifier
from rtpp.players import Players
from rtpp.ports import PortAllocator, PortsExhausted, SocketPair, bind_pair
from rtpp.ratelimit import LogThrottle
from rtpp.recording import Recording
from rtpp.relay import MODE, RelayContext, StreamRelay, prepare_relay, sync_twins
from rtpp.rtp import RtpAnalyzer
from rtpp.session import Session, Stream
from rtpp.session_table import SessionTable
from rtpp.stats import Counters

log = logging.getLogger(__name__)

#: Analyzer counters folded into the global rtpa_* names when a stream ends.
RTPA_FIELDS = ("nsent", "nrcvd", "ndups", "nlost", "perrs")
#: Global names of the resizer's own counters (npkts_in, npkts_out, npkts_discard).
RESIZER_FIELDS = ("npkts_resizer_in", "npkts_resizer_out", "npkts_resizer_discard")


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
        prepare_relay(self.ctx)
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
            raise CommandError(ECode.SLOWSHTDN)
        if self.overloaded and self.config.overload_prot:
            self.counters.incr("nsess_refused_overload")
            raise CommandError(ECode.OVERLOAD)
        sess = Session(call_id, from_tag, time.monotonic(), time.time())
        sess.allow_fast = not self.config.dup_small
        if MODE != "greenlet":
            sess.on_route = sync_twins
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

        Raises PortsExhausted, or OSError (EMFILE when the descriptor reserve is reached).
        """
        try:
            pair = self.allocate_pair(laddr.family, laddr.host)
        except PortsExhausted:
            self.counters.incr("nsess_refused_ports")
            log.error("can't allocate a port pair: range exhausted", extra=sess.log_ctx)
            raise
        self.release_leg(sess, index)
        rtp, rtcp = sess.leg(index)
        for st, sock in ((rtp, pair.rtp), (rtcp, pair.rtcp)):
            st.sock = sock
            st.local = sock.getsockname()[:2]
            st.port = st.local[1]
            st.laddr = laddr
            st.relay = StreamRelay(st, self.ctx)
        sess.refresh_fast()

    def allocate_pair(self, family: int, host: str) -> SocketPair:
        """Bind a port pair within the descriptor budget (a leg's, or a `C` copy's).

        Raises PortsExhausted, or OSError (EMFILE when the descriptor reserve is reached).
        The caller gives the port back to `allocators[family]` and reports each socket
        closed to `fds`.
        """
        if not self.fds.room_for(2):
            self._refuse_for_fds()
            raise OSError(errno.EMFILE, "descriptor reserve reached")
        try:
            pair = self.allocators[family].allocate(bind_pair(family, host, self.config.tos))
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._refuse_for_fds()
            raise
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
        for st in (rtp, rtcp):
            st.relay.close()
            st.relay = None
            st.sock = None

    def complete(self, sess: Session) -> None:
        if sess.complete:
            return
        sess.complete = True
        sess.set_ttl_max(self.config.ttl_s)
        self.counters.incr("nsess_complete")
        sess.refresh_fast()

    # Teardown.

    def destroy(self, sess: Session, reason: str) -> None:
        """Close a session; reason is "delete", "timeout" or "shutdown"."""
        if sess.deleted:
            return
        sess.deleted = True
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
        for name in ("recorder", "copier"):
            att = getattr(st, name)
            if att is not None:
                att.release()
                setattr(st, name, None)
        if st.resizer is not None:
            self.drop_resizer(st)

    def drop_resizer(self, st: Stream) -> None:
        resizer = st.resizer
        st.resizer = None
        resizer.remove()
        values = self.counters.values
        for name in RESIZER_FIELDS:
            values[name] += getattr(resizer, name.replace("resizer_", ""))
        st.session.refresh_fast()

    def _fold(self, sess: Session) -> None:
        values = self.counters.values
        values["nsess_destroyed"] += 1
        values["total_duration"] += time.monotonic() - sess.created
        # The packets of its last moments, which the sweeper will not see.
        self.unswept_rcvd += sess.take_rcvd()
        for st in sess.streams():
            values["npkts_rcvd"] += st.nrcvd
            values["npkts_relayed"] += st.nrelayed
            if st.analyzer is not None:
                for name in RTPA_FIELDS:
                    values["rtpa_" + name] += getattr(st.analyzer, name)
        if sess.complete:
            for pipe, prefix in ((sess.rtp, "nsess_%srtp"), (sess.rtcp, "nsess_%srtcp")):
                active = sum(1 for st in pipe.streams if st.npkts_in > 0)
                if active == 0:
                    values[prefix % "no"] += 1
                elif active == 1:
                    values[prefix % "ow"] += 1

    # Live figures for G and I.

    def live_sum(self, name: str) -> int:
        total = 0
        for sess in self.sessions:
            for st in sess.streams():
                total += _live_value(st, name)
        return total


def _live_value(st: Stream, name: str) -> int:
    if name == "npkts_rcvd":
        return st.nrcvd
    if name == "npkts_relayed":
        return st.nrelayed
    if name in RESIZER_FIELDS:
        return getattr(st.resizer, name.replace("resizer_", "")) if st.resizer else 0
    if name.startswith("rtpa_"):
        return getattr(st.analyzer, name[5:]) if st.analyzer else 0
    return 0
