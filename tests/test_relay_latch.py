"""The latching state machine: which packet sources a leg accepts (README, PROTOCOL.md §8.2)."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from rtpp.media.analyzer import RtpAnalyzer
from rtpp.media.drivers import UserSpaceDriver
from rtpp.media.latch import RELATCH_SEQ_RANGE, UPDATE_WINDOW_S
from rtpp.media.ports import open_media_socket
from rtpp.media.relay import RelayContext, accept_source
from rtpp.media.session import Session, Stream
from rtpp.stats import Counters

NOW = 1000.0
SSRC = 0x11223344
PHONE = ("192.0.2.10", 4000)
NATTED = ("198.51.100.20", 31000)
STRANGER = ("203.0.113.66", 5004)


def rtp(seq: int, ssrc: int = SSRC, ts: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts, ssrc) + b"\xff" * 160


RTCP_SR = struct.pack("!BBHI", 0x80, 200, 6, SSRC) + bytes(20)


def new_session() -> Session:
    """A complete session with analyzers on the RTP streams, as the daemon builds it."""
    sess = Session("call", "tag", 0.0, 0.0)
    for st in sess.rtp.streams:
        st.analyzer = RtpAnalyzer()
    sess.complete = True
    return sess


@pytest.fixture
def ctx() -> RelayContext:
    return RelayContext(Counters())


def offer(st: Stream, data: bytes, src: tuple, ctx: RelayContext, now: float = NOW) -> bool:
    """One received packet through the source check, then (if accepted) the analyzer."""
    ok = accept_source(st, data, len(data), src, now, ctx)
    if ok and st.analyzer is not None:
        st.analyzer.feed(data, now)
    return ok


def commanded(st: Stream, addr: tuple) -> None:
    """The leg's address as a U/L sets it (not latched, not learned)."""
    st.remote = addr
    st.cmd_remote = addr
    st.latched = False


def latched_leg(ctx: RelayContext, last_seq: int = 100) -> Stream:
    """Leg 1 RTP latched by packets from PHONE with SSRC, up to sequence `last_seq`."""
    st = new_session().rtp.streams[1]
    for seq in range(last_seq - 4, last_seq + 1):
        assert offer(st, rtp(seq), PHONE, ctx)
    assert st.analyzer.last_seq == last_seq & 0xFFFF
    return st


# Unlatched legs


def test_first_packet_latches_a_leg_without_address(ctx):
    st = new_session().rtp.streams[1]
    assert offer(st, rtp(1), PHONE, ctx)
    assert st.remote == PHONE
    assert st.latched and st.learned


def test_first_packet_latches_an_rtcp_leg_without_address(ctx):
    st = new_session().rtcp.streams[0]
    assert offer(st, RTCP_SR, PHONE, ctx)
    assert st.remote == PHONE
    assert st.latched and st.learned


def test_first_packet_of_any_content_latches(ctx):
    st = new_session().rtp.streams[0]
    assert offer(st, b"junk", PHONE, ctx)
    assert st.remote == PHONE and st.latched


def test_first_packet_from_the_commanded_address_latches_it(ctx):
    st = new_session().rtp.streams[1]
    commanded(st, PHONE)
    assert offer(st, rtp(1), PHONE, ctx)
    assert st.remote == PHONE
    assert st.latched
    assert not st.learned


def test_commanded_leg_moves_to_the_first_source(ctx):
    st = new_session().rtp.streams[1]
    commanded(st, PHONE)
    assert offer(st, rtp(1), NATTED, ctx)
    assert st.remote == NATTED
    assert st.latched and st.learned


def test_commanded_leg_moves_only_once(ctx):
    st = new_session().rtp.streams[1]
    commanded(st, PHONE)
    assert offer(st, b"not rtp", NATTED, ctx)
    assert not offer(st, b"not rtp", STRANGER, ctx)
    assert not offer(st, b"not rtp", PHONE, ctx)
    assert st.remote == NATTED


