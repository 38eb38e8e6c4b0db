"""Local address selection: labels, advertised addresses, IPv4/IPv6 bridging."""

from __future__ import annotations

import pytest

from helpers import UdpClient
from integration.media_util import parse_port_reply, rtp

pytestmark = pytest.mark.timeout(60)


def test_advertised_address_replaces_the_reply_address(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1=192.0.2.66")
    assert proxy.cmd("U a1 127.0.0.1 4000 t").split()[1] == "192.0.2.66"


def test_dash_a_outside_bridge_mode_is_honoured(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", "-A", "198.51.100.7")
    assert proxy.cmd("U a2 127.0.0.1 4000 t").split()[1] == "198.51.100.7"


def test_bridge_advertised_pair(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1/127.0.0.2", "-A", "192.0.2.1/192.0.2.2")
    assert proxy.cmd("UIE a3 127.0.0.1 4000 t").split()[1] == "192.0.2.2"
    assert proxy.cmd("U a4 127.0.0.1 4000 t").split()[1] == "192.0.2.1"


def test_labelled_listen_address(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", "-l", "two@127.0.0.2")
    assert proxy.cmd("Ul{two} l1 127.0.0.1 4000 t").split()[1] == "127.0.0.2"
    assert proxy.cmd("U l2 127.0.0.1 4000 t").split()[1] == "127.0.0.1"
    assert proxy.cmd("Ul{nope} l3 127.0.0.1 4000 t") == "E31"


def test_ipv6_needs_an_ipv6_listen_address(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    assert proxy.cmd("U6 v1 ::1 4000 t") == "E36"


def test_ipv4_to_ipv6_bridge(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", "-6", "/::1")
    caller, callee = UdpClient("127.0.0.1"), UdpClient("::1")
    reply = proxy.cmd(f"UIE g1 127.0.0.1 {caller.port} ft")
    port_a, addr_a = parse_port_reply(reply)
    assert reply.endswith(" ::1 6")  # the callee, on IPv6, sends to the external side
    reply = proxy.cmd(f"L6EI g1 ::1 {callee.port} ft tt")
    port_b, addr_b = parse_port_reply(reply)
    assert addr_b == "127.0.0.1" and not reply.endswith(" 6")
    pkt = rtp(1, 0, 42, b"g" * 160)
    caller.send(pkt, ("127.0.0.1", port_b))
    data, src = callee.recv()
    assert data == pkt and src[:2] == ("::1", port_a)
    callee.send(pkt[::-1], ("::1", port_a))
    data, src = caller.recv()
    assert data == pkt[::-1] and src == ("127.0.0.1", port_b)


def test_local_address_modifier(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    assert proxy.cmd("UL127.0.0.2 m1 127.0.0.1 4000 t").split()[1] == "127.0.0.2"
    assert proxy.cmd("UR127.0.0.1 m3 127.0.0.1 4000 t").split()[1] == "127.0.0.1"
    assert proxy.cmd("UL192.0.2.99 m4 127.0.0.1 4000 t") == "E31"  # not a local address


LABELLED_BRIDGE = (
    "-l", "*", "-6", "/::", "-l", "one@127.0.0.1", "-l", "two@127.0.0.1=192.0.2.4",
    "-6", "three@::1", "-6", "four@::1=2001:db8::4",
)  # fmt: skip


def port_and_address(reply: str) -> tuple[str, ...]:
    port, *rest = reply.split()
    assert port.isdigit() and int(port) > 0, reply
    return tuple(rest)


def test_labelled_addresses_beside_a_bridge(rtpproxy):
    proxy = rtpproxy(*LABELLED_BRIDGE)
    assert port_and_address(proxy.cmd("U c1 127.0.0.1 12345 ft tt")) == ()  # wildcard
    assert port_and_address(proxy.cmd("Ul{one} c2 127.0.0.1 12345 ft tt")) == ("127.0.0.1",)
    assert port_and_address(proxy.cmd("Ll{two} c2 127.0.0.1 5432 ft tt")) == ("192.0.2.4",)
    assert port_and_address(proxy.cmd("U6l{three} c3 ::2 12345 ft tt")) == ("::1", "6")
    assert port_and_address(proxy.cmd("L6l{four} c3 ::3 5432 ft tt")) == ("2001:db8::4", "6")
    # Without a label, the IPv6 address configured last is the IPv6 default.
    assert port_and_address(proxy.cmd("U6 c4 ::4 12345 ft tt")) == ("2001:db8::4", "6")
    assert port_and_address(proxy.cmd("L6 c4 ::5 5432 ft tt")) == ("2001:db8::4", "6")
    # The bridge sides stay selectable with I and E.
    assert port_and_address(proxy.cmd("Uie c5 127.0.0.1 12345 ft tt")) == ()
    assert port_and_address(proxy.cmd("L6ei c5 ::6 5432 ft tt")) == ()
    assert proxy.cmd("Ul{five} c6 127.0.0.1 12345 ft tt") == "E31"


def test_r_modifier_brings_the_advertised_address_along(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", "-6", "/::1", "-A", "192.0.2.1/2001:db8::1")
    assert port_and_address(proxy.cmd("Ur[::1] r1 127.0.0.1 12345 ft tt")) == (
        "2001:db8::1",
        "6",
    )
    assert port_and_address(proxy.cmd("L6r127.0.0.1 r1 ::6 5432 ft tt")) == ("192.0.2.1",)
    assert port_and_address(proxy.cmd("Lr[::1] r1 127.0.0.1 5432 ft tt")) == ("192.0.2.1",)
    assert port_and_address(proxy.cmd("Ul[::1] r2 127.0.0.1 5432 ft tt")) == (
        "2001:db8::1",
        "6",
    )


def test_bad_l_and_r_addresses_fail_before_the_session_lookup(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    assert port_and_address(proxy.cmd("U b1 127.0.0.1 12345 ft tt")) == ("127.0.0.1",)
    # An existing session whose leg already has ports, and a missing one: same errors.
    for call in ("b1", "nosuch"):
        for verb in ("U", "L"):
            assert proxy.cmd(f"{verb}l[1:2:3:4:5] {call} 127.0.0.1 5432 ft tt") == "E31"
            assert proxy.cmd(f"{verb}r[1:2:3:4:5] {call} 127.0.0.1 5432 ft tt") == "E32"
            assert proxy.cmd(f"{verb}l{{none}} {call} 127.0.0.1 5432 ft tt") == "E31"
            assert proxy.cmd(f"{verb}6 {call} ::1 5432 ft tt") == "E36"
    reply = proxy.cmd("U b2 127.0.0.1 12345 ft tt && Ll[1:2:3:4:5] 127.0.0.1 5432")
    assert reply == "E3"
    assert proxy.cmd("Q b2 ft tt") == "E50"  # nothing ran
    assert proxy.cmd("G nsess_created") == "1"


def test_media_flows_between_labelled_addresses_of_both_families(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", "-l", "b@127.0.0.2=192.0.2.9", "-6", "c@::1")
    caller, callee = UdpClient("::1"), UdpClient("127.0.0.1")
    reply = proxy.cmd(f"U6l{{b}} m1 ::1 {caller.port} ft")
    port_callee_side = int(reply.split()[0])
    assert reply.split()[1:] == ["192.0.2.9"]  # advertised; bound on 127.0.0.2
    reply = proxy.cmd(f"Ll{{c}} m1 127.0.0.1 {callee.port} ft tt")
    port_caller_side, addr = parse_port_reply(reply)
    assert addr == "::1" and reply.endswith(" 6")
    pkt = rtp(1, 0, 0x51, b"v" * 160)
    caller.send(pkt, ("::1", port_caller_side))
    data, src = callee.recv()
    assert data == pkt and src == ("127.0.0.2", port_callee_side)
    callee.send(pkt[::-1], ("127.0.0.2", port_callee_side))
    data, src = caller.recv()
    assert data == pkt[::-1] and src[:2] == ("::1", port_caller_side)
