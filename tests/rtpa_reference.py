"""Frozen copy of ``rtpp.rtp.RtpAnalyzer`` as it was before its fast path.

The property test in ``test_rtpa_equivalence.py`` feeds the same packet
streams to this class and to the live one and requires identical results. Do
not edit: it is the definition of "unchanged behaviour".
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

from rtpp.media.analyzer import RtpaUpdate
from rtpp.media.rtp import payload_bounds

RTP_HEADER_LENGTH = 12
RTP_SEQ_MOD = 1 << 16
HEADER = struct.Struct("!BBHII")
_MARKER = 0x80
_PT_MASK = 0x7F
_PLAIN_V2 = 0x80
TS_RATES: tuple[int, ...] = (
    (8000, 0, 0, 8000, 8000, 8000, 16000, 8000, 8000, 8000)
    + (44100, 44100, 8000, 8000, 90000, 8000, 11025, 22050, 8000)
    + (0,) * (128 - 19)
)

#: A sequence jump larger than this (either way) restarts tracking.
MAX_SEQ_JUMP = 536
#: Jitter samples are skipped for packets reusing one of this many recent timestamps.
TS_DEDUP_DEPTH = 10
_SEEN_BYTES = RTP_SEQ_MOD // 8


def _seq_delta(seq: int, ref: int) -> int:
    """Signed 16-bit distance from ``ref`` (any extended value) to ``seq``."""
    return ((seq - ref + 0x8000) & 0xFFFF) - 0x8000


@dataclass(slots=True)
class ReferenceRtpAnalyzer:
    """Per-stream RTP statistics; ``feed`` is called for each received RTP packet.

    Sequence tracking works on extended (unwrapped) sequence numbers in runs:
    a run starts at the first packet, on an SSRC change, on a marked packet
    that goes backwards (sender restarted its numbering), or on a jump of more
    than ``MAX_SEQ_JUMP``. A run's ``expected`` is ``max - min + 1`` and its
    ``received`` the unique packets in it; duplicates are told apart with a
    65536-bit map indexed by the 16-bit sequence number. Finished runs are
    added to the totals, so ``nlost = nsent - nrcvd`` over the whole stream.
    """

    perrs: int = 0
    ssrc_changes: int = 0
    #: Longest interval between two fed packets, seconds.
    longest_ipi: float = 0.0
    last_ssrc: int | None = None
    last_seq: int | None = None
    # current run
    _min: int = field(default=0, init=False, repr=False)
    _max: int = field(default=0, init=False, repr=False)
    _count: int = field(default=0, init=False, repr=False)
    _dups: int = field(default=0, init=False, repr=False)
    _seen: bytearray | None = field(default=None, init=False, repr=False)
    # finished runs
    _tot_sent: int = field(default=0, init=False, repr=False)
    _tot_rcvd: int = field(default=0, init=False, repr=False)
    _tot_dups: int = field(default=0, init=False, repr=False)
    # jitter, RTP timestamp units
    _prev_rtime_ts: int | None = field(default=None, init=False, repr=False)
    _prev_ts: int = field(default=0, init=False, repr=False)
    _j: float = field(default=0.0, init=False, repr=False)
    _j_updates_ssrc: int = field(default=0, init=False, repr=False)
    jlast: float = 0.0
    jmax: float = 0.0
    _jtotal: float = field(default=0.0, init=False, repr=False)
    _jcount: int = field(default=0, init=False, repr=False)
    _recent_ts: deque[int] | None = field(default=None, init=False, repr=False)
    _last_arrival: float | None = field(default=None, init=False, repr=False)

    @property
    def nsent(self) -> int:
        current = self._max - self._min + 1 if self._count else 0
        return self._tot_sent + current

    @property
    def nrcvd(self) -> int:
        return self._tot_rcvd + self._count

    @property
    def ndups(self) -> int:
        return self._tot_dups + self._dups

    @property
    def nlost(self) -> int:
        return self.nsent - self.nrcvd

    @property
    def javg(self) -> float:
        return self._jtotal / self._jcount if self._jcount else 0.0

    def feed(self, data: bytes, arrival_s: float) -> RtpaUpdate:
        """Account one received packet; ``arrival_s`` is a monotonic time in seconds."""
        last = self._last_arrival
        if last is not None and arrival_s - last > self.longest_ipi:
            self.longest_ipi = arrival_s - last
        self._last_arrival = arrival_s

        if len(data) < RTP_HEADER_LENGTH:
            self.perrs += 1
            return RtpaUpdate.ERROR
        b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
        if b0 != _PLAIN_V2:
            try:
                payload_bounds(data)
            except ValueError:
                self.perrs += 1
                return RtpaUpdate.ERROR
        rate = TS_RATES[b1 & _PT_MASK]
        self.last_seq = seq

        if ssrc != self.last_ssrc:
            changed = self.last_ssrc is not None
            self.last_ssrc = ssrc
            self._restart(seq)
            if changed:
                self.ssrc_changes += 1
                self._prev_rtime_ts = None
                self._j = 0.0
                self._j_updates_ssrc = 0
                if self._recent_ts is not None:
                    self._recent_ts.clear()
            if rate:
                self._jitter(ts, arrival_s, rate, False)
            return RtpaUpdate.SSRC_CHANGED if changed else RtpaUpdate.OK

        delta = _seq_delta(seq, self._max)
        if b1 & _MARKER and delta < 0:
            self._restart(seq)
            if rate:
                self._jitter(ts, arrival_s, rate, True)
            return RtpaUpdate.OK
        if rate:
            seq_reset = seq == 0 and (self._max & 0xFFFF) < 65500
            self._jitter(ts, arrival_s, rate, seq_reset)
        if delta > MAX_SEQ_JUMP or delta < -MAX_SEQ_JUMP:
            self._restart(seq)
            return RtpaUpdate.OK

        seen = self._seen
        assert seen is not None
        idx = seq >> 3
        bit = 1 << (seq & 7)
        if delta > 0:
            for skipped in range(self._max + 1, self._max + delta):
                seen[(skipped & 0xFFFF) >> 3] &= ~(1 << (skipped & 7))
            self._max += delta
        elif seen[idx] & bit:
            self._dups += 1
            return RtpaUpdate.OK
        elif self._max + delta < self._min:
            self._min = self._max + delta
        seen[idx] |= bit
        self._count += 1
        return RtpaUpdate.OK

    def _restart(self, seq: int) -> None:
        if self._count:
            self._tot_sent += self._max - self._min + 1
            self._tot_rcvd += self._count
            self._tot_dups += self._dups
        self._min = self._max = seq
        self._count = 1
        self._dups = 0
        self._seen = seen = bytearray(_SEEN_BYTES)
        seen[seq >> 3] = 1 << (seq & 7)

    def _jitter(self, ts: int, arrival_s: float, rate: int, skip_sample: bool) -> None:
        rtime_ts = int(arrival_s * rate)
        recent = self._recent_ts
        if recent is None:
            recent = self._recent_ts = deque(maxlen=TS_DEDUP_DEPTH)
        elif ts in recent:
            # A repeated timestamp (duplicate, redundant or event packet) says
            # nothing about transit time.
            if self._j_updates_ssrc == 0:
                self._prev_rtime_ts = rtime_ts
                self._prev_ts = ts
            return
        prev_rtime_ts = self._prev_rtime_ts
        if prev_rtime_ts is not None and not skip_sample:
            drt = rtime_ts - prev_rtime_ts
            dts = ((ts - self._prev_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            # Timestamp resets and jumps are not jitter.
            if drt == 0 or not (-dts > 50 * abs(drt) or dts > 1024 * abs(drt)):
                self._j += (abs(drt - dts) - self._j) / 16.0
                self._j_updates_ssrc += 1
                self.jlast = self._j
                if self._j > self.jmax:
                    self.jmax = self._j
                self._jtotal += self._j
                self._jcount += 1
        recent.append(ts)
        self._prev_rtime_ts = rtime_ts
        self._prev_ts = ts