def test_commanded_leg_moves_once_even_with_strict_source():
    ctx = RelayContext(Counters(), strict_source=True)
    st = new_session().rtp.streams[1]
    commanded(st, PHONE)
    assert offer(st, rtp(1), NATTED, ctx)
    assert st.remote == NATTED
    assert not offer(st, rtp(2), STRANGER, ctx)


# Latched legs


def test_latched_leg_accepts_its_source(ctx):
    st = latched_leg(ctx)
    assert offer(st, rtp(101), PHONE, ctx)
    assert offer(st, b"anything", PHONE, ctx)


def test_latched_leg_drops_strangers(ctx):
    st = latched_leg(ctx)
    assert not offer(st, rtp(5000, ssrc=0xDEAD), STRANGER, ctx)
    assert not offer(st, b"junk", STRANGER, ctx)
    assert st.remote == PHONE


def test_latched_leg_drops_another_port_of_the_same_host(ctx):
    st = latched_leg(ctx)
    assert not offer(st, rtp(5000, ssrc=0xDEAD), (PHONE[0], PHONE[1] + 2), ctx)
    assert st.remote == PHONE


def test_latched_leg_without_recorded_ssrc_never_moves(ctx):
    st = new_session().rtp.streams[1]
    assert offer(st, b"junk", PHONE, ctx)  # latched, but no SSRC recorded
    st.cmd_changed_at = NOW - 1.0
    assert not offer(st, rtp(1), STRANGER, ctx)
    assert st.remote == PHONE


def test_relatch_within_the_update_window_after_a_changed_address(ctx):
    st = latched_leg(ctx)
    st.cmd_changed_at = NOW - (UPDATE_WINDOW_S - 1.0)
    assert offer(st, rtp(40000, ssrc=0xBEEF), STRANGER, ctx)
    assert st.remote == STRANGER
    assert st.latched and st.learned


def test_no_relatch_once_the_update_window_has_passed(ctx):
    st = latched_leg(ctx)
    st.cmd_changed_at = NOW - UPDATE_WINDOW_S
    assert not offer(st, rtp(40000, ssrc=0xBEEF), STRANGER, ctx)
    assert st.remote == PHONE


def test_no_relatch_without_a_changed_commanded_address(ctx):
    st = latched_leg(ctx)
    st.cmd_remote = PHONE  # a U/L repeating the same address leaves cmd_changed_at alone
    assert not offer(st, rtp(40000, ssrc=0xBEEF), STRANGER, ctx)
    assert st.remote == PHONE


def test_relatch_in_the_update_window_needs_an_rtp_packet(ctx):
    st = latched_leg(ctx)
    st.cmd_changed_at = NOW - 1.0
    assert not offer(st, b"\x00" * 172, STRANGER, ctx)  # version 0
    assert not offer(st, rtp(101)[:11], STRANGER, ctx)  # shorter than a header
    assert st.remote == PHONE


@pytest.mark.parametrize("delta", [1, 7, RELATCH_SEQ_RANGE, -1, -RELATCH_SEQ_RANGE])
def test_relatch_for_the_same_ssrc_with_a_nearby_sequence_number(ctx, delta):
    st = latched_leg(ctx)
    assert offer(st, rtp(100 + delta), NATTED, ctx)
    assert st.remote == NATTED
    assert st.latched and st.learned


@pytest.mark.parametrize("delta", [RELATCH_SEQ_RANGE + 1, -(RELATCH_SEQ_RANGE + 1), 20000, 32768])
def test_no_relatch_for_the_same_ssrc_with_a_far_sequence_number(ctx, delta):
    st = latched_leg(ctx)
    assert not offer(st, rtp(100 + delta), NATTED, ctx)
    assert st.remote == PHONE


def test_relatch_sequence_distance_wraps_around(ctx):
    st = latched_leg(ctx, last_seq=65533)
    assert offer(st, rtp(10), NATTED, ctx)
    assert st.remote == NATTED


def test_relatch_sequence_distance_wraps_around_backwards(ctx):
    st = latched_leg(ctx, last_seq=65540)  # wrapped: last seen is 4
    assert st.analyzer.last_seq == 4
    assert offer(st, rtp(65530), NATTED, ctx)
    assert st.remote == NATTED


