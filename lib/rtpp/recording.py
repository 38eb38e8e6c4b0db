"""Attaching recorders and copies to streams (R, N, C and `-a`; OPERATIONS.md §3).

A recorder on a stream writes what that stream receives, i.e. what the party it
faces sent. Leg 1 faces the from-tag party (the originator, file suffix `.o`), leg 0
the other party (`.a`).
"""

from __future__ import annotations

import logging
import socket

from rtpp.config import Config
from rtpp.record import (
    RecordCounters,
    Recorder,
    RecordFormat,
    copy_name,
    record_name,
    stream_suffix,
)
from rtpp.session import Session, Stream

log = logging.getLogger(__name__)


class RemoteCopy:
    """Sends every packet of a stream, unchanged, from its own socket to a remote listener."""

    def __init__(self, sock, dest: tuple) -> None:
        self.sock = sock
        self.dest = dest
        self.nsent = 0
        self.nfailed = 0
        self.on_close = None

    def write(self, data, src, dst, arrival_wall_s: float) -> None:
        try:
            self.sock.sendto(data, self.dest)
            self.nsent += 1
        except OSError:
            self.nfailed += 1

    def close(self) -> None:
        self.sock.close()
        if self.on_close is not None:
            self.on_close()
            self.on_close = None

    release = close


class SwappedRtcp:
    """Single-file mode writes RTCP as sent onward: proxy -> the party it is relayed to."""

    def __init__(self, recorder: Recorder, st: Stream) -> None:
        self.recorder = recorder
        self.stream = st

    def write(self, data, src, dst, arrival_wall_s: float) -> None:
        peer = self.stream.peer
        if peer.sock is None or peer.remote is None:
            return
        self.recorder.write(data, local_of(peer), peer.remote[:2], arrival_wall_s)

    def close(self) -> None:
        self.recorder.release()

    release = close


def local_of(st: Stream) -> tuple:
    """The stream's local (host, port); a wildcard host becomes the routed source address."""
    host, port = st.sock.getsockname()[:2]
    if host in ("0.0.0.0", "::") and st.remote is not None:
        host = _routed_source(st.laddr.family, st.remote[0]) or host
    return host, port


def _routed_source(family: int, remote_host: str) -> str | None:
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.connect((remote_host, 9))
        return probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()


class Recording:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.counters = RecordCounters()
        self.fmt = RecordFormat.PCAP if config.record_pcap else RecordFormat.ADHOC

    @property
    def enabled(self) -> bool:
        return self.config.record_dir is not None

    def _open(self, name: str, label: str) -> Recorder | None:
        return Recorder.open(
            name,
            self.config.record_dir,
            spool_dir=self.config.spool_dir,
            fmt=self.fmt,
            label=label,
            counters=self.counters,
        )

    def start(self, sess: Session, leg: int, single: bool) -> bool:
        """Record what leg `leg` receives (and its RTCP unless -R); True on success."""
        if not self.enabled:
            log.error("%s: directory for saving local recordings is not configured", sess.call_id)
            return False
        if single and self.config.record_pcap:
            return self._start_single(sess, leg)
        return self._start_per_stream(sess, leg)

    def _start_per_stream(self, sess: Session, leg: int) -> bool:
        rtp, rtcp = sess.leg(leg)
        if rtp.recorder is not None:
            return True
        originator = leg == 1
        targets = [(rtp, False)] if self.config.no_rtcp_record else [(rtp, False), (rtcp, True)]
        for st, is_rtcp in targets:
            name = record_name(sess.call_id, sess.from_tag, stream_suffix(originator, is_rtcp))
            recorder = self._open(name, "RTCP" if is_rtcp else "RTP")
            if recorder is None:
                return st is not rtp
            st.recorder = recorder
            log.info("%s: starting recording %s on port %d", sess.call_id, name, st.port)
        sess.refresh_fast()
        return True

    def _shared(self, sess: Session) -> Recorder | None:
        for st in sess.streams():
            rec = st.recorder
            if isinstance(rec, SwappedRtcp):
                return rec.recorder
            if isinstance(rec, Recorder) and rec.name.endswith(".pcap"):
                return rec
        return None

    def _start_single(self, sess: Session, leg: int) -> bool:
        rtp, rtcp = sess.leg(leg)
        if rtp.recorder is not None:
            return False
        shared = self._shared(sess)
        if shared is None:
            shared = self._open(record_name(sess.call_id, sess.from_tag, "pcap"), "RTP/RTCP")
            if shared is None:
                return False
        else:
            shared.retain()
        rtp.recorder = shared
        if not self.config.no_rtcp_record:
            rtcp.recorder = SwappedRtcp(shared.retain(), rtcp)
        sess.refresh_fast()
        return True

    def stop(self, sess: Session, leg: int) -> bool:
        stopped = False
        for st in sess.leg(leg):
            if st.recorder is not None:
                st.recorder.release()
                st.recorder = None
                stopped = True
        sess.refresh_fast()
        return stopped

    def record_all(self, sess: Session) -> None:
        for leg in (1, 0):
            self.start(sess, leg, single=True)

    def local_copy(self, sess: Session, leg: int, name: str, single: bool) -> bool:
        """C with a file target: like R into `NAME.rtp`/`NAME.rtcp` (or `NAME`)."""
        if not self.enabled:
            return False
        rtp, rtcp = sess.leg(leg)
        if single and self.config.record_pcap:
            rec = self._open(copy_name(name, None), "RTP/RTCP")
            if rec is None:
                return False
            _replace_copier(rtp, rec)
            if not self.config.no_rtcp_record:
                _replace_copier(rtcp, SwappedRtcp(rec.retain(), rtcp))
        else:
            targets = (
                [(rtp, "rtp")] if self.config.no_rtcp_record else [(rtp, "rtp"), (rtcp, "rtcp")]
            )
            for st, suffix in targets:
                rec = self._open(copy_name(name, suffix), suffix.upper())
                if rec is None:
                    return False
                _replace_copier(st, rec)
        sess.refresh_fast()
        return True


def _replace_copier(st: Stream, copier) -> None:
    if st.copier is not None:
        st.copier.release()
    st.copier = copier
