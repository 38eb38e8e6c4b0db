"""The kernel fast path against the real kernel: a daemon with --kernel-offload in a
private relay namespace between two phone subnets, real RTP both ways."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest

from helpers import UdpClient, short_tmpdir
from integration.media_util import parse_port_reply, rtp
from integration.test_recording import packets_in
from integration.test_timeouts import Listener
from kernel.kcall import KCall, make_call, start_relay, wait_for
from netns_lab import inside

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_call_is_relayed_by_the_kernel_both_ways(rtpproxy, lab, family):
    proxy = start_relay(rtpproxy, lab, family=family)
    call = make_call(proxy, lab, family)
    call.latch()
    assert lab.elements() > 0
    call.a_to_b(50)
    call.b_to_a(40)
    # Q counts every packet; the analyzer, which sees what reaches the daemon's
    # sockets, saw only the first packet of each side.
    stats = call.query("npkts_ina", "npkts_ino", "nrelayed", "rtpa_nrcvd")
    assert stats == {"npkts_ina": 51, "npkts_ino": 41, "nrelayed": 92, "rtpa_nrcvd": 1}
    other = proxy.cmd(f"Qv {call.call_id} ttag;1 ftag;1 rtpa_nrcvd")
    assert other == "rtpa_nrcvd=1"
    assert proxy.cmd("G npkts_rcvd npkts_relayed") == "92 92"
    nat = [e for e in lab.conntrack(family) if f"dport={call.to_b[1]}" in e]
    assert nat, lab.conntrack(family)
    assert call.delete() == "0"
    # Once D has returned nothing is forwarded, and nothing is left in the kernel.
    call.send_a(3)
    call.send_b(3)
    assert call.b.recv_none(0.3) and call.a.recv_none(0.1)
    assert lab.elements() == 0
    assert proxy.cmd("G npkts_rcvd npkts_relayed nsess_destroyed") == "92 92 1"
    assert "RTP from caller 51, from callee 41, relayed 51/41" in proxy.stderr_text()


def stat(proxy, name: str) -> int:
    return int(proxy.cmd(f"G {name}"))


def test_strangers_reach_the_daemon_and_are_dropped(rtpproxy, lab):
    proxy = start_relay(rtpproxy, lab)
    call = make_call(proxy, lab)
    call.latch()
    stranger = lab.phone("a", host=3)
    stranger_rtp = lab.phone("a")  # the caller's own address, another port
    discarded = stat(proxy, "npkts_discard")
    for i in range(5):
        stranger.send(rtp(i, 0, 0x5555, b"s" * 160), call.to_b)
        stranger_rtp.send(rtp(5000 + i, 0, 0x6666, b"t" * 160), call.to_b)
    assert call.b.recv_none(0.5)
    assert stat(proxy, "npkts_discard") == discarded + 10
    call.a_to_b(10)
    assert call.query("npkts_ina", "rtpa_nrcvd") == {"npkts_ina": 11, "rtpa_nrcvd": 1}


def test_a_nat_rebinding_moves_the_kernel_binding(rtpproxy, lab):
    proxy = start_relay(rtpproxy, lab)
    call = make_call(proxy, lab)
    call.latch()
    # Far more packets than the re-latch window (536) go by in the kernel: the daemon
    # must count them to recognise the sequence that continues from the new port.
    call.a_to_b(700)
    old = call.a
    call.a = lab.phone("a")  # same address, new port, same SSRC and sequence
    call.a_to_b(1)  # through the daemon: re-latched
    call.a_to_b(20)  # through the kernel again
    assert call.query("npkts_ina", "rtpa_nrcvd") == {"npkts_ina": 722, "rtpa_nrcvd": 2}
    call.b_to_a(5)  # B's packets now go to the new port
    assert old.recv_none(0.2)
    old.send(rtp(9000, 0, 0x1111AAAA, b"o" * 160), call.to_b)  # the old port: a stranger
    assert call.b.recv_none(0.3)
    assert "re-latched to" in proxy.stderr_text()


def test_recording_started_mid_call_is_complete_and_the_call_returns_to_the_kernel(rtpproxy, lab):
    rec = Path(short_tmpdir())
    try:
        proxy = start_relay(rtpproxy, lab, "-r", str(rec))
        call = make_call(proxy, lab)
        call.latch()
        call.a_to_b(20)
        assert proxy.cmd(f"R {call.tags}") == "0"
        recorded = []
        for _ in range(30):  # each packet right after the last: no gap for a race
            recorded += call.send_a(1)
            got, _ = call.b.recv(timeout=2.0)
            assert got == recorded[-1]
        # User space again; the 20 packets the kernel relayed are not "lost" to it.
        assert call.query("rtpa_nrcvd", "rtpa_nlost") == {"rtpa_nrcvd": 31, "rtpa_nlost": 0}
        assert proxy.cmd(f"N {call.tags}") == "0"
        call.a_to_b(15)
        assert call.query("npkts_ina", "rtpa_nrcvd") == {"npkts_ina": 66, "rtpa_nrcvd": 31}
        path = rec / f"{call.call_id}=ftag.o.rtp"
        wait_for(lambda: packets_in(path) == recorded, what="the recording")
        assert call.delete() == "0"
    finally:
        shutil.rmtree(rec, ignore_errors=True)


def test_a_call_relayed_by_the_kernel_does_not_time_out_and_then_does(rtpproxy, lab):
    path = os.path.join(short_tmpdir(), "notify.sock")
    listener = Listener(socket.AF_UNIX, path)
    proxy = start_relay(rtpproxy, lab, "-T", "2", "-n", f"unix:{path}")
    call = make_call(proxy, lab)
    call.latch()
    reply = proxy.cmd(
        f"U {call.tags} unix:{path} kt1".replace(
            f"U {call.call_id}", f"U {call.call_id} {call.a.addr[0]} {call.a.port}"
        )
    )
    assert reply.split()[0].isdigit(), reply
    for _ in range(40):  # 4 s of media, twice the timeout, all through the kernel
        call.a_to_b(1)
        time.sleep(0.1)
    assert call.query("rtpa_nrcvd") == {"rtpa_nrcvd": 1}
    started = time.monotonic()
    wait_for(lambda: proxy.cmd(f"Q {call.tags}") == "E50", timeout=6, what="the timeout")
    assert time.monotonic() - started >= 1.0
    assert listener.read_line() == b"kt1\n"
    assert proxy.cmd("G nsess_timeout npkts_relayed") == "1 42"
    assert lab.elements() == 0


def test_a_killed_instance_is_cleaned_up_by_the_next(rtpproxy, lab):
    proxy = start_relay(rtpproxy, lab)
    ports = (proxy.port_min, proxy.port_max)
    call = make_call(proxy, lab)
    call.latch()
    tables = lab.instance_tables()
    assert [t.split()[0] for t in tables] == ["ip", "ip6"]
    proxy.stop(signal.SIGKILL)
    call.a_to_b(3)  # the dead instance's table and NAT entries still forward
    again = start_relay(rtpproxy, lab, ports=ports)
    assert lab.instance_tables() == tables
    assert lab.elements() == 0
    assert not [e for e in lab.conntrack() if f"dport={call.to_b[1]}" in e]
    assert "flushed" in again.stderr_text()
    call.send_a(3)
    assert call.b.recv_none(0.5)


def test_bridge_mode_with_advertised_addresses(rtpproxy, lab):
    inner, outer = lab.v4("a", 1), lab.v4("b", 1)
    proxy = start_relay(rtpproxy, lab, "-l", f"{inner}/{outer}", "-A", "192.0.2.1/192.0.2.2")
    a, b = lab.phone("a"), lab.phone("b")
    reply = proxy.cmd(f"UIE br1 {a.addr[0]} {a.port} ftag;1")
    port_a, adv = parse_port_reply(reply)
    assert adv == "192.0.2.2"
    port_b, adv = parse_port_reply(proxy.cmd(f"LEI br1 {b.addr[0]} {b.port} ftag;1 ttag;1"))
    assert adv == "192.0.2.1"
    # Both legs asymmetric, addresses from the controller: the kernel from packet one.
    call = KCall(proxy, lab, "br1", a, b, (outer, port_a), (inner, port_b))
    call.a_to_b(10)
    call.b_to_a(10)
    assert call.query("npkts_ina", "npkts_ino", "rtpa_nrcvd") == {
        "npkts_ina": 10,
        "npkts_ino": 10,
        "rtpa_nrcvd": 0,
    }


def test_an_ipv4_to_ipv6_bridge_stays_in_user_space(rtpproxy, lab):
    proxy = start_relay(rtpproxy, lab, "-l", lab.v4("a", 1), "-6", f"/{lab.v6('b', 1)}")
    a, b = lab.phone("a"), lab.phone("b", socket.AF_INET6)
    port_a, _ = parse_port_reply(proxy.cmd(f"UIE g1 {a.addr[0]} {a.port} ftag;1"))
    port_b, _ = parse_port_reply(proxy.cmd(f"L6EI g1 {b.addr[0]} {b.port} ftag;1 ttag;1"))
    call = KCall(proxy, lab, "g1", a, b, (lab.v6("b", 1), port_a), (lab.v4("a", 1), port_b))
    call.a_to_b(5)
    call.b_to_a(5)
    assert call.query("rtpa_nrcvd") == {"rtpa_nrcvd": 5}
    assert lab.elements() == 0


def relays_in_user_space(proxy, lab) -> str:
    """A latched call's packets all reach the process; the one "kernel offload" line."""
    call = make_call(proxy, lab)
    call.latch()
    call.a_to_b(5)
    assert call.query("rtpa_nrcvd") == {"rtpa_nrcvd": 6}
    lines = [line for line in proxy.stderr_text().splitlines() if "kernel offload" in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_without_forwarding_one_line_says_so_and_user_space_relays(rtpproxy, lab):
    lab.forwarding(False)
    proxy = start_relay(rtpproxy, lab)
    assert "net.ipv4.ip_forward is 0" in relays_in_user_space(proxy, lab)
    assert not lab.instance_tables()


def test_without_cap_net_admin_one_line_says_so_and_user_space_relays(rtpproxy, lab):
    wrap = ("ip", "netns", "exec", lab.relay, "setpriv", "--bounding-set", "-net_admin",
            "--inh-caps", "-net_admin")  # fmt: skip
    proxy = rtpproxy("--kernel-offload", "-l", "0.0.0.0", ctrl="unix", wrap=wrap)
    assert "CAP_NET_ADMIN" in relays_in_user_space(proxy, lab)


@pytest.mark.slow
def test_a_thousand_calls_leave_no_element_and_no_conntrack_entry(rtpproxy, lab):
    proxy = start_relay(rtpproxy, lab)
    a, b = lab.phone("a"), lab.phone("b")
    for _ in range(1000):
        call = make_call(proxy, lab, a=a, b=b)
        call.latch()
        call.a_to_b(1)
        call.b_to_a(1)
        assert call.delete() == "0"
    assert lab.elements() == 0
    assert lab.conntrack() == []
    assert proxy.cmd("G nsess_destroyed npkts_relayed rtpa_nrcvd") == "1000 4000 2000"


def test_the_kernel_route_works_after_dropping_to_an_unprivileged_user(rtpproxy, lab):
    proxy = start_relay(rtpproxy, lab, "-u", "nobody")
    call = make_call(proxy, lab)
    call.latch()
    call.a_to_b(10)
    assert call.query("npkts_ina", "rtpa_nrcvd") == {"npkts_ina": 11, "rtpa_nrcvd": 1}
    status = Path(f"/proc/{proxy.pid}/status").read_text()
    assert "Uid:\t65534" in status
    assert int(status.split("CapEff:")[1].split()[0], 16) == 1 << 12  # CAP_NET_ADMIN only
    assert call.delete() == "0"
    assert lab.elements() == 0
    proxy.stop()
    assert not lab.instance_tables()


def test_a_copy_started_mid_call_gets_every_packet_from_that_moment(rtpproxy, lab):
    proxy = start_relay(rtpproxy, lab)
    call = make_call(proxy, lab)
    call.latch()
    call.a_to_b(10)
    with inside(lab.relay):
        listener = UdpClient("127.0.0.1")
    lab.sockets.append(listener)
    assert proxy.cmd(f"C {call.call_id} udp:127.0.0.1:{listener.port} ftag;1 ttag;1") == "0"
    sent = []
    for _ in range(20):
        sent += call.send_a(1)
        assert call.b.recv(timeout=2.0)[0] == sent[-1]
    copied = [listener.recv(timeout=2.0)[0] for _ in sent]
    assert copied == sent
    assert listener.recv_none(0.2)
    assert call.query("npkts_ina", "rtpa_nrcvd") == {"npkts_ina": 31, "rtpa_nrcvd": 21}


@pytest.mark.slow
def test_a_shutdown_with_many_calls_in_the_kernel_unbinds_them_all(rtpproxy, lab):
    # Thousands of conntrack deletions at once would overflow the netlink socket's
    # receive buffer and lose answers; the shutdown must not wait for them for ever.
    proxy = start_relay(rtpproxy, lab, ports=(20000, 26999))
    a, b = lab.phone("a"), lab.phone("b")
    for _ in range(1600):
        call = make_call(proxy, lab, a=a, b=b)
        call.latch()
        call.a_to_b(1)
        call.b_to_a(1)
    assert proxy.cmd("G nsess_created") == "1600"
    assert len(lab.conntrack()) >= 1600
    assert proxy.stop(timeout=30.0) == 0
    assert lab.instance_tables() == []
    assert lab.conntrack() == []