def test_no_relatch_for_another_ssrc(ctx):
    st = latched_leg(ctx)
    assert not offer(st, rtp(101, ssrc=SSRC + 1), NATTED, ctx)
    assert st.remote == PHONE


def test_relatch_follows_the_ssrc_the_analyzer_saw_last(ctx):
    st = latched_leg(ctx)
    assert offer(st, rtp(9000, ssrc=0xCAFE), PHONE, ctx)  # the phone changed its SSRC
    assert not offer(st, rtp(9001), NATTED, ctx)
    assert offer(st, rtp(9001, ssrc=0xCAFE), NATTED, ctx)


def test_relatched_leg_is_latched_to_the_new_source(ctx):
    st = latched_leg(ctx)
    assert offer(st, rtp(101), NATTED, ctx)
    assert not offer(st, rtp(50000, ssrc=0xBEEF), PHONE, ctx)
    assert offer(st, rtp(102), NATTED, ctx)


def test_rtcp_leg_never_relatches():
    ctx = RelayContext(Counters())
    st = new_session().rtcp.streams[1]
    st.analyzer = RtpAnalyzer()  # even with an SSRC on record
    assert offer(st, rtp(100), PHONE, ctx)
    st.cmd_changed_at = NOW - 1.0
    assert not offer(st, rtp(101), NATTED, ctx)
    assert not offer(st, RTCP_SR, NATTED, ctx)
    assert st.remote == PHONE


def test_rtcp_leg_without_analyzer_never_relatches(ctx):
    st = new_session().rtcp.streams[1]
    assert offer(st, RTCP_SR, PHONE, ctx)
    st.cmd_changed_at = NOW - 1.0
    assert not offer(st, RTCP_SR, NATTED, ctx)
    assert st.remote == PHONE


def test_strict_source_never_relatches():
    ctx = RelayContext(Counters(), strict_source=True)
    st = latched_leg(ctx)
    st.cmd_changed_at = NOW - 1.0
    assert not offer(st, rtp(101), NATTED, ctx)
    assert not offer(st, rtp(40000, ssrc=0xBEEF), STRANGER, ctx)
    assert st.remote == PHONE
    assert offer(st, rtp(101), PHONE, ctx)


# Asymmetric legs


def asymmetric_leg() -> Stream:
    st = new_session().rtp.streams[1]
    commanded(st, PHONE)
    st.asymmetric = True
    return st


def test_asymmetric_leg_accepts_any_port_of_the_remote_host(ctx):
    st = asymmetric_leg()
    assert offer(st, rtp(1), (PHONE[0], 12345), ctx)
    assert offer(st, rtp(2), PHONE, ctx)
    assert st.remote == PHONE
    assert not st.learned


def test_asymmetric_leg_drops_other_hosts(ctx):
    st = asymmetric_leg()
    assert not offer(st, rtp(1), STRANGER, ctx)
    assert st.remote == PHONE


def test_asymmetric_leg_never_moves(ctx):
    st = asymmetric_leg()
    assert offer(st, rtp(1), PHONE, ctx)
    st.cmd_changed_at = NOW - 1.0
    assert not offer(st, rtp(2), STRANGER, ctx)
    assert offer(st, rtp(3), (PHONE[0], 9999), ctx)
    assert st.remote == PHONE


def test_asymmetric_unlatched_leg_does_not_move_to_the_first_source(ctx):
    st = asymmetric_leg()
    assert not offer(st, rtp(1), NATTED, ctx)
    assert st.remote == PHONE
    assert not st.latched


def test_asymmetric_leg_without_an_address_takes_the_first_source(ctx):
    st = new_session().rtp.streams[1]
    st.asymmetric = True
    assert offer(st, rtp(1), NATTED, ctx)
    assert st.remote == NATTED
    assert offer(st, rtp(2), (NATTED[0], 1), ctx)
    assert not offer(st, rtp(3), STRANGER, ctx)
    assert st.remote == NATTED


# The RTCP guess after an RTP source is learned


