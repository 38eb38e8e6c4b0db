"""Per-stream RTP analysis: ``RtpAnalyzer``, the ``rtpa_*`` counters and jitter.

``RtpAnalyzer`` mirrors the classic analyser (``rtp_analyze.c``): sequence
tracking gives the ``rtpa_nsent/nrcvd/ndups/nlost/perrs`` counters, and the
interarrival jitter estimate of RFC 3550 section 6.4.1 gives
``rtpa_jlast/jmax/javg``. Jitter is kept, like the classic, in **RTP
timestamp units** of the payload type's clock (1/8000 s for the usual voice
codecs): arrival times are converted to that clock before the difference is
taken. Payload types without a known static clock produce no jitter.

The relay defers plain packets (rtp.RECORD, appended to ``pending`` straight from
the receive buffer) and ``sync`` analyses them in batches; the in-order step of
that loop is the usual packet's whole analysis, written once. Any other packet
goes through ``_feed``, the complete analysis, whose results are the same.
"""

from __future__ import annotations

import random
import struct
from array import array
from dataclasses import dataclass, field
from enum import IntEnum
from math import trunc

from rtpp.media.rtp import (
    HEADER,
    MARKER,
    PLAIN_V2,
    PT_MASK,
    RECORD,
    RECORD_B1,
    RECORD_BYTES,
    RTP_HEADER_LENGTH,
    RTP_SEQ_MOD,
    TS_RATES,
    payload_bounds,
)


class RtpaUpdate(IntEnum):
    """What ``RtpAnalyzer.feed`` saw."""

    OK = 0
    SSRC_CHANGED = 1
    ERROR = 2  # not a parsable RTP packet (counted in perrs)


#: A sequence jump larger than this (either way) restarts tracking.
MAX_SEQ_JUMP = 536
#: Jitter samples are skipped for packets reusing one of this many recent timestamps.
TS_DEDUP_DEPTH = 10
_SEEN_BYTES = RTP_SEQ_MOD // 8
#: ``_ts_top`` before the first timestamp: above every 32-bit value.
_TS_UNKNOWN = 1 << 32

#: TS_RATES as floats: arrival_s * rate gives the same value, without an int conversion.
_TS_RATES_FLOAT = tuple(float(rate) for rate in TS_RATES)
_unpack_header = HEADER.unpack_from
_StructError = struct.error
_OK = RtpaUpdate.OK


def _sync_at() -> int:
    return RECORD_BYTES * random.randint(16, 48)


#: An empty timestamp ring, and the slot after each slot.
_RING_EMPTY = array("q", [-1] * TS_DEDUP_DEPTH)
_RING_NEXT = tuple((i + 1) % TS_DEDUP_DEPTH for i in range(TS_DEDUP_DEPTH))


def _seq_delta(seq: int, ref: int) -> int:
    """Signed 16-bit distance from ``ref`` (any extended value) to ``seq``."""
    return ((seq - ref + 0x8000) & 0xFFFF) - 0x8000


def _set_bits(seen: bytearray, start: int, count: int) -> None:
    """Set ``count`` (at most 65536) bits from 16-bit position ``start`` on, wrapping."""
    while count > 0:
        n = min(count, RTP_SEQ_MOD - start)
        lo, hi = start, start + n
        while lo < hi and lo & 7:
            seen[lo >> 3] |= 1 << (lo & 7)
            lo += 1
        while hi > lo and hi & 7:
            hi -= 1
            seen[hi >> 3] |= 1 << (hi & 7)
        if lo < hi:
            seen[lo >> 3 : hi >> 3] = b"\xff" * ((hi - lo) >> 3)
        count -= n
        start = 0


def _synced(attr: str) -> property:
    """A result that is read after the deferred packets are analysed."""

    def read(self: RtpAnalyzer):
        self.sync()
        return getattr(self, attr)

    return property(read)


