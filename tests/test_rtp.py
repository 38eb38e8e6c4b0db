import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtpp.media.analyzer import RtpAnalyzer, RtpaUpdate
from rtpp.media.rtp import HEADER, RtpPacket, payload_bounds, ts_less

DATA = Path(__file__).parent / "data"


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def rtp(
    seq: int,
    ts: int = 0,
    ssrc: int = 0x11111111,
    pt: int = 0,
    marker: bool = False,
    payload: bytes = b"\xff" * 160,
) -> bytes:
    return HEADER.pack(0x80, pt | (0x80 if marker else 0), seq, ts, ssrc) + payload


# --- parsing and serializing -------------------------------------------------


def test_parse_plain_pcmu_packet():
    data = load("rtp_pcmu.bin")
    pkt = RtpPacket.parse(data)
    assert pkt.payload_type == 0
    assert pkt.marker is True
    assert pkt.seq == 4660
    assert pkt.ts == 0x11223344
    assert pkt.ssrc == 0xDEADBEEF
    assert pkt.csrc == ()
    assert pkt.extension is None
    assert pkt.payload == bytes(range(160))
    assert pkt.padding == b""
    assert pkt.header_length == 12
    assert bytes(pkt) == data
    assert pkt.serialize() == data
    assert len(pkt) == len(data)


def test_parse_packet_with_csrc_extension_and_padding():
    data = load("rtp_csrc_ext_padding.bin")
    pkt = RtpPacket.parse(data)
    assert pkt.payload_type == 8
    assert pkt.marker is False
    assert pkt.seq == 65535
    assert pkt.ts == 0xFFFFFFF0
    assert pkt.ssrc == 0x01020304
    assert pkt.csrc == (0xAAAA0001, 0xBBBB0002)
    assert pkt.extension_profile == 0xBEDE
    assert pkt.extension == bytes([0x10, 0xAB, 0, 0, 0x21, 0xCD, 0xEF, 0])
    assert pkt.payload == b"payload"
    assert pkt.padding == b"\x00\x00\x00\x00\x05"
    assert pkt.header_length == 12 + 8 + 4 + 8
    assert bytes(pkt) == data


def test_every_truncated_header_raises():
    for name in ("rtp_pcmu.bin", "rtp_csrc_ext_padding.bin"):
        data = load(name)
        header_length = RtpPacket.parse(data).header_length
        for length in range(header_length):
            with pytest.raises(ValueError):
                RtpPacket.parse(data[:length])


def test_every_truncation_of_a_padded_packet_raises():
    # Cutting a padded packet anywhere leaves a wrong padding count at the end.
    data = load("rtp_csrc_ext_padding.bin")
    for length in range(len(data)):
        with pytest.raises(ValueError):
            RtpPacket.parse(data[:length])


def test_truncated_payload_of_an_unpadded_packet_is_still_a_packet():
    data = load("rtp_pcmu.bin")
    assert RtpPacket.parse(data[:12]).payload == b""
    assert RtpPacket.parse(data[:100]).payload == bytes(range(88))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00\x00", "too short: 3 bytes, the fixed header needs 12"),
        (b"\x40" + bytes(11), "version is 1, expected 2"),
        (b"\x00" + bytes(11), "version is 0, expected 2"),
        (b"\xc0" + bytes(11), "version is 3, expected 2"),
        (b"\x8f" + bytes(11) + bytes(56), "too short for 15 CSRC entries: 68 bytes, need 72"),
        (
            b"\x90" + bytes(11) + b"\x00\x00",
            "too short for the extension header: 14 bytes, need 16",
        ),
        (
            b"\x90" + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4),
            "too short for a 2-word header extension: 20 bytes, need 24",
        ),
        (b"\xa0" + bytes(11), "padding flag set but no byte follows the header"),
        (b"\xa0" + bytes(11) + b"abc\x00", "padding count is zero"),
        (b"\xa0" + bytes(11) + b"abc\x05", "padding count 5 exceeds the 4 bytes after the header"),
    ],
)
def test_malformed_packets_raise_precise_errors(data: bytes, message: str):
    with pytest.raises(ValueError, match=message):
        RtpPacket.parse(data)


