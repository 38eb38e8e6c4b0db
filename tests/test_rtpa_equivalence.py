"""RtpAnalyzer (with its in-order short path) against the frozen reference implementation.

Random packet streams - in-order runs, gaps, duplicates, reordering, SSRC changes,
marker restarts, sequence and timestamp wraps, payload type changes, garbage - go to
both; after every packet the return value and every counter and jitter value must be
identical (floats included: the same operations in the same order). The same holds
when packets are deferred (as the relay's fast path does) and analysed in batches.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtpa_reference import ReferenceRtpAnalyzer
from rtpp.media.analyzer import RtpAnalyzer
from rtpp.media.rtp import PLAIN_V2, RTP_HEADER_LENGTH, ReceiveBuffer

HEAD = struct.Struct("!BBHII")
FIELDS = (
    "perrs",
    "ssrc_changes",
    "longest_ipi",
    "last_ssrc",
    "last_seq",
    "nsent",
    "nrcvd",
    "ndups",
    "nlost",
    "jlast",
    "jmax",
    "javg",
)
#: Payload types with an 8 kHz, 16 kHz, 44.1 kHz and 90 kHz clock and without a known one.
PTS = (0, 8, 18, 6, 10, 14, 26, 96, 127)


def snapshot(a) -> tuple:
    return tuple(getattr(a, name) for name in FIELDS)


def run_both(packets: list[tuple[bytes, float]], as_view: bool = True) -> None:
    new, ref = RtpAnalyzer(), ReferenceRtpAnalyzer()
    for i, (data, now) in enumerate(packets):
        buf = memoryview(bytearray(data) + b"\0" * 7)[: len(data)] if as_view else data
        got, want = new.feed(buf, now), ref.feed(data, now)
        assert got == want, f"packet {i}: {got!r} != {want!r}"
        assert snapshot(new) == snapshot(ref), f"packet {i}"
        assert new.nfed == i + 1, f"packet {i}"


RECV = ReceiveBuffer()


def defer(an: RtpAnalyzer, data: bytes, now: float) -> None:
    """What the relay's fast path does with a packet read into its receive buffer."""
    RECV.stamp(now)
    RECV.packet[: len(data)] = data
    if len(data) >= RTP_HEADER_LENGTH and data[0] == PLAIN_V2:
        an.pending += RECV.record
    else:
        an.feed(data, now)


def run_deferred(packets: list[tuple[bytes, float]], batches: list[int]) -> None:
    """Defer packets in batches of the given sizes (cycled) and compare after each batch.

    The count of packets fed must be right at every step without analysing anything.
    """
    new, ref = RtpAnalyzer(), ReferenceRtpAnalyzer()
    i = 0
    for size in itertools.cycle(batches):
        for data, now in packets[i : i + size]:
            defer(new, data, now)
            ref.feed(data, now)
            i += 1
            assert new.nfed == i, f"packet {i - 1}"
        assert snapshot(new) == snapshot(ref), f"after packet {i - 1}"
        assert not new.pending
        if i >= len(packets):
            break


class Stream:
    """Builds packets from operations; keeps what a sender would (seq, ts, ssrc, pt)."""

    def __init__(self, draw) -> None:
        self.draw = draw
        self.seq = draw(st.integers(0, 0xFFFF))
        self.ts = draw(st.integers(0, 0xFFFFFFFF))
        self.ssrc = draw(st.integers(0, 0xFFFFFFFF))
        self.pt = 0
        self.step = 160
        self.now = draw(st.one_of(st.floats(0, 1e6), st.floats(1e8, 1e10)))
        self.sent: list[bytes] = []
        self.out: list[tuple[bytes, float]] = []

    def tick(self) -> float:
        dt = self.draw(
            st.one_of(
                st.just(0.02),
                st.just(0.0),
                st.floats(0.0, 0.05, allow_nan=False),
                st.floats(0.0, 5.0, allow_nan=False),
                st.sampled_from([0.019, 0.021, 0.0201, 0.03, 1e-7]),
                # a clock that steps back (jitter arithmetic with negative intervals)
                st.floats(-0.05, 0.0, allow_nan=False),
            )
        )
        self.now += dt
        return self.now

    def packet(self, seq: int, ts: int, marker: bool = False, pt: int | None = None) -> bytes:
        b1 = (self.pt if pt is None else pt) | (0x80 if marker else 0)
        return HEAD.pack(0x80, b1, seq & 0xFFFF, ts & 0xFFFFFFFF, self.ssrc) + b"\x55" * 20

    def emit(self, data: bytes) -> None:
        self.out.append((data, self.tick()))
        self.sent.append(data)

    def next(self, marker: bool = False) -> None:
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + self.step) & 0xFFFFFFFF
        self.emit(self.packet(self.seq, self.ts, marker))

    def op(self, name: str) -> None:
        draw = self.draw
        if name == "run":
            for _ in range(draw(st.integers(1, 80))):
                self.next()
        elif name == "gap":
            k = draw(st.one_of(st.integers(2, 20), st.integers(500, 600)))
            self.seq = (self.seq + k - 1) & 0xFFFF
            self.ts = (self.ts + (k - 1) * self.step) & 0xFFFFFFFF
            self.next()
        elif name == "dup" and self.sent:
            self.emit(draw(st.sampled_from(self.sent[-20:])))
        elif name == "reorder" and len(self.sent) >= 2:
            back = draw(st.integers(2, min(8, len(self.sent))))
            self.emit(self.sent[-back])
        elif name == "late":
            k = draw(st.integers(1, 700))
            self.emit(self.packet(self.seq - k, self.ts - k * self.step))
        elif name == "ssrc":
            self.ssrc = draw(st.one_of(st.integers(0, 0xFFFFFFFF), st.sampled_from([1, 2, 3])))
            self.next()
        elif name == "marker_back":
            k = draw(st.integers(1, 3000))
            self.seq = (self.seq - k) & 0xFFFF
            self.emit(self.packet(self.seq, self.ts, marker=True))
        elif name == "marker":
            self.next(marker=True)
        elif name == "jump":
            self.seq = draw(st.integers(0, 0xFFFF))
            self.ts = draw(st.integers(0, 0xFFFFFFFF))
            self.emit(self.packet(self.seq, self.ts))
        elif name == "wrap":
            self.seq = draw(st.integers(0xFFF0, 0xFFFF))
            self.ts = draw(st.integers(0xFFFFF000, 0xFFFFFFFF))
            self.emit(self.packet(self.seq, self.ts))
        elif name == "pt":
            self.pt = draw(st.sampled_from(PTS))
            self.next()
        elif name == "step":
            self.step = draw(st.sampled_from([160, 80, 0, 1, 240, 3000, 0x7FFFFFFF, 0xFFFFFF00]))
            self.next()
        elif name == "leap":
            # Forward by half the timestamp space or more: serial arithmetic says "back".
            self.ts = draw(st.integers(0, 0x1000))
            self.next()
            self.ts = (self.ts + draw(st.integers(0x80000000, 0xFFFFE000)) - self.step) & 0xFFFFFFFF
            self.next()
        elif name == "same_ts":
            self.seq = (self.seq + 1) & 0xFFFF
            self.emit(self.packet(self.seq, self.ts))
        elif name == "old_ts":
            back = draw(st.integers(1, 12)) * self.step
            self.seq = (self.seq + 1) & 0xFFFF
            self.emit(self.packet(self.seq, self.ts - back))
        elif name == "garbage":
            self.emit(draw(garbage()))
        elif name == "fancy":
            self.emit(draw(fancy_header(self)))


