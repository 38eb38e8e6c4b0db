"""Attaching recorders and copies to streams (R, N, C and `-a`; OPERATIONS.md §3).

A recorder on a stream writes what that stream receives, i.e. what the party it
faces sent. Leg 1 faces the from-tag party (the originator, file suffix `.o`), leg 0
the other party (`.a`).

Unlike the classic daemon, a new recording never truncates an existing file: when the
name is taken (another media stream `ftag;2` of the call, R again after N, a file left
from before) the first free numbered variant is used, e.g. `CALLID=FTAG.2.o.rtp`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from functools import lru_cache

from rtpp.config import Config
from rtpp.media.recording.record import (
    FileWriter,
    RecordCounters,
    Recorder,
    RecordFormat,
    copy_name,
    record_name,
    stream_suffix,
)
from rtpp.media.session import Session, Stream
from rtpp.media.sink import is_live
from rtpp.netutil import routed_source

log = logging.getLogger(__name__)


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

    @property
    def active(self) -> bool:
        return self.recorder.active

    def close(self) -> None:
        self.recorder.release()

    release = close


class RoutedLocal:
    """Pcap per-stream recorder of a wildcard-bound stream: the destination written is the
    local address the kernel uses toward the sender, not 0.0.0.0 / :: (OPERATIONS.md 3.6)."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    @property
    def active(self) -> bool:
        return self.recorder.active

    def write(self, data, src, dst, arrival_wall_s: float) -> None:
        if dst[0] in WILDCARDS:
            dst = (_routed_source(src[0]) or dst[0], dst[1])
        self.recorder.write(data, src, dst, arrival_wall_s)

    def close(self) -> None:
        self.recorder.release()

    release = close


WILDCARDS = {"0.0.0.0": socket.AF_INET, "::": socket.AF_INET6}


def local_of(st: Stream) -> tuple:
    """The stream's local (host, port); a wildcard host becomes the routed source address."""
    host, port = st.local[:2]
    if host in WILDCARDS and st.remote is not None:
        host = _routed_source(st.remote[0]) or host
    return host, port


@lru_cache(maxsize=1024)
def _routed_source(remote_host: str) -> str | None:
    try:
        return routed_source(remote_host)
    except OSError:
        return None


#: How many numbered alternatives (`CALLID=FTAG.2.o.rtp`, ...) are tried for a taken name.
MAX_VARIANTS = 1000


def _variant(suffix: str, number: int) -> str:
    return suffix if number == 1 else f"{number}.{suffix}"


#: How long shutdown waits for the writer thread to finish every recording.
CLOSE_TIMEOUT_S = 10.0