def test_learned_rtp_source_points_the_rtcp_leg_at_the_next_port(ctx):
    sess = new_session()
    assert offer(sess.rtp.streams[1], rtp(1), NATTED, ctx)
    rtcp = sess.rtcp.streams[1]
    assert rtcp.remote == (NATTED[0], NATTED[1] + 1)
    assert not rtcp.latched and not rtcp.learned
    assert sess.rtcp.streams[0].remote is None


def test_rtcp_guess_replaces_a_commanded_address_on_another_host(ctx):
    sess = new_session()
    commanded(sess.rtp.streams[0], PHONE)
    commanded(sess.rtcp.streams[0], (PHONE[0], PHONE[1] + 1))
    assert offer(sess.rtp.streams[0], rtp(1), NATTED, ctx)
    assert sess.rtcp.streams[0].remote == (NATTED[0], NATTED[1] + 1)


def test_rtcp_guess_keeps_a_commanded_address_on_the_same_host(ctx):
    sess = new_session()
    commanded(sess.rtp.streams[0], PHONE)
    commanded(sess.rtcp.streams[0], (PHONE[0], PHONE[1] + 1))
    assert offer(sess.rtp.streams[0], rtp(1), (PHONE[0], 7000), ctx)
    assert sess.rtcp.streams[0].remote == (PHONE[0], PHONE[1] + 1)


def test_rtcp_guess_never_overrides_a_learned_rtcp_source(ctx):
    sess = new_session()
    rtcp = sess.rtcp.streams[1]
    assert offer(rtcp, RTCP_SR, STRANGER, ctx)
    assert offer(sess.rtp.streams[1], rtp(1), NATTED, ctx)
    assert rtcp.remote == STRANGER


def test_rtcp_guess_follows_a_relatched_rtp_source(ctx):
    st = latched_leg(ctx)
    rtcp = st.session.rtcp.streams[1]
    assert rtcp.remote == (PHONE[0], PHONE[1] + 1)
    assert offer(st, rtp(101), NATTED, ctx)
    assert rtcp.remote == (NATTED[0], NATTED[1] + 1)


def test_no_rtcp_guess_from_port_65535(ctx):
    sess = new_session()
    assert offer(sess.rtp.streams[1], rtp(1), (NATTED[0], 65535), ctx)
    assert sess.rtcp.streams[1].remote is None


def test_no_rtcp_guess_from_an_rtcp_source(ctx):
    sess = new_session()
    assert offer(sess.rtcp.streams[1], RTCP_SR, NATTED, ctx)
    assert sess.rtp.streams[1].remote is None


def test_rtcp_guess_keeps_the_ipv6_address_shape(ctx):
    sess = new_session()
    src = ("2001:db8::5", 6000, 0, 0)
    assert offer(sess.rtp.streams[1], rtp(1), src, ctx)
    assert sess.rtcp.streams[1].remote == ("2001:db8::5", 6001, 0, 0)


# Interaction with the fast path


def test_latching_enables_the_fast_route_when_the_other_side_is_ready(ctx):
    sess = new_session()
    sess.driver = UserSpaceDriver()  # serves the routes, reads nothing
    s0, s1 = sess.rtp.streams
    s0.sock = open_media_socket(socket.AF_INET, "127.0.0.1", 0, 0)
    try:
        s0.remote = STRANGER
        assert s1.fast_src is None
        assert offer(s1, rtp(1), NATTED, ctx)
        assert s1.fast_src == NATTED
        assert s1.fwd_dst == STRANGER
    finally:
        s0.sock.close()


def test_accept_source_counts_nothing(ctx):
    st = latched_leg(ctx)
    offer(st, rtp(5000, ssrc=1), STRANGER, ctx)
    assert ctx.counters["npkts_discard"] == 0
    assert st.nignored == 0 and st.slow_in == 0


# Properties over arbitrary bytes (the per-packet check sees whatever the network sends)