def garbage():
    return st.one_of(
        st.binary(max_size=11),
        st.binary(min_size=12, max_size=40),
        # version 2 with padding/extension/CSRC claims that do not fit
        st.tuples(st.integers(0x80, 0xBF), st.binary(min_size=11, max_size=30)).map(
            lambda t: bytes([t[0]]) + t[1]
        ),
    )


@st.composite
def fancy_header(draw, stream: Stream):
    """A valid packet with CSRCs, an extension or padding, continuing the stream."""
    cc = draw(st.integers(0, 3))
    ext = draw(st.booleans())
    pad = draw(st.integers(0, 4))
    stream.seq = (stream.seq + draw(st.integers(0, 2))) & 0xFFFF
    stream.ts = (stream.ts + stream.step) & 0xFFFFFFFF
    b0 = 0x80 | cc | (0x10 if ext else 0) | (0x20 if pad else 0)
    data = HEAD.pack(b0, stream.pt, stream.seq, stream.ts, stream.ssrc) + bytes(4 * cc)
    if ext:
        data += struct.pack("!HH", 0xBEDE, 1) + bytes(4)
    data += b"\x11" * 10
    if pad:
        data += bytes(pad - 1) + bytes([pad])
    return data


OPS = (
    "run",
    "run",
    "run",
    "gap",
    "dup",
    "reorder",
    "late",
    "ssrc",
    "marker_back",
    "marker",
    "jump",
    "wrap",
    "pt",
    "step",
    "leap",
    "same_ts",
    "old_ts",
    "garbage",
    "fancy",
)


@st.composite
def streams(draw) -> list[tuple[bytes, float]]:
    stream = Stream(draw)
    for name in draw(st.lists(st.sampled_from(OPS), max_size=40)):
        stream.op(name)
    return stream.out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.booleans())
def test_same_results_as_the_reference(packets, as_view):
    run_both(packets, as_view)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.lists(st.integers(1, 50), min_size=1, max_size=5))
def test_deferred_packets_give_the_same_results(packets, batches):
    run_deferred(packets, batches)


def test_a_deferred_ssrc_change_keeps_the_jitter_of_the_previous_source():
    packets = in_order(100, 40) + in_order(5000, 3, ssrc=9, t0=11.0)
    run_deferred(packets, [len(packets)])


def in_order(start_seq: int, n: int, ssrc: int = 7, step: int = 160, t0: float = 10.0):
    return [
        (HEAD.pack(0x80, 0, (start_seq + i) & 0xFFFF, (i * step) & 0xFFFFFFFF, ssrc), t0 + i * 0.02)
        for i in range(n)
    ]


@pytest.mark.parametrize("length", [65536 + 64, 70000])
def test_long_in_order_run_then_duplicates_and_reorders(length):
    # About or more than a full sequence cycle in order: the duplicate map is (nearly) full.
    packets = in_order(65000, length)
    t = packets[-1][1]
    last = (65000 + length - 1) & 0xFFFF
    for k, back in enumerate([*range(0, 537), 537, 1000, 40000]):
        seq = (last - back) & 0xFFFF
        packets.append((HEAD.pack(0x80, 0, seq, 0, 7), t + 0.001 * (k + 1)))
    run_both(packets)


def test_gap_inside_a_long_run_is_remembered():
    packets = in_order(100, 1000)
    packets += in_order(1105, 500, t0=40.0)  # 1100..1104 lost
    packets += [(HEAD.pack(0x80, 0, s, 0, 7), 60.0) for s in (1102, 1102, 1099, 1106, 1600)]
    run_both(packets)


def test_restart_boundaries_at_every_bit_offset():
    for start in range(0, 17):
        packets = in_order(start, 9 + start)
        packets += [(HEAD.pack(0x80, 0, (start + k) & 0xFFFF, 0, 7), 99.0) for k in range(-2, 20)]
        run_both(packets)
