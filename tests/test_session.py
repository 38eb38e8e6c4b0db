"""Session state: address tuples, leg/stream wiring, the fast-path route, counters."""

from __future__ import annotations

import socket

import pytest

from rtpp.media.analyzer import RtpAnalyzer
from rtpp.media.drivers import UserSpaceDriver
from rtpp.media.latch import make_address
from rtpp.media.playback.resizer import Resizer
from rtpp.media.ports import open_media_socket
from rtpp.media.rtp import HEADER
from rtpp.media.session import Session

HOST = "127.0.0.1"


def sockaddr6(host: str, port: int) -> tuple:
    """What the kernel reports for an IPv6 source (no resolver: numeric hosts only)."""
    info = socket.getaddrinfo(
        host, port, socket.AF_INET6, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST
    )
    return info[0][4]


# make_address


def test_ipv4_address_is_a_host_port_pair():
    assert make_address(socket.AF_INET, "192.0.2.7", 5000) == ("192.0.2.7", 5000)


def test_ipv4_address_equals_a_received_source():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind((HOST, 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.bind((HOST, 0))
            tx.sendto(b"x", rx.getsockname())
            _, src = rx.recvfrom(16)
            assert make_address(socket.AF_INET, HOST, tx.getsockname()[1]) == src


def test_ipv6_address_is_canonical_text_in_a_four_tuple():
    assert make_address(socket.AF_INET6, "2001:DB8:0:0:0:0:0:1", 5000) == (
        "2001:db8::1",
        5000,
        0,
        0,
    )
    assert make_address(socket.AF_INET6, "::FFFF:192.0.2.1", 7) == ("::ffff:192.0.2.1", 7, 0, 0)


def test_ipv6_address_has_the_shape_of_a_kernel_source():
    for text in ("2001:db8::1", "2001:0DB8:0000::0001", "::1"):
        assert make_address(socket.AF_INET6, text, 4000) == sockaddr6(text, 4000)


def test_ipv6_addresses_written_differently_compare_equal():
    a = make_address(socket.AF_INET6, "2001:db8:0::1", 9)
    b = make_address(socket.AF_INET6, "2001:DB8::0:1", 9)
    assert a == b


def _an_interface() -> tuple[int, str]:
    if not hasattr(socket, "if_nameindex"):
        pytest.skip("no interface index support")
    names = socket.if_nameindex()
    if not names:
        pytest.skip("no network interfaces")
    return names[0]


def test_scoped_ipv6_address_carries_the_interface_index():
    index, name = _an_interface()
    assert make_address(socket.AF_INET6, f"fe80::1%{name}", 5000)[3] == index
    assert make_address(socket.AF_INET6, f"fe80::1%{index}", 5000)[3] == index


def test_scoped_ipv6_address_has_the_shape_of_a_kernel_source():
    index, name = _an_interface()
    expected = sockaddr6(f"fe80::1%{name}", 5000)
    assert expected[3] == index
    assert make_address(socket.AF_INET6, f"FE80::1%{name}", 5000) == expected
    assert make_address(socket.AF_INET6, f"fe80::1%{index}", 5000) == expected


def test_scope_of_an_unknown_interface_is_zero():
    addr = make_address(socket.AF_INET6, "fe80::1%no-such-if0", 5000)
    assert addr[0] == "fe80::1"
    assert addr[3] == 0


# Legs and streams


def new_session() -> Session:
    return Session("call", "alice;1", 1.0, 2.0)


def test_session_has_two_pipes_of_two_streams():
    sess = new_session()
    for pipe, is_rtp in ((sess.rtp, True), (sess.rtcp, False)):
        assert len(pipe.streams) == 2
        for index, st in enumerate(pipe.streams):
            assert st.index == index
            assert st.is_rtp is is_rtp
            assert st.session is sess
    assert len({id(st) for st in sess.streams()}) == 4


def test_streams_of_a_pipe_are_each_others_peer():
    sess = new_session()
    for pipe in (sess.rtp, sess.rtcp):
        s0, s1 = pipe.streams
        assert s0.peer is s1
        assert s1.peer is s0


def test_leg_is_the_rtp_and_rtcp_stream_of_one_index():
    sess = new_session()
    for index in (0, 1):
        rtp, rtcp = sess.leg(index)
        assert rtp is sess.rtp.streams[index]
        assert rtcp is sess.rtcp.streams[index]


def test_streams_lists_rtp_then_rtcp():
    sess = new_session()
    assert sess.streams() == (*sess.rtp.streams, *sess.rtcp.streams)


def test_new_session_defaults():
    sess = new_session()
    assert sess.strong and not sess.weak
    assert not sess.complete and not sess.deleted
    assert sess.ttl == [0, 0]
    for st in sess.streams():
        assert not st.has_ports
        assert st.remote is None
        assert not st.latched and not st.learned
        assert st.fast_src is None


def test_sessions_do_not_share_timer_lists():
    a, b = new_session(), new_session()
    a.set_ttl_max(5)
    assert b.ttl == [0, 0] and b.ttl_max == [0, 0]


def test_weak_when_either_rtp_leg_is_weak():
    sess = new_session()
    sess.rtp.streams[0].weak = True
    assert sess.weak
    sess.rtp.streams[0].weak = False
    sess.rtp.streams[1].weak = True
    assert sess.weak


def test_tag_base_drops_the_media_number():
    assert new_session().tag_base == "alice"
    assert Session("c", "bob", 0.0, 0.0).tag_base == "bob"


def test_set_ttl_max_sets_and_resets_the_chosen_legs():
    sess = new_session()
    sess.set_ttl_max(30)
    assert sess.ttl == [30, 30] and sess.ttl_max == [30, 30]
    sess.set_ttl_max(7, legs=(0,))
    assert sess.ttl == [7, 30] and sess.ttl_max == [7, 30]


def test_reset_ttl_restores_both_maxima():
    sess = new_session()
    sess.set_ttl_max(30)
    sess.ttl[:] = [3, 1]
    sess.reset_ttl()
    assert sess.ttl == [30, 30]


def test_log_context_is_the_call_id():
    assert new_session().log_ctx == {"ctx": "call"}


# Session._reroute: the route decision and the user-space fast path


@pytest.fixture
def sockets():
    opened = []

    def open_one():
        sock = open_media_socket(socket.AF_INET, HOST, 0, 0)
        opened.append(sock)
        return sock

    yield open_one
    for sock in opened:
        sock.close()


def routed_session(sockets) -> tuple[Session, object, object]:
    """A complete session whose leg-1 RTP stream qualifies for the fast path.

    Returns (session, party A's socket, party B's socket): A faces leg 1, B faces leg 0.
    """
    sess = new_session()
    sess.driver = UserSpaceDriver()  # serves the routes, reads nothing
    sess.complete = True
    party_a, party_b = sockets(), sockets()
    for st in sess.rtp.streams:
        st.sock = sockets()
        st.local = st.sock.getsockname()
        st.port = st.local[1]
    s0, s1 = sess.rtp.streams
    s1.remote = party_a.getsockname()
    s1.latched = True
    s0.remote = party_b.getsockname()
    return sess, party_a, party_b


def test_fast_route_sends_from_the_peer_socket_to_the_peer_remote(sockets):
    sess, party_a, party_b = routed_session(sockets)
    s0, s1 = sess.rtp.streams
    sess._reroute()
    assert s1.fast_src == party_a.getsockname()
    assert s1.fwd_dst == party_b.getsockname()
    s1.fwd(b"media", s1.fwd_dst)
    data, src = party_b.recvfrom(64)
    assert data == b"media"
    assert src == s0.sock.getsockname()


def test_fast_route_exists_only_in_directions_that_qualify(sockets):
    sess, _, _ = routed_session(sockets)
    s0, s1 = sess.rtp.streams
    sess._reroute()
    assert s1.fast_src is not None
    assert s0.fast_src is None  # leg 0 has not latched
    s0.latched = True
    sess._reroute()
    assert s0.fast_src == s0.remote
    assert s0.fwd_dst == s1.remote
    for st in sess.rtcp.streams:
        assert st.fast_src is None and st.fwd is None and st.fwd_dst is None


def _no_fast(sess):
    sess.allow_fast = False


def _incomplete(sess):
    sess.complete = False


def _deleted(sess):
    sess.deleted = True


def _unlatched(sess):
    sess.rtp.streams[1].latched = False


def _no_remote(sess):
    sess.rtp.streams[1].remote = None


def _asymmetric(sess):
    sess.rtp.streams[1].asymmetric = True


def _peer_without_socket(sess):
    sess.rtp.streams[0].sock = None


def _peer_without_remote(sess):
    sess.rtp.streams[0].remote = None


def _peer_playing(sess):
    sess.rtp.streams[0].player = object()


def _recording(sess):
    sess.rtp.streams[1].recorder = object()


def _copying(sess):
    sess.rtp.streams[1].copier = object()


def _resizing(sess):
    sess.rtp.streams[1].resizer = Resizer(40)


@pytest.mark.parametrize(
    "breaker",
    [
        _no_fast,
        _incomplete,
        _deleted,
        _unlatched,
        _no_remote,
        _asymmetric,
        _peer_without_socket,
        _peer_without_remote,
        _peer_playing,
        _recording,
        _copying,
        _resizing,
    ],
)
def test_each_missing_condition_turns_the_fast_route_off(sockets, breaker):
    sess, _, _ = routed_session(sockets)
    st = sess.rtp.streams[1]
    sess._reroute()
    assert st.fast_src is not None
    breaker(sess)
    sess._reroute()
    assert st.fast_src is None
    assert st.fwd is None
    assert st.fwd_dst is None


def test_fast_route_returns_when_the_condition_clears(sockets):
    sess, _, _ = routed_session(sockets)
    st = sess.rtp.streams[1]
    st.recorder = object()
    sess._reroute()
    assert st.fast_src is None
    st.recorder = None
    sess._reroute()
    assert st.fast_src == st.remote


def test_fast_route_follows_a_moved_remote(sockets):
    sess, _, _ = routed_session(sockets)
    s0, s1 = sess.rtp.streams
    sess._reroute()
    s1.remote = (HOST, 4242)
    s0.remote = (HOST, 4244)
    sess._reroute()
    assert s1.fast_src == (HOST, 4242)
    assert s1.fwd_dst == (HOST, 4244)


def test_attachments_of_the_peer_other_than_a_player_do_not_matter(sockets):
    sess, _, _ = routed_session(sockets)
    s0, s1 = sess.rtp.streams
    s0.recorder = object()
    s0.copier = object()
    s0.resizer = Resizer(40)
    sess._reroute()
    assert s1.fast_src == s1.remote


# Counters


def test_counters_add_the_slow_and_fast_parts():
    st = new_session().rtcp.streams[0]
    st.slow_rcvd, st.slow_in, st.slow_relayed = 9, 6, 4
    st.nfast_rtcp, st.nfast_unsent = 10, 3
    assert st.nrcvd == 19
    assert st.npkts_in == 16
    assert st.nrelayed == 11


def test_an_rtp_streams_fast_path_is_counted_by_its_analyzer():
    # The relay feeds every accepted packet to the analyzer; those the full path
    # accepted are in slow_in, the rest came through the fast path.
    st = new_session().rtp.streams[0]
    st.analyzer = RtpAnalyzer()
    packets = [HEADER.pack(0x80, 0, seq, seq * 160, 7) + bytes(160) for seq in (5, 6, 7, 6, 9)]
    packets.append(b"\x80")  # too short: fed and counted all the same
    for n, data in enumerate(packets):
        st.analyzer.feed(data, n * 0.02)
    st.slow_rcvd = st.slow_in = 2
    st.slow_relayed, st.nfast_unsent = 2, 1
    assert st.nfast == len(packets) - 2
    assert st.nrcvd == st.npkts_in == len(packets)
    assert st.nrelayed == len(packets) - 1


def test_counters_start_at_zero():
    st = new_session().rtcp.streams[1]
    assert (st.nrcvd, st.npkts_in, st.nrelayed) == (0, 0, 0)


def test_has_ports_follows_the_socket(sockets):
    st = new_session().rtp.streams[0]
    assert not st.has_ports
    st.sock = sockets()
    assert st.has_ports