def test_padding_may_fill_everything_after_the_header():
    pkt = RtpPacket.parse(b"\xa0" + bytes(11) + b"\x00\x00\x03")
    assert pkt.payload == b""
    assert pkt.padding == b"\x00\x00\x03"


def test_serialize_builds_the_wire_format():
    pkt = RtpPacket(payload_type=18, marker=True, seq=7, ts=8, ssrc=9, payload=b"\x01\x02")
    assert bytes(pkt) == struct.pack("!BBHII", 0x80, 0x80 | 18, 7, 8, 9) + b"\x01\x02"
    assert RtpPacket.parse(bytes(pkt)) == pkt


def test_serialize_rejects_inconsistent_fields():
    with pytest.raises(ValueError, match="padding of 3 bytes ends with count 1"):
        RtpPacket(padding=b"\x00\x00\x01").serialize()
    with pytest.raises(ValueError, match="not a multiple of 4"):
        RtpPacket(extension=b"\x00\x00\x00").serialize()
    with pytest.raises(ValueError, match="16 CSRCs"):
        RtpPacket(csrc=tuple(range(16))).serialize()


@given(st.binary(max_size=200))
def test_any_bytes_parse_to_an_exact_packet_or_raise_value_error(data: bytes):
    try:
        pkt = RtpPacket.parse(data)
    except ValueError:
        return
    assert bytes(pkt) == data


@given(
    st.builds(
        RtpPacket,
        payload_type=st.integers(0, 127),
        marker=st.booleans(),
        seq=st.integers(0, 0xFFFF),
        ts=st.integers(0, 0xFFFFFFFF),
        ssrc=st.integers(0, 0xFFFFFFFF),
        csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
        extension_profile=st.integers(0, 0xFFFF),
        extension=st.none() | st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4)),
        payload=st.binary(max_size=50),
        padding=st.integers(0, 20).map(lambda n: bytes(n - 1) + bytes([n]) if n else b""),
    )
)
def test_serialize_then_parse_is_identity(pkt: RtpPacket):
    if pkt.extension is None:
        pkt.extension_profile = 0  # not on the wire without the X bit
    assert RtpPacket.parse(bytes(pkt)) == pkt


def test_payload_bounds_skip_header_and_padding():
    data = load("rtp_csrc_ext_padding.bin")
    start, end = payload_bounds(data)
    assert data[start:end] == b"payload"


def test_ts_less_uses_serial_arithmetic():
    assert ts_less(1, 2)
    assert not ts_less(2, 1)
    assert not ts_less(5, 5)
    assert ts_less(0xFFFFFFF0, 0x10)
    assert not ts_less(0x10, 0xFFFFFFF0)


# --- analyzer: sequence tracking ------------------------------------------------


def feed_seqs(analyzer: RtpAnalyzer, seqs, ssrc: int = 0x11111111, t0: float = 0.0) -> None:
    for i, seq in enumerate(seqs):
        analyzer.feed(rtp(seq, ts=seq * 160, ssrc=ssrc), t0 + i * 0.02)


def counters(a: RtpAnalyzer) -> tuple[int, int, int, int, int]:
    return a.nsent, a.nrcvd, a.ndups, a.nlost, a.perrs


def test_in_order_stream_has_no_loss():
    a = RtpAnalyzer()
    feed_seqs(a, range(1000, 1100))
    assert counters(a) == (100, 100, 0, 0, 0)


def test_gaps_count_as_lost():
    a = RtpAnalyzer()
    feed_seqs(a, [s for s in range(1, 51) if s not in (10, 11, 40)])
    assert counters(a) == (50, 47, 0, 3, 0)


def test_duplicates_are_counted_once():
    a = RtpAnalyzer()
    feed_seqs(a, [1, 2, 3, 4, 5, 5, 6, 7, 3, 8, 9, 10, 10])
    assert counters(a) == (10, 10, 3, 0, 0)


def test_reordered_packets_are_not_lost_or_duplicated():
    a = RtpAnalyzer()
    feed_seqs(a, [10, 11, 13, 12, 14, 9, 16, 15])
    assert counters(a) == (8, 8, 0, 0, 0)


def test_late_packet_fills_a_gap():
    a = RtpAnalyzer()
    feed_seqs(a, [1, 2, 4, 5])
    assert a.nlost == 1
    feed_seqs(a, [3])
    assert counters(a) == (5, 5, 0, 0, 0)


