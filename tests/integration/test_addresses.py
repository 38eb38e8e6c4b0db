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
