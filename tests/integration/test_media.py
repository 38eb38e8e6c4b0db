"""Real calls through a real daemon: RTP and RTCP relayed, latched, counted."""

from __future__ import annotations

import errno
import os
import socket
import time

import pytest

from helpers import UdpClient
from integration.media_util import kamailio_call, open_fds, parse_port_reply, rtp

pytestmark = pytest.mark.timeout(120)


def wait_stat(proxy, name: str, value: str, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while proxy.cmd(f"G {name}") != value:
        assert time.monotonic() < deadline, f"{name} never reached {value}"
        time.sleep(0.01)


def exchange(call, count: int, size: int = 160) -> None:
    """Send `count` packets each way and check every one arrives intact from the proxy."""
    for i in range(count):
        out = rtp(i, i * 160, 0x1111, bytes([i % 256]) * size)
        data, src = call.a_to_b(out)
        assert data == out
        assert src == (call.addr, call.port_a)
        back = rtp(1000 + i, i * 160, 0x2222, bytes([(i + 7) % 256]) * size)
        data, src = call.b_to_a(back)
        assert data == back
        assert src == (call.addr, call.port_b)


@pytest.mark.parametrize("driver", ["epoll", "greenlet"])  # RTPP_RELAY, see relay.py
def test_scripted_call_relays_every_packet_and_counts_exactly(rtpproxy, driver):
    proxy = rtpproxy("-l", "127.0.0.1", extra_env={"RTPP_RELAY": driver})
    call = kamailio_call(proxy)
    exchange(call, 50)
    assert proxy.cmd(f"Q {call.call_id} ftag;1 ttag;1").split()[1:] == ["50", "50", "100", "0"]
    reply = proxy.cmd(f"Qv {call.call_id} ftag;1 ttag;1 rtpa_nsent rtpa_nrcvd rtpa_nlost")
    assert reply == "rtpa_nsent=50 rtpa_nrcvd=50 rtpa_nlost=0"
    assert proxy.cmd("G npkts_rcvd npkts_relayed nsess_created nsess_complete") == "100 100 1 1"
    assert call.delete() == "0"
    assert proxy.cmd("G nsess_destroyed npkts_rcvd npkts_relayed rtpa_nsent rtpa_nrcvd") == (
        "1 100 100 100 100"
    )
    assert proxy.cmd(f"Q {call.call_id} ftag;1 ttag;1") == "E50"


def test_replies_carry_the_listen_address(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    a = UdpClient()
    port, addr = parse_port_reply(proxy.cmd(f"U cid1 127.0.0.1 {a.port} t1"))
    assert addr == "127.0.0.1"
    assert proxy.port_min <= port <= proxy.port_max and port % 2 == 0


def test_wildcard_listen_replies_port_only(rtpproxy):
    proxy = rtpproxy()
    reply = proxy.cmd("U cid1 127.0.0.1 4000 t1")
    assert reply.isdigit()


@pytest.mark.parametrize("driver", ["epoll", "greenlet"])
def test_nat_source_differs_from_signalled_address(rtpproxy, driver):
    proxy = rtpproxy("-l", "127.0.0.1", extra_env={"RTPP_RELAY": driver})
    a, b = UdpClient(), UdpClient()
    # The SDP names ports nobody sends from; the proxy learns the real sources.
    port_a, _ = parse_port_reply(proxy.cmd("U nat1 127.0.0.1 9 ftag"))
    port_b, _ = parse_port_reply(proxy.cmd("L nat1 127.0.0.1 11 ftag ttag"))
    pkt = rtp(1, 160, 7, b"x" * 160)
    b.send(pkt, ("127.0.0.1", port_a))  # callee speaks first: latched, caller unknown yet
    wait_stat(proxy, "npkts_rcvd", "1")
    a.send(pkt, ("127.0.0.1", port_b))  # caller speaks: latched; relayed to the callee
    data, src = b.recv()
    assert data == pkt and src[1] == port_a
    b.send(pkt, ("127.0.0.1", port_a))
    data, src = a.recv()
    assert data == pkt and src[1] == port_b


def test_rtcp_relays_on_port_plus_one(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    a_rtp, b_rtp = UdpClient(), UdpClient()
    a_rtcp, b_rtcp = UdpClient(), UdpClient()
    # RTCP endpoints are found by latching: the SDP's port+1 is not where they are.
    port_a, _ = parse_port_reply(proxy.cmd(f"U r1 127.0.0.1 {a_rtp.port} ftag"))
    port_b, _ = parse_port_reply(proxy.cmd(f"L r1 127.0.0.1 {b_rtp.port} ftag ttag"))
    sr = bytes([0x80, 200, 0, 6]) + os.urandom(24)
    b_rtcp.send(sr, ("127.0.0.1", port_a + 1))
    wait_stat(proxy, "npkts_rcvd", "1")  # the callee's RTCP leg is latched now
    a_rtcp.send(sr, ("127.0.0.1", port_b + 1))
    data, src = b_rtcp.recv()
    assert data == sr and src[1] == port_a + 1
    b_rtcp.send(sr[::-1], ("127.0.0.1", port_a + 1))
    data, src = a_rtcp.recv()
    assert data == sr[::-1] and src[1] == port_b + 1


def test_ipv6_call_on_loopback(rtpproxy):
    proxy = rtpproxy("-6", "::1")
    call = kamailio_call(proxy, host="::1")
    reply = proxy.cmd(f"U6 {call.call_id} ::1 {call.a.port} ftag;1")
    assert reply.endswith(" ::1 6")
    for i in range(5):
        pkt = rtp(i, i * 160, 9, b"v6" * 80)
        call.a.send(pkt, ("::1", call.port_b))
        data, src = call.b.recv()
        assert data == pkt and src[1] == call.port_a


def test_bridge_between_two_interfaces(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1/127.0.0.2")
    a, b = UdpClient("127.0.0.1"), UdpClient("127.0.0.2")
    # Caller on the internal side, callee on the external one.
    port_a, addr_a = parse_port_reply(proxy.cmd(f"UIE br1 127.0.0.1 {a.port} ftag"))
    port_b, addr_b = parse_port_reply(proxy.cmd(f"LEI br1 127.0.0.2 {b.port} ftag ttag"))
    assert addr_a == "127.0.0.2"  # the callee sends to the external address
    assert addr_b == "127.0.0.1"  # the caller sends to the internal address
    pkt = rtp(1, 0, 1, b"z" * 160)
    a.send(pkt, ("127.0.0.1", port_b))
    data, src = b.recv()
    assert data == pkt and src == ("127.0.0.2", port_a)
    b.send(pkt, ("127.0.0.2", port_a))
    data, src = a.recv()
    assert data == pkt and src == ("127.0.0.1", port_b)


def test_bridge_modifiers_without_bridge_are_errors(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    assert proxy.cmd("UE c 127.0.0.1 4000 t") == "E11"
    assert proxy.cmd("UI c 127.0.0.1 4000 t") == "E12"


def test_latched_leg_drops_other_sources(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = kamailio_call(proxy)
    exchange(call, 3)
    attacker = UdpClient()
    bleed = rtp(99, 0, 0xBAD, b"a" * 160)
    attacker.send(bleed, ("127.0.0.1", call.port_b))
    assert call.b.recv_none(0.3)
    assert attacker.recv_none(0.1)
    assert proxy.cmd("G npkts_discard") == "1"
    exchange(call, 1)  # the real parties are unaffected


def test_first_real_address_after_hold_lets_the_new_source_take_the_leg(rtpproxy):
    p = rtpproxy()
    a, b, moved = UdpClient(), UdpClient(), UdpClient()
    port_a, _ = parse_port_reply(p.cmd("U hold1 0.0.0.0 9 ftag;1"))  # offer on hold
    port_b, _ = parse_port_reply(p.cmd(f"L hold1 127.0.0.1 {b.port} ftag;1 ttag;1"))
    a.send(rtp(1, 160, 0xA, b"a" * 160), ("127.0.0.1", port_b))  # latches the caller leg
    assert b.recv()[0][12:] == b"a" * 160
    # The re-INVITE takes the call off hold, with media from another device.
    p.cmd(f"U hold1 127.0.0.1 {moved.port} ftag;1 ttag;1")
    moved.send(rtp(500, 0, 0xC, b"c" * 160), ("127.0.0.1", port_b))
    assert b.recv()[0][12:] == b"c" * 160
    b.send(rtp(2, 320, 0xB, b"b" * 160), ("127.0.0.1", port_a))
    assert moved.recv()[0][12:] == b"b" * 160
    assert a.recv_none(0.2)


def test_latched_rtp_streams_get_a_connected_twin_nobody_else_can_join(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = kamailio_call(proxy)
    before = open_fds(proxy)
    exchange(call, 3)  # both RTP legs latch
    assert open_fds(proxy) == before + 2  # one connected twin per latched RTP stream
    for port in (call.port_a, call.port_b):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with pytest.raises(OSError) as exc:
                s.bind(("127.0.0.1", port))
            assert exc.value.errno == errno.EADDRINUSE
    exchange(call, 3)
    assert proxy.cmd(f"Q {call.call_id} ftag;1 ttag;1").split()[1:] == ["6", "6", "12", "0"]
    assert call.delete() == "0"
    assert open_fds(proxy) == before - 4


def test_packets_before_answer_are_discarded(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    a = UdpClient()
    port_a, _ = parse_port_reply(proxy.cmd(f"U early 127.0.0.1 {a.port} ftag"))
    a.send(rtp(1, 0, 1, b"e" * 20), ("127.0.0.1", port_a))
    assert a.recv_none(0.3)
    assert proxy.cmd("G npkts_discard npkts_rcvd") == "1 0"


def test_lookup_of_missing_session_answers_zero(rtpproxy):
    proxy = rtpproxy()
    assert proxy.cmd("L nosuch 127.0.0.1 4000 a b") == "0"
    assert proxy.cmd("G ncmds_errs") == "1"


def test_port_range_exhaustion_and_recovery(rtpproxy):
    low = 18000 + (os.getpid() % 90) * 20
    proxy = rtpproxy("-l", "127.0.0.1", ports=(low, low + 4))
    first = proxy.cmd("U x1 127.0.0.1 4000 t")
    second = proxy.cmd("U x2 127.0.0.1 4000 t")
    assert first.split()[0] != second.split()[0]
    assert proxy.cmd("U x3 127.0.0.1 4000 t") == "E72"
    assert proxy.cmd("L x1 127.0.0.1 4002 t u") == "E71"
    assert proxy.cmd("D x1 t") == "0"
    assert proxy.cmd("U x3 127.0.0.1 4000 t").split()[0].isdigit()


def test_weak_sessions_survive_strong_delete(rtpproxy):
    proxy = rtpproxy()
    proxy.cmd("U w1 127.0.0.1 4000 ta")
    proxy.cmd("UW w1 127.0.0.1 4000 ta")
    assert proxy.cmd("D w1 ta") == "0"
    assert proxy.cmd("Q w1 ta").split()[0].isdigit()  # still there: weak flag set
    proxy.cmd("UW w2 127.0.0.1 4000 tb")
    assert proxy.cmd("Dw w2 tb") == "0"
    assert proxy.cmd("Q w2 tb").split()[0].isdigit()  # the classic index quirk
    assert proxy.cmd("Dw w2 x tb") == "0"
    assert proxy.cmd("Q w2 tb") == "E50"


def test_delete_by_bare_tag_removes_all_media_streams(rtpproxy):
    proxy = rtpproxy()
    for n in (1, 2, 3):
        proxy.cmd(f"U m1 127.0.0.1 {4000 + 2 * n} ft;{n}")
    assert proxy.cmd("G nsess_created") == "3"
    assert proxy.cmd("D m1 ft tt") == "0"
    assert proxy.cmd("G nsess_destroyed") == "3"


def test_delete_all(rtpproxy):
    proxy = rtpproxy()
    for n in range(5):
        proxy.cmd(f"U x{n} 127.0.0.1 4000 t")
    assert proxy.cmd("X") == "0"
    assert proxy.cmd("I").splitlines()[1] == "active sessions: 0"


def test_info_lines(rtpproxy):
    proxy = rtpproxy()
    proxy.cmd("U i1 127.0.0.1 4000 t")
    lines = proxy.cmd("Il").splitlines()
    assert lines == [
        "sessions created: 1",
        "active sessions: 1",
        "active streams: 2",
        "packets received: 0",
        "packets transmitted: 0",
        "average load: 0.000000",
    ]


def test_two_leg_setup_in_one_command(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    a, b = UdpClient(), UdpClient()
    reply = proxy.cmd(f"U tl1 127.0.0.1 {a.port} fa tb && L 127.0.0.1 {b.port}")
    main, sub = reply.split(" && ")
    port_a, _ = parse_port_reply(main)
    port_b, _ = parse_port_reply(sub)
    pkt = rtp(1, 0, 5, b"q" * 40)
    a.send(pkt, ("127.0.0.1", port_b))
    assert b.recv()[0] == pkt
    assert proxy.cmd("Q tl1 fa tb && D") == "60 1 0 1 0"
    assert proxy.cmd("Q tl1 fa tb") == "E50"


def test_asymmetric_leg_accepts_only_its_host(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    a, b = UdpClient(), UdpClient()
    port_a, _ = parse_port_reply(proxy.cmd(f"UA as1 127.0.0.1 {a.port} fa"))
    port_b, _ = parse_port_reply(proxy.cmd(f"LA as1 127.0.0.1 {b.port} fa tb"))
    other = UdpClient("127.0.0.2")
    other.send(rtp(1, 0, 1, b"n" * 20), ("127.0.0.1", port_b))
    assert b.recv_none(0.3)
    a.send(rtp(2, 0, 1, b"y" * 20), ("127.0.0.1", port_b))
    assert b.recv()[0][12:] == b"y" * 20


def test_new_port_modifier_moves_the_leg(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    first, _ = parse_port_reply(proxy.cmd("U np1 127.0.0.1 4000 fa"))
    again, _ = parse_port_reply(proxy.cmd("U np1 127.0.0.1 4000 fa"))
    moved, _ = parse_port_reply(proxy.cmd("UN np1 127.0.0.1 4000 fa"))
    assert first == again and moved != first


def test_notify_requires_n_flag(rtpproxy):
    proxy = rtpproxy()
    assert proxy.cmd("U n1 127.0.0.1 4000 ta tb unix:/tmp/x tag") == "E75"
    assert proxy.cmd("VF 20081224") == "0"


def test_small_packets_are_sent_twice_with_dash_2(rtpproxy):
    proxy = rtpproxy("-2", "-l", "127.0.0.1")
    call = kamailio_call(proxy)
    small = rtp(1, 0, 3, b"s" * 20)
    call.a.send(small, ("127.0.0.1", call.port_b))
    assert call.b.recv()[0] == small
    assert call.b.recv()[0] == small
    big = rtp(2, 0, 3, b"b" * 200)
    call.a.send(big, ("127.0.0.1", call.port_b))
    assert call.b.recv()[0] == big
    assert call.b.recv_none(0.3)


def test_create_delete_cycles_leave_fds_and_ports_flat(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = kamailio_call(proxy, "warmup")
    call.delete()
    before = open_fds(proxy)
    for n in range(1000):
        proxy.cmd(f"U cyc{n} 127.0.0.1 4000 fa")
        proxy.cmd(f"L cyc{n} 127.0.0.1 4002 fa tb")
        assert proxy.cmd(f"D cyc{n} fa tb") == "0"
    assert open_fds(proxy) == before
    assert proxy.cmd("G nsess_created nsess_destroyed") == "1001 1001"
    # Every pair of the range is free again: as many sessions as pairs fit.
    pairs = (proxy.port_max - proxy.port_min) // 2
    replies = [proxy.cmd(f"U full{n} 127.0.0.1 4000 fa") for n in range(pairs // 2)]
    assert all(r.split()[0].isdigit() for r in replies)


def test_two_hundred_concurrent_calls_without_loss(rtpproxy):
    low = 12000 + (os.getpid() % 5) * 1000
    proxy = rtpproxy("-l", "127.0.0.1", ports=(low, low + 999))
    calls = [kamailio_call(proxy, f"conc{n}") for n in range(200)]
    try:
        for rnd in range(5):
            for i, call in enumerate(calls):
                call.a.send(rtp(rnd, rnd * 160, i, b"c" * 160), ("127.0.0.1", call.port_b))
                call.b.send(rtp(rnd, rnd * 160, i + 1000, b"d" * 160), ("127.0.0.1", call.port_a))
            for i, call in enumerate(calls):
                assert call.b.recv()[0] == rtp(rnd, rnd * 160, i, b"c" * 160)
                assert call.a.recv()[0] == rtp(rnd, rnd * 160, i + 1000, b"d" * 160)
        assert proxy.cmd("G npkts_relayed npkts_discard") == "2000 0"
    finally:
        for call in calls:
            call.close()


def test_tos_is_set_on_media_sockets(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", "-t", "46")
    call = kamailio_call(proxy)
    call.a.sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    call.b.send(rtp(1, 0, 1, b"t" * 20), ("127.0.0.1", call.port_a))
    call.a.sock.settimeout(2)
    _, ancdata, _, _ = call.a.sock.recvmsg(2048, 64)
    tos = [data[0] for level, kind, data in ancdata if kind == socket.IP_TOS]
    assert tos == [46]


def test_sequential_ports_with_dash_b(rtpproxy):
    proxy = rtpproxy("-b", "-l", "127.0.0.1")
    first, _ = parse_port_reply(proxy.cmd("U sq1 127.0.0.1 4000 fa"))
    second, _ = parse_port_reply(proxy.cmd("U sq2 127.0.0.1 4000 fa"))
    assert first == proxy.port_min
    assert second == proxy.port_min + 2
    proxy.cmd("D sq1 fa")
    third, _ = parse_port_reply(proxy.cmd("U sq3 127.0.0.1 4000 fa"))
    assert third == proxy.port_min + 4  # round-robin: the freed port is not reused at once


def received_tos(client) -> int:
    client.sock.settimeout(2)
    _, ancdata, _, _ = client.sock.recvmsg(2048, 64)
    return next(data[0] for level, kind, data in ancdata if kind == socket.IP_TOS)


class TosCall:
    """A call whose U and L carry sub-commands; both parties read the TOS they get."""

    def __init__(self, proxy, call_id: str, u_subs: str = "", l_subs: str = "") -> None:
        self.proxy, self.call_id = proxy, call_id
        self.a, self.b = UdpClient(), UdpClient()
        for party in (self.a, self.b):
            party.sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        self.u_reply = proxy.cmd(f"U {call_id} 127.0.0.1 {self.a.port} ft{u_subs}")
        self.l_reply = proxy.cmd(f"L {call_id} 127.0.0.1 {self.b.port} ft tt{l_subs}")
        self.port_a = int(self.u_reply.split()[0])
        self.port_b = int(self.l_reply.split()[0])

    def tos_seen(self, seq: int) -> tuple[int, int]:
        """(TOS the caller receives, TOS the callee receives)."""
        self.b.send(rtp(seq, seq * 160, 7, b"b" * 40), ("127.0.0.1", self.port_a))
        to_a = received_tos(self.a)
        self.a.send(rtp(seq, seq * 160, 8, b"a" * 40), ("127.0.0.1", self.port_b))
        return to_a, received_tos(self.b)


def test_s_tos_acts_on_the_leg_facing_the_commands_party(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    # Set before the caller's leg has its ports: applied when the L binds them.
    assert TosCall(proxy, "t1", " && S tos=42").tos_seen(1) == (42, 0xB8)
    assert TosCall(proxy, "t2", " && Sr tos=42").tos_seen(1) == (0xB8, 42)
    call = TosCall(proxy, "t3", " && S tos=42", " && Sr tos=43")
    assert call.tos_seen(1) == (43, 0xB8)
    call = TosCall(proxy, "t4", " && S tos=42", " && S tos=43")
    assert call.tos_seen(1) == (42, 43)
    # On a latched call (the fast path sends through connected twins) and from Q,
    # whose forward leg faces the from-tag party.
    for seq in range(2, 5):
        call.tos_seen(seq)
    assert proxy.cmd("Q t4 ft tt && S tos=50").split()[1:] == ["4", "4", "8", "0"]
    assert proxy.cmd("Q t4 tt ft && S tos=51").split()[1:] == ["4", "4", "8", "0"]
    assert call.tos_seen(5) == (50, 51)


def test_s_after_an_l_subcommand_sees_the_legs_the_other_way_round(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = TosCall.__new__(TosCall)
    call.a, call.b = UdpClient(), UdpClient()
    for party in (call.a, call.b):
        party.sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    reply = proxy.cmd(
        f"U t5 127.0.0.1 {call.a.port} ft tt && L 127.0.0.1 {call.b.port} && S tos=44"
    )
    main, sub = reply.split(" && ")
    call.port_a, call.port_b = int(main.split()[0]), int(sub.split()[0])
    assert call.tos_seen(1) == (0xB8, 44)


def test_s_tos_on_an_ipv6_leg_fails(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", "-6", "v6@::1")
    reply = proxy.cmd("U6 t6 ::1 4000 ft && S tos=42")
    assert reply.endswith(" && -1") and reply.split()[1:3] == ["::1", "6"]
    assert proxy.cmd("U t7 127.0.0.1 4000 ft && Sr tos=42").split()[1:] == ["127.0.0.1"]
