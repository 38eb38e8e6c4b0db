"""What the relay hands to recorders and copies: the packet, its sender and receive time."""

from __future__ import annotations

import struct
import time

import pytest

from rtpp.media import relay
from rtpp.media.analyzer import RtpAnalyzer
from rtpp.media.relay import RelayContext, slow_packet
from rtpp.media.session import Session, Stream
from rtpp.stats import Counters

PHONE = ("192.0.2.10", 4000)


class Sink:
    """A recorder stand-in that keeps what it is given."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, tuple, float]] = []

    def write(self, data, src, dst, arrival_wall_s: float) -> None:
        self.got.append((bytes(data), src, arrival_wall_s))


def recorded_stream() -> tuple[Stream, Sink]:
    sess = Session("call", "tag", 0.0, 0.0)
    for st in sess.rtp.streams:
        st.analyzer = RtpAnalyzer()
    sess.complete = True
    st = sess.rtp.streams[1]
    st.recorder = Sink()
    return st, st.recorder


def packet(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + bytes(160)


def feed(st: Stream, data: bytes, now: float) -> None:
    buf = bytearray(data)
    slow_packet(st, memoryview(buf), len(data), PHONE, now, RelayContext(Counters()))


def test_records_carry_the_receive_time_not_the_processing_time() -> None:
    st, sink = recorded_stream()
    received = time.monotonic() - 2.0  # handled two seconds after it arrived
    feed(st, packet(1), received)
    [(data, src, wall)] = sink.got
    assert data == packet(1) and src == PHONE
    assert abs(wall - (time.time() - 2.0)) < 0.2


def test_no_clock_read_per_recorded_packet(monkeypatch: pytest.MonkeyPatch) -> None:
    st, sink = recorded_stream()
    now = time.monotonic()
    feed(st, packet(0), now)  # the wall-clock offset is known from here on
    reads = []
    real_time = time.time
    monkeypatch.setattr(relay.time, "time", lambda: reads.append(1) or real_time())
    for seq in range(1, 101):
        feed(st, packet(seq), now + seq * 0.001)
    assert len(sink.got) == 101
    assert len(reads) == 0
    walls = [w for _, _, w in sink.got]
    assert walls == sorted(walls) and walls[-1] - walls[0] == pytest.approx(0.1, abs=1e-6)
