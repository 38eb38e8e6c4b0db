import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtpp.media.playback.resizer import Resizer, count_samples, output_samples
from rtpp.media.rtp import HEADER, RtpPacket

SSRC = 0x5EED1234
PCMU, GSM, G723, PCMA, G722, G729 = 0, 3, 4, 8, 9, 18


def rtp(
    seq: int, ts: int, payload: bytes, pt: int = PCMU, ssrc: int = SSRC, marker: bool = False
) -> bytes:
    b1 = pt | (0x80 if marker else 0)
    return HEADER.pack(0x80, b1, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def noise(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def run(resizer: Resizer, packets: list[bytes], ptime_s: float, t0: float = 1000.0):
    """Feed packets one per ptime, polling after each arrival as the relay does.

    Every output counts as sent, as when the relay's send succeeds.
    """
    out: list[RtpPacket] = []
    for i, data in enumerate(packets):
        now = t0 + i * ptime_s
        assert resizer.ingest(data, now)
        while (got := resizer.poll(now)) is not None:
            out.append(RtpPacket.parse(got))
            resizer.npkts_out += 1
    return out


def stream(sizes: list[int], pt: int = PCMU, seq0: int = 100, ts0: int = 5000, frames=None):
    """Contiguous packets of the given payload sizes; returns (packets, payload bytes)."""
    data = noise(sum(sizes)) if frames is None else frames
    packets, pos, ts = [], 0, ts0
    for i, size in enumerate(sizes):
        payload = data[pos : pos + size]
        packets.append(rtp(seq0 + i, ts, payload, pt=pt, marker=i == 0))
        pos += size
        ts += count_samples(pt, payload)
    return packets, data


def test_output_size_rounding():
    assert output_samples(20, PCMU) == 160
    assert output_samples(30, G729) == 240
    assert output_samples(15, G729) == 160
    assert output_samples(30, GSM) == 320
    assert output_samples(5, PCMU) == 80
    assert output_samples(40, G723) == 480
    assert output_samples(10, G722) == 80


def test_sample_accounting():
    assert count_samples(PCMU, bytes(160)) == 160
    assert count_samples(PCMA, bytes(80)) == 80
    assert count_samples(G722, bytes(160)) == 160
    assert count_samples(G729, bytes(20)) == 160
    assert count_samples(G729, bytes(22)) == 240  # trailing SID frame
    assert count_samples(GSM, bytes(66)) == 320
    assert (
        count_samples(G723, b"\x00" + bytes(23) + b"\x01" + bytes(19) + b"\x02" + bytes(3)) == 720
    )
    assert count_samples(G723, b"\x03" + bytes(23)) is None
    assert count_samples(PCMU, b"") is None
    assert count_samples(96, bytes(10)) is None


def test_pcmu_20ms_to_40ms_merges_pairs():
    packets, data = stream([160] * 10)
    r = Resizer(40)
    out = run(r, packets, 0.02)
    assert [len(p.payload) for p in out] == [320] * 5
    assert b"".join(p.payload for p in out) == data
    assert [p.ts for p in out] == [5000 + 320 * k for k in range(5)]
    assert [p.seq for p in out] == list(range(100, 105))
    assert [p.marker for p in out] == [True, False, False, False, False]
    assert {p.ssrc for p in out} == {SSRC}
    assert (r.npkts_in, r.npkts_out, r.npkts_discard) == (10, 5, 0)


def test_pcmu_20ms_to_10ms_splits_each_packet():
    packets, data = stream([160] * 10)
    r = Resizer(10)
    out = run(r, packets, 0.02)
    assert [len(p.payload) for p in out] == [80] * 20
    assert b"".join(p.payload for p in out) == data
    assert [p.ts for p in out] == [5000 + 80 * k for k in range(20)]
    assert [p.seq for p in out] == list(range(100, 120))
    assert [p.marker for p in out] == [True] + [False] * 19
    assert (r.npkts_in, r.npkts_out) == (10, 20)


def test_twenty_10ms_packets_become_ten_20ms_packets():
    packets, data = stream([80] * 20, pt=PCMA)
    r = Resizer(20)
    out = run(r, packets, 0.01)
    assert [p.seq for p in out] == list(range(100, 110))
    assert [p.marker for p in out] == [True] + [False] * 9
    assert [p.payload_type for p in out] == [PCMA] * 10
    assert [len(p.payload) for p in out] == [160] * 10
    assert b"".join(p.payload for p in out) == data
    assert (r.npkts_in, r.npkts_out, r.npkts_discard) == (20, 10, 0)


def test_poll_leaves_npkts_out_to_the_output_path():
    # Only the relay knows whether a packet was sent (OPERATIONS.md §5.5).
    packets, _ = stream([160] * 2)
    r = Resizer(20)
    for i, data in enumerate(packets):
        assert r.ingest(data, 10.0 + i * 0.02)
        assert r.poll(10.0 + i * 0.02) is not None
    assert (r.npkts_in, r.npkts_out, r.npkts_discard) == (2, 0, 0)


def test_sequence_numbers_start_from_the_first_emitted_packet():
    packets, _ = stream([80] * 6, seq0=65534)
    out = run(Resizer(20), packets, 0.01)
    assert [p.seq for p in out] == [65534, 65535, 0]


@pytest.mark.parametrize(
    "sizes,pt,ptime,target,lengths,stamps",
    [
        # G.722: one byte per timestamp unit
        ([160] * 3, G722, 0.02, 10, [80] * 6, [5000 + 80 * k for k in range(6)]),
        ([10] * 6, G729, 0.01, 30, [30, 30], [5000, 5240]),
        ([20] * 2, G729, 0.02, 10, [10] * 4, [5000, 5080, 5160, 5240]),
        ([33] * 4, GSM, 0.02, 40, [66, 66], [5000, 5320]),
        ([99], GSM, 0.06, 20, [33, 33, 33], [5000, 5160, 5320]),
    ],
    ids=["g722-split", "g729-10ms-to-30ms", "g729-20ms-to-10ms", "gsm-merge", "gsm-60ms-to-20ms"],
)
def test_codec_frames_are_split_and_merged_on_frame_boundaries(
    sizes, pt, ptime, target, lengths, stamps
):
    packets, data = stream(sizes, pt=pt)
    out = run(Resizer(target), packets, ptime)
    assert [len(p.payload) for p in out] == lengths
    assert [p.ts for p in out] == stamps
    assert b"".join(p.payload for p in out) == data


def test_g729_sid_frame_ends_the_output_packet():
    sid = rtp(100, 5000, noise(12), pt=G729)  # 10-byte frame + 2-byte SID: 160 samples
    rest = [rtp(101 + i, 5160 + 80 * i, noise(10, i + 2), pt=G729) for i in range(3)]
    out = run(Resizer(40), [sid, *rest], 0.01)
    # Nothing may be appended after a SID frame, so it leaves on its own.
    assert len(out) == 1
    assert out[0].payload == noise(12)
    assert out[0].ts == 5000


def test_gsm_target_rounds_up_to_whole_frames():
    packets, data = stream([33] * 4, pt=GSM)
    out = run(Resizer(30), packets, 0.02)  # 30 ms -> 320 samples, 2 frames
    assert [len(p.payload) for p in out] == [66, 66]
    assert b"".join(p.payload for p in out) == data


def g723_frames(kinds: list[int]) -> bytes:
    sizes = {0: 24, 1: 20, 2: 4}
    return b"".join(bytes([k]) + noise(sizes[k] - 1, i)[:] for i, k in enumerate(kinds))


def test_g723_split_on_variable_length_frames():
    payload = g723_frames([0, 1])  # 24 + 20 bytes, 60 ms
    out = run(Resizer(30), [rtp(7, 0, payload, pt=G723)], 0.06)
    assert [len(p.payload) for p in out] == [24, 20]
    assert [p.ts for p in out] == [0, 240]
    assert b"".join(p.payload for p in out) == payload


def test_g723_merge_with_sid_frame():
    a = rtp(7, 0, g723_frames([0]), pt=G723)
    b = rtp(8, 240, g723_frames([2]), pt=G723)
    out = run(Resizer(60), [a, b], 0.03)
    assert len(out) == 1
    assert out[0].payload == g723_frames([0]) + g723_frames([2])


def test_g723_invalid_frame_type_passes_through():
    r = Resizer(30)
    assert not r.ingest(rtp(1, 0, b"\x03" + bytes(23), pt=G723), 0.0)
    assert r.npkts_in == 0


def test_unsupported_payloads_pass_through():
    r = Resizer(20)
    assert not r.ingest(rtp(1, 0, bytes(160), pt=96), 0.0)
    assert not r.ingest(rtp(1, 0, b""), 0.0)
    assert not r.ingest(b"\x80\x00garbage", 0.0)
    assert not r.ingest(b"\x90" + bytes(11), 0.0)
    assert r.npkts_in == 0
    assert r.poll(1.0) is None


def test_late_packet_is_dropped_and_counted():
    packets, _ = stream([160] * 4)
    r = Resizer(20)
    run(r, packets, 0.02)
    late = rtp(99, 5000 + 160, bytes(160))
    assert r.ingest(late, 2000.0)
    assert (r.npkts_in, r.npkts_discard) == (5, 1)
    assert len(r) == 0


def test_ssrc_change_resets_timing_so_older_timestamps_are_accepted():
    packets, _ = stream([160] * 4)
    r = Resizer(20)
    run(r, packets, 0.02)
    assert r.ingest(rtp(1, 10, bytes(160), ssrc=SSRC + 1), 1000.1)
    assert r.npkts_discard == 0
    out = r.poll(1000.1)
    assert out is not None
    pkt = RtpPacket.parse(out)
    assert (pkt.ssrc, pkt.ts, pkt.seq) == (SSRC + 1, 10, 104)


def test_partial_queue_waits_then_flushes_after_maxbuf():
    r = Resizer(20)
    t0 = 50.0
    assert r.ingest(rtp(1, 1000, bytes(80)), t0)
    assert r.poll(t0) is None
    # Mapped clock starts 40 units ahead; flush once it passes ts + maxbuf (320).
    assert r.poll(t0 + 279 / 8000) is None
    out = r.poll(t0 + 281 / 8000)
    assert out is not None
    assert len(RtpPacket.parse(out).payload) == 80


def test_timestamp_jump_re_anchors_the_clock_mapping():
    # A sender that resumes after silence suppression with its timestamps further
    # ahead than the time that passed (times are exact binary fractions).
    r = Resizer(40)  # 320 samples out, maxbuf 640
    t0 = 100.0  # internal clock 800000
    assert r.ingest(rtp(1, 1000, noise(80, 1)), t0)
    assert r._tsdelta == (1000 - 800000 + 40) & 0xFFFFFFFF
    assert r.poll(t0) is None
    t1 = t0 + 1 / 64  # 125 samples later; the timestamp jumped 8000
    assert r.ingest(rtp(2, 9000, noise(80, 2)), t1)
    assert r._tsdelta == (9000 - 800125 + 40) & 0xFFFFFFFF
    # On the new mapping the first packet is long overdue: it leaves on its own...
    first = RtpPacket.parse(r.poll(t1))
    assert (first.ts, first.payload) == (1000, noise(80, 1))
    # ...and the second waits until the mapped clock passes its ts + maxbuf (600 on).
    assert r.poll(t1) is None
    assert r.poll(t1 + 560 / 8000) is None
    second = RtpPacket.parse(r.poll(t1 + 640 / 8000))
    assert (second.ts, second.payload) == (9000, noise(80, 2))


def test_late_arrival_moves_the_clock_mapping_back_by_half_the_gap():
    r = Resizer(40)  # 320 samples out, maxbuf 640
    t0 = 100.0  # internal clock 800000
    assert r.ingest(rtp(1, 1000, noise(80, 1)), t0)
    delta0 = (1000 - 800000 + 40) & 0xFFFFFFFF
    assert r._tsdelta == delta0
    assert r.poll(t0) is None
    # The next packet arrives 625 samples later: ref = 1040 + 625 = 1665 while
    # ts + out + 160 = 1080 + 320 + 160 = 1560, so delta moves back by 105 // 2.
    t1 = t0 + 5 / 64
    assert r.ingest(rtp(2, 1080, noise(80, 2)), t1)
    assert r._tsdelta == (delta0 - 52) & 0xFFFFFFFF
    # The queue (160 samples, head ts 1000) flushes once ref reaches 1000 + 640:
    # not yet at ref 1613, but 27 samples later.
    assert r.poll(t1) is None
    assert r.poll(t1 + 20 / 8000) is None
    out = RtpPacket.parse(r.poll(t1 + 40 / 8000))
    assert (out.ts, out.payload) == (1000, noise(80, 1) + noise(80, 2))


def test_out_of_order_packets_are_queued_in_timestamp_order():
    p0 = rtp(1, 0, noise(80, 1))
    p1 = rtp(2, 80, noise(80, 2))
    r = Resizer(20)
    assert r.ingest(p1, 10.0)
    assert r.ingest(p0, 10.001)
    out = RtpPacket.parse(r.poll(10.001))
    assert out.payload == noise(80, 1) + noise(80, 2)
    assert out.ts == 0


def test_gap_ends_the_output_packet():
    a = rtp(1, 0, noise(80, 1))
    b = rtp(2, 160, noise(80, 2))  # 10 ms missing in between
    r = Resizer(20)
    r.ingest(a, 10.0)
    r.ingest(b, 10.02)
    out = RtpPacket.parse(r.poll(10.02))
    assert out.payload == noise(80, 1)


def test_payload_type_change_ends_the_output_packet():
    r = Resizer(20)
    r.ingest(rtp(1, 0, noise(80, 1), pt=PCMU), 10.0)
    r.ingest(rtp(2, 80, noise(80, 2), pt=PCMA), 10.01)
    assert RtpPacket.parse(r.poll(10.01)).payload == noise(80, 1)


def test_header_of_first_chunk_is_kept_and_padding_dropped():
    first = RtpPacket(
        payload_type=PCMU,
        marker=True,
        seq=9,
        ts=0,
        ssrc=SSRC,
        csrc=(42,),
        extension_profile=0xBEDE,
        extension=b"\x10\x01\x00\x00",
        payload=noise(80, 1),
        padding=b"\x00\x02",
    )
    second = rtp(10, 80, noise(80, 2))
    r = Resizer(20)
    r.ingest(bytes(first), 1.0)
    r.ingest(second, 1.01)
    out = RtpPacket.parse(r.poll(1.01))
    assert out.csrc == (42,)
    assert out.extension == b"\x10\x01\x00\x00"
    assert out.padding == b""
    assert out.payload == noise(80, 1) + noise(80, 2)


def test_merge_never_exceeds_the_packet_size_limit():
    packets, data = stream([4000] * 3)
    r = Resizer(2000)  # 16000 samples wanted
    out = run(r, packets, 0.5)
    out += [RtpPacket.parse(p) for p in iter(lambda: r.poll(1e4), None)]
    assert all(len(bytes(p)) <= 8192 for p in out)
    assert b"".join(p.payload for p in out) == data


def test_remove_discards_queued_packets():
    r = Resizer(40)
    r.ingest(rtp(1, 0, bytes(80)), 1.0)
    r.ingest(rtp(2, 80, bytes(80)), 1.01)
    assert r.remove() == 2
    assert (r.npkts_in, r.npkts_discard, len(r), r.queued_samples) == (2, 2, 0, 0)
    assert r.poll(100.0) is None


def test_set_ptime_changes_target():
    r = Resizer(20)
    r.set_ptime(40)
    assert r.ptime_ms == 40
    with pytest.raises(ValueError):
        Resizer(0)


# --- properties -------------------------------------------------------------------

FRAME_UNITS = {PCMU: 1, PCMA: 1, G722: 1, G729: 10, GSM: 33}


@st.composite
def contiguous_streams(draw):
    pt = draw(st.sampled_from([PCMU, PCMA, G722, G729, GSM, G723]))
    n = draw(st.integers(1, 30))
    if pt == G723:
        kinds = [
            draw(st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=4)) for _ in range(n)
        ]
        payloads = [g723_frames(k) for k in kinds]
    else:
        unit = FRAME_UNITS[pt]
        sizes = draw(st.lists(st.integers(1, 300 // unit), min_size=n, max_size=n))
        payloads = [noise(s * unit, i) for i, s in enumerate(sizes)]
    gaps = draw(st.lists(st.floats(0, 0.1), min_size=n, max_size=n))
    ms = draw(st.integers(1, 120))
    ts0 = draw(st.integers(0, 0xFFFFFFFF))
    return pt, payloads, gaps, ms, ts0


@settings(max_examples=200, deadline=None)
@given(contiguous_streams())
def test_output_is_a_recut_of_a_contiguous_input(case):
    pt, payloads, gaps, ms, ts0 = case
    r = Resizer(ms)
    out: list[RtpPacket] = []
    now, ts = 500.0, ts0
    for i, (payload, gap) in enumerate(zip(payloads, gaps, strict=True)):
        now += gap
        assert r.ingest(rtp(i, ts, payload, pt=pt), now)
        ts = (ts + count_samples(pt, payload)) & 0xFFFFFFFF
        out += [RtpPacket.parse(p) for p in iter(lambda now=now: r.poll(now), None)]
    out += [RtpPacket.parse(p) for p in iter(lambda: r.poll(now + 10.0), None)]

    assert b"".join(p.payload for p in out) == b"".join(payloads)
    assert len(r) == 0 and r.npkts_discard == 0
    assert [p.seq for p in out] == [k & 0xFFFF for k in range(out[0].seq, out[0].seq + len(out))]
    expected_ts = ts0
    for p in out:
        assert p.ts == expected_ts
        assert p.payload_type == pt
        expected_ts = (expected_ts + count_samples(pt, p.payload)) & 0xFFFFFFFF
    assert sum(p.marker for p in out) == 0


@st.composite
def random_packets(draw):
    pt = st.sampled_from([PCMU, PCMA, G722, G729, GSM, G723, 96])
    packet = st.tuples(
        st.integers(0, 0xFFFF),
        st.integers(0, 2000),
        st.sampled_from([1, 2]),
        pt,
        st.binary(max_size=120),
        st.booleans(),
    )
    return draw(st.lists(packet | st.binary(max_size=20), max_size=60))


@settings(max_examples=200, deadline=None)
@given(random_packets(), st.integers(1, 100))
def test_random_streams_never_raise_and_conserve_payload_bytes(packets, ms):
    r = Resizer(ms)
    now = 10.0
    absorbed = emitted = 0
    for item in packets:
        now += 0.01
        if isinstance(item, tuple):
            seq, ts, ssrc, pt, payload, marker = item
            data = rtp(seq, ts, payload, pt=pt, ssrc=ssrc, marker=marker)
        else:
            data = item
        before = r.npkts_discard
        if r.ingest(data, now) and r.npkts_discard == before:
            absorbed += len(RtpPacket.parse(data).payload)
        while (got := r.poll(now)) is not None:
            emitted += len(RtpPacket.parse(got).payload)
    queued = sum(len(q.pkt.payload) for q in r._queue)
    assert emitted + queued == absorbed
    assert r.npkts_in >= r.npkts_discard


def test_ingest_accepts_a_memoryview():
    r = Resizer(10)
    assert r.ingest(memoryview(rtp(1, 0, noise(80))), 1.0)
    assert RtpPacket.parse(r.poll(1.0)).payload == noise(80)