@dataclass(slots=True)
class RtpAnalyzer:
    """Per-stream RTP statistics; ``feed`` is called for each received RTP packet.

    Sequence tracking works on extended (unwrapped) sequence numbers in runs:
    a run starts at the first packet, on an SSRC change, on a marked packet
    that goes backwards (sender restarted its numbering), or on a jump of more
    than ``MAX_SEQ_JUMP``. A run's ``expected`` is ``max - min + 1`` and its
    ``received`` the unique packets in it; duplicates are told apart with a
    65536-bit map indexed by the 16-bit sequence number. Finished runs are
    added to the totals, so ``nlost = nsent - nrcvd`` over the whole stream.

    The usual packet (same SSRC, next sequence number, plain header) has a short
    path that gives exactly the results of the full one (``_feed``): the
    duplicate map is written lazily (the in-order packets since ``_lazy_from``
    are set in bulk when the map is next needed), and the repeated-timestamp
    check is a comparison with the largest recent timestamp (``_ts_top``).

    The relay defers plain packets (rtp.RECORD each, appended to ``pending``) and
    ``sync`` analyses them in batches; every result syncs before it is read, and
    ``nfed`` counts the deferred packets without analysing them.
    """

    # Read or written for every in-order packet: kept together, first in the object.
    _last_ssrc: int | None = field(default=None, init=False, repr=False)
    _max: int = field(default=0, init=False, repr=False)
    #: _max minus the unique packets of the current run: in-order packets keep it.
    _gap: int = field(default=0, init=False, repr=False)
    #: _max minus the packets fed (``nfed``): in-order packets keep it too.
    _fed_gap: int = field(default=0, init=False, repr=False)
    _last_arrival: float | None = field(default=None, init=False, repr=False)
    #: Longest interval between two fed packets, seconds.
    _longest_ipi: float = field(default=0.0, init=False, repr=False)
    _last_seq: int | None = field(default=None, init=False, repr=False)
    #: The largest entry of _recent_ts (-1 when empty, _TS_UNKNOWN before it exists):
    #: a timestamp above it is certainly not a repeated one.
    _ts_top: int = field(default=_TS_UNKNOWN, init=False, repr=False)
    # jitter, RTP timestamp units
    _prev_rtime_ts: int | None = field(default=None, init=False, repr=False)
    _prev_ts: int = field(default=0, init=False, repr=False)
    _j: float = field(default=0.0, init=False, repr=False)
    _jmax: float = field(default=0.0, init=False, repr=False)
    _jtotal: float = field(default=0.0, init=False, repr=False)
    _jcount: int = field(default=0, init=False, repr=False)
    #: The last TS_DEDUP_DEPTH timestamps, a ring written at _ring_pos; -1 marks a free slot.
    _recent_ts: array | None = field(default=None, init=False, repr=False)
    _ring_pos: int = field(default=0, init=False, repr=False)
    # The rest of the current run
    perrs: int = 0
    _ssrc_changes: int = field(default=0, init=False, repr=False)
    _min: int = field(default=0, init=False, repr=False)
    _dups: int = field(default=0, init=False, repr=False)
    _seen: bytearray | None = field(default=None, init=False, repr=False)
    #: Extended sequence numbers in (_lazy_from, _max] are received but not in _seen yet.
    _lazy_from: int = field(default=0, init=False, repr=False)
    # finished runs
    _tot_sent: int = field(default=0, init=False, repr=False)
    _tot_rcvd: int = field(default=0, init=False, repr=False)
    _tot_dups: int = field(default=0, init=False, repr=False)
    #: _jcount and jlast when the current SSRC began: _j is jlast once it was updated.
    _jcount_ssrc: int = field(default=0, init=False, repr=False)
    _jlast_before: float = field(default=0.0, init=False, repr=False)
    #: Deferred packets (RECORD each), analysed by sync() before anything reads a result.
    pending: bytearray = field(default_factory=bytearray, repr=False)
    #: The relay syncs once `pending` holds this many bytes. It differs from stream to
    #: stream, so that streams that started together do not all sync in the same poll.
    sync_at: int = field(default_factory=_sync_at, repr=False)
    #: Flags by the second header byte (marker and payload type) of the packets analysed.
    _b1_seen: bytearray = field(default_factory=lambda: bytearray(256), init=False, repr=False)

    @property
    def nfed(self) -> int:
        """Packets given to ``feed`` or deferred, whatever they were."""
        return self._max - self._fed_gap + len(self.pending) // RECORD_BYTES

    # Results: each analyses what was deferred before it is read.
    last_ssrc = _synced("_last_ssrc")
    last_seq = _synced("_last_seq")
    #: Longest interval between two fed packets, seconds.
    longest_ipi = _synced("_longest_ipi")
    ssrc_changes = _synced("_ssrc_changes")
    jmax = _synced("_jmax")

    @property
    def _count(self) -> int:
        """Unique packets in the current run."""
        return self._max - self._gap

    @property
    def nsent(self) -> int:
        self.sync()
        current = self._max - self._min + 1 if self._count else 0
        return self._tot_sent + current

    @property
    def nrcvd(self) -> int:
        self.sync()
        return self._tot_rcvd + self._count

    @property
    def ndups(self) -> int:
        self.sync()
        return self._tot_dups + self._dups

    @property
    def nlost(self) -> int:
        return self.nsent - self.nrcvd

    @property
    def jlast(self) -> float:
        self.sync()
        return self._jlast()

    def _jlast(self) -> float:
        return self._j if self._jcount > self._jcount_ssrc else self._jlast_before

    @property
    def javg(self) -> float:
        self.sync()
        return self._jtotal / self._jcount if self._jcount else 0.0

    @property
    def payload_types(self) -> list[int]:
        """The payload types of the packets analysed so far, in ascending order."""
        self.sync()
        return sorted({b1 & PT_MASK for b1, seen in enumerate(self._b1_seen) if seen})

    def sync(self) -> None:
        """Analyse the deferred packets, in order (the results are those of ``feed``).

        The usual packet (same SSRC, next sequence number, a known clock, a new
        timestamp) is analysed here, on local variables: this is the one place the
        in-order jitter step is written out. Any other is analysed on its own
        (``_feed_now``) with the state written back first.
        """
        p = self.pending
        if not p:
            return
        b1s = p[RECORD_B1::RECORD_BYTES]
        seen = self._b1_seen
        if b1s.count(b1s[0]) == len(b1s):  # the usual batch: one payload type, no marker
            seen[b1s[0]] = 1
        else:
            for b1 in b1s:
                seen[b1] = 1
        (ssrc0, mx, last_seq, last_arrival, longest, ts_top, prev_ts, prev_rtime_ts,
         j, jmax, jtotal, jcount, ring, pos) = self._hot()  # fmt: skip
        off = 0
        for arrival, _b0, b1, seq, ts, ssrc in RECORD.iter_unpack(p):
            off += RECORD_BYTES
            rate = _TS_RATES_FLOAT[b1 & PT_MASK]
            if ssrc != ssrc0 or seq != (mx + 1) & 0xFFFF or not rate or ts <= ts_top:
                self._set_hot(
                    mx, last_seq, last_arrival, longest, ts_top, prev_ts, prev_rtime_ts,
                    j, jmax, jtotal, jcount, pos,
                )  # fmt: skip
                self._feed_now(bytes(p[off - RTP_HEADER_LENGTH : off]), arrival)
                (ssrc0, mx, last_seq, last_arrival, longest, ts_top, prev_ts, prev_rtime_ts,
                 j, jmax, jtotal, jcount, ring, pos) = self._hot()  # fmt: skip
                continue
            # The in-order step: sequence, arrival gap, then the jitter sample.
            ipi = arrival - last_arrival
            if ipi > longest:
                longest = ipi
            last_arrival = arrival
            last_seq = seq
            mx += 1
            rtime_ts = trunc(arrival * rate)
            if prev_rtime_ts is not None:
                drt = rtime_ts - prev_rtime_ts
                adrt = drt if drt >= 0 else -drt
                dts = ts - prev_ts
                if dts < 0x80000000:
                    ok = dts <= adrt << 10 or drt == 0
                else:
                    dts -= 0x100000000
                    ok = -dts <= 50 * adrt or drt == 0
                if ok:
                    d = drt - dts
                    j -= (j - (d if d >= 0 else -d)) / 16.0
                    if j > jmax:
                        jmax = j
                    jtotal += j
                    jcount += 1
            ring[pos] = ts  # type: ignore[index]
            pos = _RING_NEXT[pos]
            ts_top = prev_ts = ts
            prev_rtime_ts = rtime_ts
        self._set_hot(
            mx, last_seq, last_arrival, longest, ts_top, prev_ts, prev_rtime_ts,
            j, jmax, jtotal, jcount, pos,
        )  # fmt: skip
        del p[:]

    def _hot(self) -> tuple:
        """The state sync() works on in local variables."""
        return (
            self._last_ssrc, self._max, self._last_seq, self._last_arrival,
            self._longest_ipi, self._ts_top, self._prev_ts, self._prev_rtime_ts,
            self._j, self._jmax, self._jtotal, self._jcount, self._recent_ts, self._ring_pos,
        )  # fmt: skip

    def _set_hot(
        self, mx, last_seq, last_arrival, longest, ts_top, prev_ts, prev_rtime_ts,
        j, jmax, jtotal, jcount, pos,
    ) -> None:  # fmt: skip
        """Write back what sync() changed (the SSRC and the ring object it does not)."""
        self._max = mx
        self._last_seq = last_seq
        self._last_arrival = last_arrival
        self._longest_ipi = longest
        self._ts_top = ts_top
        self._prev_ts = prev_ts
        self._prev_rtime_ts = prev_rtime_ts
        self._j = j
        self._jmax = jmax
        self._jtotal = jtotal
        self._jcount = jcount
        self._ring_pos = pos

    def skip_run(self, skipped: int) -> None:
        """About ``skipped`` packets of the stream went by unseen (the kernel relayed
        them): the next packet starts a new run, so they count neither as received
        nor as lost.

        The run's extended numbers are moved, all by one offset (its figures keep
        their values), half the sequence space away from where the next packet is
        expected, so that ``_feed`` sees a jump and restarts the run there."""
        self.sync()
        if self._last_seq is None:
            return
        expected = self._last_seq + skipped + 1
        offset = (expected - self._max + 0x8000) & 0xFFFF
        self._max += offset
        self._min += offset
        self._gap += offset
        self._fed_gap += offset
        self._lazy_from += offset

    def feed(self, data: bytes, arrival_s: float) -> RtpaUpdate:
        """Account one received packet; ``arrival_s`` is a monotonic time in seconds."""
        if self.pending:
            self.sync()
        return self._feed_now(data, arrival_s)

    def _feed_now(self, data: bytes, arrival_s: float) -> RtpaUpdate:
        try:
            b0, b1, seq, ts, ssrc = _unpack_header(data)
        except _StructError:
            return self._feed(data, arrival_s)
        top = self._max + 1
        if ssrc != self._last_ssrc or b0 != PLAIN_V2 or seq != top & 0xFFFF:
            return self._feed(data, arrival_s)
        # The next packet of the current run: _feed() step by step, minus every
        # branch that cannot be taken.
        self._b1_seen[b1] = 1
        ipi = arrival_s - self._last_arrival  # type: ignore[operator]
        if ipi > self._longest_ipi:
            self._longest_ipi = ipi
        self._last_arrival = arrival_s
        self._last_seq = seq
        self._max = top
        rate = TS_RATES[b1 & PT_MASK]
        if rate:
            self._jitter(ts, arrival_s, rate, False)
        return _OK

    def _feed(self, data: bytes, arrival_s: float) -> RtpaUpdate:
        """The complete analysis of one packet."""
        self._fed_gap -= 1
        last = self._last_arrival
        if last is not None and arrival_s - last > self._longest_ipi:
            self._longest_ipi = arrival_s - last
        self._last_arrival = arrival_s

        if len(data) < RTP_HEADER_LENGTH:
            self.perrs += 1
            return RtpaUpdate.ERROR
        b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
        if b0 != PLAIN_V2:
            try:
                payload_bounds(data)
            except ValueError:
                self.perrs += 1
                return RtpaUpdate.ERROR
        self._b1_seen[b1] = 1
        rate = TS_RATES[b1 & PT_MASK]
        self._last_seq = seq

        if ssrc != self._last_ssrc:
            changed = self._last_ssrc is not None
            self._last_ssrc = ssrc
            self._restart(seq)
            if changed:
                self._ssrc_changes += 1
                self._prev_rtime_ts = None
                self._jlast_before = self._jlast()
                self._jcount_ssrc = self._jcount
                self._j = 0.0
                if self._recent_ts is not None:
                    self._recent_ts[:] = _RING_EMPTY
                    self._ring_pos = 0
                    self._ts_top = -1
            if rate:
                self._jitter(ts, arrival_s, rate, False)
            return RtpaUpdate.SSRC_CHANGED if changed else RtpaUpdate.OK

        delta = _seq_delta(seq, self._max)
        if b1 & MARKER and delta < 0:
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

        seen = self._materialize()
        idx = seq >> 3
        bit = 1 << (seq & 7)
        if delta > 0:
            for skipped in range(self._max + 1, self._max + delta):
                seen[(skipped & 0xFFFF) >> 3] &= ~(1 << (skipped & 7))
            self._max += delta
            self._gap += delta
            self._fed_gap += delta
            self._lazy_from = self._max
        elif seen[idx] & bit:
            self._dups += 1
            return RtpaUpdate.OK
        elif self._max + delta < self._min:
            self._min = self._max + delta
        seen[idx] |= bit
        self._gap -= 1
        return RtpaUpdate.OK

    def _materialize(self) -> bytearray:
        """The duplicate map with every received packet of the run written into it."""
        seen = self._seen
        if seen is None:
            seen = self._seen = bytearray(_SEEN_BYTES)
        pending = self._max - self._lazy_from
        if pending > 0:
            _set_bits(seen, (self._lazy_from + 1) & 0xFFFF, min(pending, RTP_SEQ_MOD))
            self._lazy_from = self._max
        return seen

    def _restart(self, seq: int) -> None:
        if self._count:
            self._tot_sent += self._max - self._min + 1
            self._tot_rcvd += self._count
            self._tot_dups += self._dups
        self._fed_gap += seq - self._max
        self._min = self._max = seq
        self._gap = seq - 1
        self._dups = 0
        # A fresh map holding just `seq`, written when first needed.
        self._seen = None
        self._lazy_from = seq - 1

    def _jitter(self, ts: int, arrival_s: float, rate: int, skip_sample: bool) -> None:
        rtime_ts = trunc(arrival_s * rate)
        recent = self._recent_ts
        if recent is None:
            recent = self._recent_ts = array("q", _RING_EMPTY)
            self._ts_top = -1
        elif ts in recent:
            # A repeated timestamp (duplicate, redundant or event packet) says
            # nothing about transit time.
            if self._jcount == self._jcount_ssrc:
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
                if self._j > self._jmax:
                    self._jmax = self._j
                self._jtotal += self._j
                self._jcount += 1
        top = self._ts_top
        pos = self._ring_pos
        evicted = recent[pos]
        recent[pos] = ts
        self._ring_pos = _RING_NEXT[pos]
        if ts > top:
            self._ts_top = ts
        elif evicted == top:
            self._ts_top = max(recent)
        self._prev_rtime_ts = rtime_ts
        self._prev_ts = ts