def test_sequence_wrap_is_continuous():
    a = RtpAnalyzer()
    feed_seqs(a, [*range(65530, 65536), *range(0, 11)])
    assert counters(a) == (17, 17, 0, 0, 0)


def test_reordering_across_the_wrap():
    a = RtpAnalyzer()
    feed_seqs(a, [65534, 0, 65535, 1, 65535])
    assert counters(a) == (4, 4, 1, 0, 0)


def test_ssrc_change_restarts_tracking_and_keeps_totals():
    a = RtpAnalyzer()
    feed_seqs(a, [100, 101, 103], ssrc=1)
    first_b = a.feed(rtp(5000, ssrc=2), 1.0)
    assert first_b is RtpaUpdate.SSRC_CHANGED
    feed_seqs(a, [5001, 5003, 5004], ssrc=2, t0=1.02)
    # run 1: 100..103 = 4 expected, 3 received; run 2: 5000..5004 = 5 expected, 4 received
    assert counters(a) == (9, 7, 0, 2, 0)
    assert a.ssrc_changes == 1
    assert a.last_ssrc == 2
    assert a.last_seq == 5004


def test_first_packet_is_not_an_ssrc_change():
    a = RtpAnalyzer()
    assert a.feed(rtp(1), 0.0) is RtpaUpdate.OK
    assert a.feed(rtp(2), 0.02) is RtpaUpdate.OK


def test_large_jump_restarts_tracking():
    a = RtpAnalyzer()
    feed_seqs(a, [*range(1, 11), *range(2000, 2010)])
    assert counters(a) == (20, 20, 0, 0, 0)


def test_marked_packet_going_backwards_restarts_tracking():
    a = RtpAnalyzer()
    feed_seqs(a, range(300, 310))
    a.feed(rtp(5, marker=True), 1.0)
    a.feed(rtp(6), 1.02)
    assert counters(a) == (12, 12, 0, 0, 0)


def test_unparsable_packets_count_as_perrs_only():
    a = RtpAnalyzer()
    feed_seqs(a, [1, 2])
    assert a.feed(b"\x80\x00", 1.0) is RtpaUpdate.ERROR
    assert a.feed(b"\x40" + bytes(20), 1.0) is RtpaUpdate.ERROR
    assert a.feed(b"\xa0" + bytes(11) + b"x\x00", 1.0) is RtpaUpdate.ERROR
    assert counters(a) == (2, 2, 0, 0, 3)


def test_valid_packet_with_csrc_and_extension_is_analyzed():
    a = RtpAnalyzer()
    assert a.feed(load("rtp_csrc_ext_padding.bin"), 0.0) is RtpaUpdate.OK
    assert counters(a) == (1, 1, 0, 0, 0)
    assert a.last_ssrc == 0x01020304


def test_longest_inter_packet_interval():
    a = RtpAnalyzer()
    for seq, t in [(1, 10.0), (2, 10.02), (3, 10.5), (4, 10.52)]:
        a.feed(rtp(seq), t)
    assert a.longest_ipi == pytest.approx(0.48)


@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.sampled_from([1, 2]), st.booleans()),
        max_size=300,
    )
)
def test_every_packet_is_counted_exactly_once(packets):
    a = RtpAnalyzer()
    for i, (seq, ssrc, marker) in enumerate(packets):
        a.feed(rtp(seq, ts=seq * 80, ssrc=ssrc, marker=marker), i * 0.01)
    assert a.nrcvd + a.ndups + a.perrs == len(packets)
    assert a.nlost >= 0


@given(st.lists(st.integers(0, 40), max_size=200))
def test_near_sequences_count_unique_packets(offsets):
    a = RtpAnalyzer()
    for i, off in enumerate(offsets):
        a.feed(rtp((65520 + off) & 0xFFFF), i * 0.01)
    if offsets:
        assert a.nrcvd == len(set(offsets))
        assert a.nsent == max(offsets) - min(offsets) + 1
        assert a.ndups == len(offsets) - len(set(offsets))


# --- analyzer: jitter -----------------------------------------------------------