def rules_allow_move(data: bytes, is_rtp: bool, strict: bool, changed_age: float) -> bool:
    """An independent statement of when a latched leg may follow another source."""
    if strict or not is_rtp or len(data) < 12 or data[0] >> 6 != 2:
        return False
    if changed_age < UPDATE_WINDOW_S:
        return True
    seq = int.from_bytes(data[2:4], "big")
    ssrc = int.from_bytes(data[8:12], "big")
    if ssrc != SSRC:
        return False
    dist = (seq - 100) % 0x10000
    return min(dist, 0x10000 - dist) <= RELATCH_SEQ_RANGE


def received(data: bytes, junk: bytes) -> tuple[memoryview, int]:
    """The packet as the relay hands it over: a view of a larger buffer, and its length."""
    return memoryview(bytearray(data) + junk), len(data)


rtp_like = hs.builds(
    lambda b0, seq, ssrc, tail: struct.pack("!BBHII", b0, 0, seq, 0, ssrc) + tail,
    hs.sampled_from([0x80, 0x90, 0xA0, 0x00, 0x40, 0xC0]),
    hs.one_of(hs.integers(0, 0xFFFF), hs.integers(100 - 600, 100 + 600).map(lambda n: n % 65536)),
    hs.one_of(hs.just(SSRC), hs.integers(0, 0xFFFFFFFF)),
    hs.binary(max_size=40),
)
packets = hs.one_of(hs.binary(max_size=80), rtp_like)
sources = hs.sampled_from([PHONE, NATTED, STRANGER, (PHONE[0], PHONE[1] + 1), ("::1", 4000, 0, 0)])


@settings(max_examples=300, deadline=None)
@given(
    data=packets,
    junk=hs.binary(max_size=16),
    src=sources,
    rtcp=hs.booleans(),
    strict=hs.booleans(),
    changed_age=hs.one_of(hs.just(1e9), hs.floats(0, 30)),
)
def test_a_latched_leg_moves_only_when_the_rules_allow(data, junk, src, rtcp, strict, changed_age):
    ctx = RelayContext(Counters(), strict_source=strict)
    sess = new_session()
    st = sess.rtcp.streams[1] if rtcp else sess.rtp.streams[1]
    if rtcp:
        st.analyzer = RtpAnalyzer()  # an SSRC on record must not matter for RTCP
    for seq in range(96, 101):
        assert offer(st, rtp(seq), PHONE, ctx)
    st.cmd_changed_at = NOW - changed_age
    view, n = received(data, junk)
    accepted = accept_source(st, view, n, src, NOW, ctx)
    assert isinstance(accepted, bool)
    if src == PHONE:
        assert accepted and st.remote == PHONE  # its own source is always welcome
        return
    moved = st.remote != PHONE
    assert accepted == moved
    assert moved == rules_allow_move(data, not rtcp, strict, changed_age)
    if moved:
        assert st.remote == src and st.latched and st.learned


@settings(max_examples=300, deadline=None)
@given(
    data=packets,
    junk=hs.binary(max_size=16),
    src=sources,
    remote=hs.one_of(hs.none(), sources),
    latched=hs.booleans(),
    asymmetric=hs.booleans(),
    analyzer_fed=hs.lists(rtp_like, max_size=3),
    strict=hs.booleans(),
    changed_age=hs.one_of(hs.just(1e9), hs.floats(0, 30)),
)
def test_the_source_check_never_raises_in_any_state(
    data, junk, src, remote, latched, asymmetric, analyzer_fed, strict, changed_age
):
    ctx = RelayContext(Counters(), strict_source=strict)
    st = new_session().rtp.streams[0]
    for packet in analyzer_fed:
        st.analyzer.feed(packet, NOW - 1)
    st.remote, st.latched, st.asymmetric = remote, latched and remote is not None, asymmetric
    st.cmd_changed_at = NOW - changed_age
    view, n = received(data, junk)
    accepted = accept_source(st, view, n, src, NOW, ctx)
    assert isinstance(accepted, bool)
    if asymmetric and remote is not None:
        assert st.remote == remote  # never moves
        assert accepted == (src[0] == remote[0])
    if remote is not None and st.remote != remote:
        assert accepted and st.remote == src
