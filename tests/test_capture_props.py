"""Property tests: recording writers and the extractaudio readers that parse their files.

Whatever the writers produce reads back packet for packet; whatever bytes a file holds,
the readers either yield datagrams or raise CaptureError, never anything else.
"""

from __future__ import annotations

import struct

from hypothesis import example, given, settings
from hypothesis import strategies as st

from rtpp.media.recording import record
from rtpp.tools import extractaudio as ea

SETTINGS = settings(max_examples=150, deadline=None)

ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8).map(
    lambda w: ":".join(f"{x:x}" for x in w)
)
port = st.integers(1, 65535)
payloads = st.binary(min_size=12, max_size=400)
times = st.floats(0, 4e9, allow_nan=False).map(lambda t: round(t, 6))


@st.composite
def flows(draw):
    host = draw(st.sampled_from([ipv4, ipv6]))
    return (draw(host), draw(port)), (draw(host), draw(port))


def capture(writer, flow, packets) -> bytes:
    """A whole capture file: writer's header, then one record per (payload, time) of packets."""
    src, dst = flow
    return writer.file_header() + b"".join(writer.record(p, src, dst, t) for p, t in packets)


@SETTINGS
@given(flows(), st.lists(st.tuples(payloads, times), max_size=20))
def test_adhoc_records_read_back_exactly(flow, packets):
    blob = capture(record.AdhocWriter(), flow, packets)
    assert [(d.data, d.arrival_s) for d in ea.parse_adhoc(blob)] == packets


@SETTINGS
@given(flows(), st.lists(st.tuples(payloads, times), max_size=20))
def test_pcap_records_read_back_exactly(flow, packets):
    blob = capture(record.PcapWriter(), flow, packets)
    got = list(ea.parse_pcap(blob))
    assert [d.data for d in got] == [p for p, _ in packets]
    assert all(abs(d.arrival_s - t) < 1e-5 for d, (_, t) in zip(got, packets, strict=True))


@SETTINGS
@given(flows(), payloads)
def test_pcap_checksums_verify(flow, payload):
    src, dst = flow
    frame = record.PcapWriter().record(payload, src, dst, 0.0)[16:]
    ip = frame[14:]
    if ip[0] >> 4 == 4:
        words = struct.unpack(f"!{len(ip[:20]) // 2}H", ip[:20])
        total = sum(words)
        while total > 0xFFFF:
            total = (total & 0xFFFF) + (total >> 16)
        assert total == 0xFFFF  # a valid IPv4 header checksum


@SETTINGS
@given(st.binary(max_size=600))
def test_any_bytes_give_datagrams_or_capture_error(blob):
    # What load_capture does: pcap by its magic, else ad-hoc.
    parse = ea.parse_pcap if blob[:4] in ea.PCAP_MAGICS else ea.parse_adhoc
    try:
        for dgram in parse(blob):
            assert len(dgram.data) >= 12
    except ea.CaptureError:
        pass


@SETTINGS
@given(st.sampled_from(list(ea.PCAP_MAGICS)), st.binary(max_size=600))
def test_pcap_header_with_random_records_never_raise_otherwise(magic, rest):
    header = magic + struct.pack("<HHiIII", 2, 4, 0, 0, 65535, 1)
    try:
        list(ea.parse_pcap(header + rest))
    except ea.CaptureError:
        pass


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from([0, 1]), st.floats(0, 1e9))
@example(b"\x00" * 4 + b"\x40" + b"\x00" * 7, 0, 0.0)  # IPv4 with a header length of 0
def test_frames_and_rtp_parse_to_values_or_none(frame, linktype, arrival):
    payload = ea.udp_payload(frame, linktype)
    assert payload is None or isinstance(payload, bytes)
    pkt = ea.parse_rtp(ea.Datagram(arrival, frame))
    assert pkt is None or len(pkt.payload) <= len(frame)