def expected_jitter(arrivals: list[float], timestamps: list[int], rate: int = 8000):
    j = jmax = total = 0.0
    values = []
    for k in range(1, len(arrivals)):
        d = (int(arrivals[k] * rate) - int(arrivals[k - 1] * rate)) - (
            timestamps[k] - timestamps[k - 1]
        )
        j += (abs(d) - j) / 16
        values.append(j)
        jmax = max(jmax, j)
        total += j
    return j, jmax, total / len(values)


def test_perfectly_paced_stream_has_zero_jitter():
    a = RtpAnalyzer()
    for k in range(50):
        a.feed(rtp(k, ts=1000 + 160 * k), 100.0 + k * 0.020)
    assert a.jlast == pytest.approx(0.0, abs=1.0)
    assert a.jmax < 1.0


def test_jitter_is_in_timestamp_units_per_rfc3550():
    a = RtpAnalyzer()
    a.feed(rtp(1, ts=0), 0.0)
    a.feed(rtp(2, ts=160), 0.021)  # 1 ms late = 8 units at 8 kHz
    assert a.jlast == pytest.approx(8 / 16)


def test_jitter_running_estimate_last_max_and_average():
    arrivals = [10.0 + k * 0.02 + (0.004 if k % 3 == 1 else 0.0) for k in range(40)]
    timestamps = [160 * k for k in range(40)]
    a = RtpAnalyzer()
    for k, (t, ts) in enumerate(zip(arrivals, timestamps, strict=True)):
        a.feed(rtp(k, ts=ts), t)
    jlast, jmax, javg = expected_jitter(arrivals, timestamps)
    assert a.jlast == pytest.approx(jlast)
    assert a.jmax == pytest.approx(jmax)
    assert a.javg == pytest.approx(javg)


def test_jitter_zero_when_not_available():
    a = RtpAnalyzer()
    assert (a.jlast, a.jmax, a.javg) == (0.0, 0.0, 0.0)
    a.feed(rtp(1), 0.0)
    assert (a.jlast, a.jmax, a.javg) == (0.0, 0.0, 0.0)


def test_dynamic_payload_type_has_no_jitter_but_is_counted():
    a = RtpAnalyzer()
    for k in range(10):
        a.feed(rtp(k, ts=160 * k, pt=101), k * 0.02 + (0.005 if k % 2 else 0))
    assert a.jmax == 0.0
    assert counters(a) == (10, 10, 0, 0, 0)


def test_duplicate_timestamp_does_not_feed_jitter():
    a = RtpAnalyzer()
    a.feed(rtp(1, ts=0), 0.0)
    a.feed(rtp(2, ts=160), 0.02)
    a.feed(rtp(2, ts=160), 0.05)  # duplicate, 30 ms late
    a.feed(rtp(3, ts=320), 0.04)
    assert a.jmax == 0.0


def test_timestamp_jump_is_not_jitter():
    a = RtpAnalyzer()
    a.feed(rtp(1, ts=0), 0.0)
    a.feed(rtp(2, ts=160), 0.02)
    a.feed(rtp(3, ts=160 + 8_000_000), 0.04)
    assert a.jmax == 0.0


def test_jitter_restarts_on_ssrc_change_and_average_spans_both():
    a = RtpAnalyzer()
    a.feed(rtp(1, ts=0, ssrc=1), 0.0)
    a.feed(rtp(2, ts=160, ssrc=1), 0.021)
    first = a.jlast
    a.feed(rtp(9, ts=99999, ssrc=2), 0.04)  # no sample across the change
    assert a.jlast == first
    a.feed(rtp(10, ts=99999 + 160, ssrc=2), 0.06)
    assert a.jmax == pytest.approx(first)
    assert a.javg == pytest.approx((first + a.jlast) / 2)


def test_analyzer_and_parser_accept_memoryviews():
    buf = bytearray(2048)
    data = load("rtp_csrc_ext_padding.bin")
    buf[: len(data)] = data
    view = memoryview(buf)[: len(data)]
    assert bytes(RtpPacket.parse(view)) == data
    a = RtpAnalyzer()
    assert a.feed(view, 0.0) is RtpaUpdate.OK
    assert a.feed(memoryview(rtp(5))[:12], 0.02) is RtpaUpdate.SSRC_CHANGED
    assert a.feed(memoryview(b"\x80"), 0.04) is RtpaUpdate.ERROR