class Recording:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.counters = RecordCounters()
        self.fmt = RecordFormat.PCAP if config.record_pcap else RecordFormat.ADHOC
        self.writer = FileWriter()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Shutdown: wait (blocking) until every closed recorder is written, closed and
        moved out of the spool, then end the writer thread. False on timeout."""
        if self.writer.stop(timeout_s):
            return True
        log.error(
            "recordings not finished within %.0f s: %d bytes still waiting for the disk",
            timeout_s,
            self.writer.backlog_bytes,
        )
        return False

    @property
    def enabled(self) -> bool:
        return self.config.record_dir is not None

    # -- files

    def _taken(self, name: str) -> bool:
        dirs = (self.config.record_dir, self.config.spool_dir)
        return any(d is not None and os.path.lexists(os.path.join(d, name)) for d in dirs)

    def _fresh_names(self, make: Callable[[int], list[str]]) -> list[str]:
        """`make(1)`, or the first numbered variant none of whose names exists yet.

        A recording never truncates an existing file: another media stream of the same
        call (`ftag;2`), a restart after N, or an earlier recording keep their files.
        """
        first = make(1)
        for number in range(1, MAX_VARIANTS + 1):
            names = first if number == 1 else make(number)
            if not any(self._taken(name) for name in names):
                if number > 1:
                    log.warning("%s exists, recording to %s instead", first[0], names[0])
                return names
        return first

    def _open(self, name: str, label: str) -> Recorder | None:
        return Recorder.open(
            name,
            self.config.record_dir,
            spool_dir=self.config.spool_dir,
            fmt=self.fmt,
            label=label,
            counters=self.counters,
            writer=self.writer,
        )

    def _wrap(self, st: Stream, recorder: Recorder):
        if self.fmt is RecordFormat.PCAP and st.laddr is not None and st.laddr.wildcard:
            return RoutedLocal(recorder)
        return recorder

    # -- R / N / -a

    def start(self, sess: Session, leg: int, single: bool) -> bool:
        """Record what leg `leg` receives (and its RTCP unless -R); True on success."""
        if not self.enabled:
            log.error("directory for saving local recordings is not configured", extra=sess.log_ctx)
            return False
        _drop_dead(sess.leg(leg))
        if single and self.config.record_pcap:
            return self._start_single(sess, leg)
        return self._start_per_stream(sess, leg)

    def _legs_streams(self, sess: Session, leg: int) -> list[tuple[Stream, bool]]:
        rtp, rtcp = sess.leg(leg)
        return [(rtp, False)] if self.config.no_rtcp_record else [(rtp, False), (rtcp, True)]

    def _start_per_stream(self, sess: Session, leg: int) -> bool:
        rtp = sess.rtp.streams[leg]
        todo = [(st, rtcp) for st, rtcp in self._legs_streams(sess, leg) if st.recorder is None]
        if todo:
            originator = leg == 1
            names = self._fresh_names(
                lambda n: [
                    record_name(
                        sess.call_id, sess.from_tag, _variant(stream_suffix(originator, rtcp), n)
                    )
                    for _, rtcp in todo
                ]
            )
            for (st, is_rtcp), name in zip(todo, names, strict=True):
                recorder = self._open(name, "RTCP" if is_rtcp else "RTP")
                if recorder is None:
                    break
                st.attach_recorder(self._wrap(st, recorder))
                log.info("starting recording %s on port %d", name, st.port, extra=sess.log_ctx)
        return rtp.recorder is not None

    def _shared(self, sess: Session) -> Recorder | None:
        for st in sess.streams():
            rec = st.recorder
            if isinstance(rec, SwappedRtcp | RoutedLocal):
                rec = rec.recorder
            if isinstance(rec, Recorder) and rec.active and rec.name.endswith(".pcap"):
                return rec
        return None

    def _start_single(self, sess: Session, leg: int) -> bool:
        rtp, rtcp = sess.leg(leg)
        if rtp.recorder is not None:
            return False
        shared = self._shared(sess)
        if shared is None:
            (name,) = self._fresh_names(
                lambda n: [record_name(sess.call_id, sess.from_tag, _variant("pcap", n))]
            )
            shared = self._open(name, "RTP/RTCP")
            if shared is None:
                return False
            log.info("starting recording %s", name, extra=sess.log_ctx)
        else:
            shared.retain()
        rtp.attach_recorder(self._wrap(rtp, shared))
        if not self.config.no_rtcp_record:
            rtcp.attach_recorder(SwappedRtcp(shared.retain(), rtcp))
        return True

    def stop(self, sess: Session, leg: int) -> bool:
        """N: stop recording and copying what leg `leg` receives.

        The classic keeps R's recorder and C's copy in one slot of the stream, so N
        stops either; here they are two slots and N stops both.
        """
        stopped = False
        for st in sess.leg(leg):
            if st.detach_recorder():
                stopped = True
            if st.detach_copier():
                stopped = True
        return stopped

    def record_all(self, sess: Session) -> None:
        for leg in (1, 0):
            self.start(sess, leg, single=True)

    # -- C with a file target

    def local_copy(self, sess: Session, leg: int, name: str, single: bool) -> bool:
        """C with a file target: like R into `NAME.rtp`/`NAME.rtcp` (or `NAME`)."""
        if not self.enabled:
            return False
        if single and self.config.record_pcap:
            return self._copy_single(sess, leg, name)
        return self._copy_per_stream(sess, leg, name)

    def _copy_single(self, sess: Session, leg: int, name: str) -> bool:
        rtp, rtcp = sess.leg(leg)
        _drop_dead((rtp, rtcp), copies=True)
        if rtp.recorder is not None or rtp.copier is not None:
            # As the classic: one single-file recording per leg, never over another.
            return False
        rec = _single_copy(sess.rtp.streams[1 - leg].copier)
        if rec is not None:  # the other leg's single file takes this leg too
            rec.retain()
        else:
            (fname,) = self._fresh_names(lambda n: [copy_name(_numbered(name, n), None)])
            rec = self._open(fname, "RTP/RTCP")
            if rec is None:
                return False
        rtp.attach_copier(self._wrap(rtp, rec))
        if not self.config.no_rtcp_record:
            rtcp.attach_copier(SwappedRtcp(rec.retain(), rtcp))
        return True

    def _copy_per_stream(self, sess: Session, leg: int, name: str) -> bool:
        targets = self._legs_streams(sess, leg)
        names = self._fresh_names(
            lambda n: [
                copy_name(_numbered(name, n), "rtcp" if rtcp else "rtp") for _, rtcp in targets
            ]
        )
        opened = False
        for (st, is_rtcp), fname in zip(targets, names, strict=True):
            rec = self._open(fname, "RTCP" if is_rtcp else "RTP")
            if rec is None:
                break
            st.attach_copier(self._wrap(st, rec))
            opened = opened or not is_rtcp
        return opened


def _single_copy(copier) -> Recorder | None:
    """The live single-file recorder behind a leg's `Cs` copy, if that is what it has."""
    rec = copier.recorder if isinstance(copier, RoutedLocal) else copier
    if isinstance(rec, Recorder) and rec.active and rec.label == "RTP/RTCP":
        return rec
    return None


def _numbered(name: str, number: int) -> str:
    return name if number == 1 else f"{name}.{number}"


def _drop_dead(streams: tuple[Stream, Stream], copies: bool = False) -> None:
    """Detach recorders (and with `copies`, copies) that stopped on an error so that a
    new R (or Cs) can start afresh."""
    for st in streams:
        if st.recorder is not None and not is_live(st.recorder):
            st.detach_recorder()
        if copies and st.copier is not None and not is_live(st.copier):
            st.detach_copier()
