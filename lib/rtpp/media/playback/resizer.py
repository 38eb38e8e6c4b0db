"""Re-packetizer for the ``Z<ms>`` modifier (the classic ``rtp_resizer.c``).

Pure: the caller passes the arrival time (monotonic seconds) to ``ingest`` and
the current time to ``poll``. All timestamp arithmetic is modulo 2**32 and
"samples" are RTP timestamp units of the 8 kHz clock every supported codec
uses here.

Usage per received RTP packet of the resized party::

    if not resizer.ingest(data, now):
        forward(data)                      # not resizable: passes unchanged
    while (out := resizer.poll(now)) is not None:
        if forward(out):                   # sent: only then is it counted
            resizer.npkts_out += 1

Differences from the reference, on purpose: G.722 is split at one byte per
timestamp unit (the reference splits at half that), and RTP padding of a
queued packet is dropped (the P bit cleared) since its payload may be re-cut.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rtpp.media.rtp import RtpPacket, ts_less

PT_PCMU = 0
PT_GSM = 3
PT_G723 = 4
PT_PCMA = 8
PT_G722 = 9
PT_G729 = 18

RESIZABLE_PTS = frozenset((PT_PCMU, PT_GSM, PT_G723, PT_PCMA, PT_G722, PT_G729))

CLOCK_RATE = 8000
#: Largest packet (header + payload) a merge may build.
MAX_PACKET_SIZE = 8192
#: Minimum queue limit, samples.
MIN_MAXBUF = 320
#: Clock mapping: how far ahead of arrival the newest timestamp is anchored.
SYNC_AHEAD = 40
#: Clock mapping: slack before the mapping is pulled back.
SYNC_SLACK = 160

G729_FRAME_BYTES = 10
G729_FRAME_SAMPLES = 80
GSM_FRAME_BYTES = 33
GSM_FRAME_SAMPLES = 160
G723_FRAME_SAMPLES = 240
#: G.723.1 frame length by the two low bits of its first byte (3 = invalid).
G723_FRAME_BYTES = (24, 20, 4, None)

_M32 = 0xFFFFFFFF


def min_samples(pt: int) -> int:
    """Smallest output packet for a codec, samples."""
    if pt == PT_GSM:
        return GSM_FRAME_SAMPLES
    if pt == PT_G723:
        return G723_FRAME_SAMPLES
    return 80


def output_samples(ms: int, pt: int) -> int:
    """Target output size: ``ms * 8`` rounded up to a multiple of ``min_samples``."""
    low = min_samples(pt)
    return max(low, -(-ms * 8 // low) * low)


def count_samples(pt: int, payload: bytes) -> int | None:
    """Samples in a payload, or None if the resizer cannot handle it."""
    n = len(payload)
    if n == 0:
        return None
    if pt in (PT_PCMU, PT_PCMA, PT_G722):
        return n
    if pt == PT_G729:
        # A trailing 2-byte SID frame counts as a whole frame.
        return G729_FRAME_SAMPLES * (n // G729_FRAME_BYTES + (1 if n % G729_FRAME_BYTES else 0))
    if pt == PT_GSM:
        return GSM_FRAME_SAMPLES * (n // GSM_FRAME_BYTES)
    if pt == PT_G723:
        samples = pos = 0
        while pos < n:
            frame = G723_FRAME_BYTES[payload[pos] & 3]
            if frame is None:
                return None
            samples += G723_FRAME_SAMPLES
            pos += frame
        return samples
    return None


def first_chunk(pt: int, payload: bytes, nsamples: int, want: int) -> tuple[int, int] | None:
    """Cut of at least ``want`` samples from a payload holding more than that.

    Returns ``(bytes, samples)`` on whole-frame boundaries, or None when the
    rounded cut would take the whole payload.
    """
    if pt in (PT_PCMU, PT_PCMA, PT_G722):
        return want, want
    if pt == PT_G729:
        return _frame_cut(want, nsamples, G729_FRAME_SAMPLES, G729_FRAME_BYTES)
    if pt == PT_GSM:
        return _frame_cut(want, nsamples, GSM_FRAME_SAMPLES, GSM_FRAME_BYTES)
    if pt == PT_G723:
        frames = -(-want // G723_FRAME_SAMPLES)
        if frames * G723_FRAME_SAMPLES >= nsamples:
            return None
        pos = found = 0
        while pos < len(payload) and found < frames * G723_FRAME_SAMPLES:
            found += G723_FRAME_SAMPLES
            pos += G723_FRAME_BYTES[payload[pos] & 3] or 0
        return min(pos, len(payload)), found
    return None


def _frame_cut(
    want: int, nsamples: int, frame_samples: int, frame_bytes: int
) -> tuple[int, int] | None:
    frames = -(-want // frame_samples)
    if frames * frame_samples >= nsamples:
        return None
    return frames * frame_bytes, frames * frame_samples


@dataclass(slots=True)
class _Queued:
    pkt: RtpPacket
    nsamples: int
    appendable: bool  # False after a G.729 SID frame: nothing may follow it

    @property
    def size(self) -> int:
        return self.pkt.header_length + len(self.pkt.payload)

    def take_head(self, nbytes: int, nsamples: int) -> bytes:
        """Remove the first ``nbytes``; the rest starts ``nsamples`` later, unmarked."""
        pkt = self.pkt
        head, pkt.payload = pkt.payload[:nbytes], pkt.payload[nbytes:]
        pkt.ts = (pkt.ts + nsamples) & _M32
        pkt.marker = False
        self.nsamples -= nsamples
        return head

    def append(self, payload: bytes, nsamples: int) -> None:
        self.pkt.payload += payload
        self.nsamples += nsamples


class Resizer:
    """Queue of one party's packets, re-cut to ``ms`` milliseconds.

    Counters (global statistics): ``npkts_in`` (absorbed: queued or dropped
    late), ``npkts_out`` (returned by ``poll`` and then sent: the caller counts
    it, as only the output path knows), ``npkts_discard`` (dropped late, plus
    packets thrown away by ``remove``).
    """

    __slots__ = (
        "_ms",
        "_out",
        "_maxbuf",
        "_queue",
        "_nsamples",
        "_seq",
        "_ssrc",
        "_last_sent_ts",
        "_tsdelta",
        "npkts_in",
        "npkts_out",
        "npkts_discard",
    )

    def __init__(self, ms: int) -> None:
        self._queue: list[_Queued] = []
        self._nsamples = 0
        self._seq: int | None = None
        self._ssrc: int | None = None
        self._last_sent_ts: int | None = None
        self._tsdelta: int | None = None
        self.npkts_in = 0
        self.npkts_out = 0
        self.npkts_discard = 0
        self.set_ptime(ms)

    @property
    def ptime_ms(self) -> int:
        return self._ms

    def set_ptime(self, ms: int) -> None:
        """Change the target size; queued packets are kept."""
        if ms <= 0:
            raise ValueError(f"resizer target must be positive, got {ms} ms")
        self._ms = ms
        # Unrounded, as the classic uses it for the wait threshold and the
        # clock slack; emitted packets use output_samples() of the head codec.
        self._out = ms * 8
        self._maxbuf = max(2 * self._out, MIN_MAXBUF)

    def __len__(self) -> int:
        return len(self._queue)

    def __bool__(self) -> bool:
        # An attached resizer is "there" even with an empty queue.
        return True

    @property
    def queued_samples(self) -> int:
        return self._nsamples

    def ingest(self, packet: bytes, now_s: float) -> bool:
        """Absorb a packet; False means "not resizable, forward it unchanged"."""
        try:
            pkt = RtpPacket.parse(packet)
        except ValueError:
            return False
        nsamples = count_samples(pkt.payload_type, pkt.payload)
        if nsamples is None:
            return False
        self.npkts_in += 1
        if pkt.ssrc != self._ssrc:
            # A new source: timestamps are no longer comparable.
            self._ssrc = pkt.ssrc
            self._last_sent_ts = None
            self._tsdelta = None
        if self._last_sent_ts is not None and ts_less(pkt.ts, self._last_sent_ts):
            self.npkts_discard += 1
            return True
        self._sync_clock(pkt.ts, now_s)
        pkt.padding = b""
        appendable = not (pkt.payload_type == PT_G729 and len(pkt.payload) % G729_FRAME_BYTES)
        self._insert(_Queued(pkt, nsamples, appendable))
        self._nsamples += nsamples
        return True

    def poll(self, now_s: float) -> bytes | None:
        """The next output packet, or None until more data arrives or the wait times out."""
        queue = self._queue
        if not queue:
            return None
        ref = (_internal_ts(now_s) + (self._tsdelta or 0)) & _M32
        if self._nsamples < self._out and ts_less(ref, (queue[0].pkt.ts + self._maxbuf) & _M32):
            return None
        out = self._build(output_samples(self._ms, queue[0].pkt.payload_type))
        self._nsamples -= out.nsamples
        pkt = out.pkt
        if self._seq is None:
            self._seq = pkt.seq
        pkt.seq = self._seq
        self._seq = (self._seq + 1) & 0xFFFF
        self._last_sent_ts = (pkt.ts + out.nsamples) & _M32
        return pkt.serialize()

    def remove(self) -> int:
        """Drop everything queued (the resizer is going away); returns the count."""
        dropped = len(self._queue)
        self._queue.clear()
        self._nsamples = 0
        self.npkts_discard += dropped
        return dropped

    def _sync_clock(self, ts: int, now_s: float) -> None:
        internal = _internal_ts(now_s)
        if self._tsdelta is None:
            self._tsdelta = (ts - internal + SYNC_AHEAD) & _M32
            return
        ref = (internal + self._tsdelta) & _M32
        if ts_less(ref, ts):
            self._tsdelta = (ts - internal + SYNC_AHEAD) & _M32
        else:
            latest = (ts + self._out + SYNC_SLACK) & _M32
            if ts_less(latest, ref):
                self._tsdelta = (self._tsdelta - ((ref - latest) & _M32) // 2) & _M32

    def _insert(self, item: _Queued) -> None:
        queue = self._queue
        ts = item.pkt.ts
        i = len(queue)
        while i > 0 and ts_less(ts, queue[i - 1].pkt.ts):
            i -= 1
        queue.insert(i, item)

    def _build(self, out: int) -> _Queued:
        """Assemble one output packet from the queue head (the queue is not empty)."""
        queue = self._queue
        head = queue[0]
        pt = head.pkt.payload_type
        if head.nsamples > out:
            cut = first_chunk(pt, head.pkt.payload, head.nsamples, out)
            if cut is None:
                return queue.pop(0)
            pkt = dataclasses.replace(head.pkt, payload=head.pkt.payload[: cut[0]])
            head.take_head(*cut)
            return _Queued(pkt, cut[1], head.appendable)

        ret = queue.pop(0)
        while ret.appendable and ret.nsamples < out and queue:
            nxt = queue[0]
            if (ret.pkt.ts + ret.nsamples) & _M32 != nxt.pkt.ts or nxt.pkt.payload_type != pt:
                break
            left = out - ret.nsamples
            if left < nxt.nsamples:
                cut = first_chunk(pt, nxt.pkt.payload, nxt.nsamples, left)
                if cut is not None:
                    if ret.size + cut[0] <= MAX_PACKET_SIZE:
                        ret.append(nxt.take_head(*cut), cut[1])
                    break
            if ret.size + len(nxt.pkt.payload) > MAX_PACKET_SIZE:
                break
            queue.pop(0)
            ret.append(nxt.pkt.payload, nxt.nsamples)
            ret.appendable = nxt.appendable
        return ret


def _internal_ts(now_s: float) -> int:
    return int(now_s * CLOCK_RATE) & _M32
