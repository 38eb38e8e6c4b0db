"""C: copying a leg's media to a UDP listener or a file, and the `U ... && C` mirror."""

from __future__ import annotations

import socket

import pytest

from helpers import UdpClient
from integration.media_util import kamailio_call, rtp
from integration.test_recording import (
    RTCP_SR,
    _remove_dirs,  # noqa: F401  (fixture: removes the directories new_dir made)
    callee_packets,
    caller_packets,
    new_dir,
    parse_adhoc,
    parse_pcap,
    recording_call,
    send_rtcp,
    wait_recorded,
)

pytestmark = pytest.mark.timeout(120)


def listener_pair() -> tuple[UdpClient, UdpClient]:
    """Two UDP sockets on 127.0.0.1 at ports P and P + 1."""
    for _ in range(50):
        first = UdpClient()
        second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            second.bind(("127.0.0.1", first.port + 1))
        except OSError:
            first.close()
            second.close()
            continue
        second.settimeout(2.0)
        pair = UdpClient.__new__(UdpClient)
        pair.sock = second
        return first, pair
    raise AssertionError("no free port pair")


def drain(client: UdpClient) -> list[tuple[bytes, tuple]]:
    out = []
    while True:
        try:
            out.append(client.recv(timeout=0.3))
        except TimeoutError:
            return out


def test_remote_copy_receives_every_packet_of_the_direction(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = kamailio_call(proxy)
    rtp_l, rtcp_l = listener_pair()
    assert proxy.cmd(f"C {call.call_id} udp:127.0.0.1:{rtp_l.port} ftag;1 ttag;1") == "0"
    sent = caller_packets(call, 30)
    callee_packets(call, 10)  # the other direction is not copied
    send_rtcp(call, from_caller=True)
    got = drain(rtp_l)
    assert [data for data, _ in got] == sent
    assert len({src for _, src in got}) == 1
    copy_port = got[0][1][1]
    assert proxy.port_min <= copy_port <= proxy.port_max and copy_port % 2 == 0
    assert [(data, src[1]) for data, src in drain(rtcp_l)] == [(RTCP_SR, copy_port + 1)]
    assert call.delete() == "0"
    caller_packets(kamailio_call(proxy), 1)
    assert rtp_l.recv_none(0.3)


def test_no_resolve_refuses_a_copy_target_host_name_with_e65(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", "--no_resolve")
    call = kamailio_call(proxy)
    rtp_l, _ = listener_pair()
    assert proxy.cmd(f"C {call.call_id} udp:localhost:{rtp_l.port} ftag;1 ttag;1") == "E65"
    assert proxy.cmd(f"C {call.call_id} udp:127.0.0.1:{rtp_l.port} ftag;1 ttag;1") == "0"
    sent = caller_packets(call, 3)
    assert [data for data, _ in drain(rtp_l)] == sent


def test_cp_replies_with_the_copy_port_and_address(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", "-R")
    call = kamailio_call(proxy)
    rtp_l, rtcp_l = listener_pair()
    reply = proxy.cmd(f"Cp {call.call_id} udp:localhost:{rtp_l.port} ttag;1 ftag;1")
    port, addr = reply.split()
    assert addr == "127.0.0.1"
    sent = callee_packets(call, 10)
    got = drain(rtp_l)
    assert got == [(pkt, ("127.0.0.1", int(port))) for pkt in sent]
    send_rtcp(call, from_caller=False)
    assert rtcp_l.recv_none(0.3)  # -R: no RTCP copy


def test_remote_copy_ports_return_to_the_pool(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = kamailio_call(proxy)
    listener = UdpClient()
    for _ in range(3):
        assert proxy.cmd(f"C {call.call_id} udp:127.0.0.1:{listener.port} ftag;1 ttag;1") == "0"
    assert call.delete() == "0"
    # Replaced copies and the deleted session's copy gave their ports back.
    count = (proxy.port_max - proxy.port_min + 1) // 2
    calls = [kamailio_call(proxy) for _ in range(count // 2)]
    assert all(c.port_a and c.port_b for c in calls)


@pytest.mark.parametrize(
    "target",
    [
        "udp:127.0.0.1",
        "udp:127.0.0.1:",
        "udp:127.0.0.1:0",
        "udp:127.0.0.1:65535",
        "udp:127.0.0.1:x1",
        "udp::5000",
        "udp:no-such-host.invalid:5000",
    ],
)
def test_bad_remote_targets_are_e65(rtpproxy, target):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = kamailio_call(proxy)
    assert proxy.cmd(f"C {call.call_id} {target} ftag;1 ttag;1") == "E65"
    caller_packets(call, 1)


def test_copy_errors(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = kamailio_call(proxy)
    assert proxy.cmd(f"C {call.call_id} name ftag;1 ttag;1") == "E65"  # no -r
    assert proxy.cmd("C nosuch udp:127.0.0.1:5000 ftag ttag") == "E50"
    rec, proxy, call = recording_call(rtpproxy, "cperr")
    assert proxy.cmd(f"Cp {call.call_id} name ftag;1 ttag;1") == "E65"
    assert list(rec.iterdir()) == []


def test_copy_to_a_file_under_the_record_dir(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "cfile")
    assert proxy.cmd(f"C {call.call_id} mycopy ttag;1 ftag;1") == "0"
    sent = callee_packets(call, 12)
    caller_packets(call, 3)
    send_rtcp(call, from_caller=False)
    assert call.delete() == "0"
    wait_recorded(rec / "mycopy.rtp", sent)
    wait_recorded(rec / "mycopy.rtcp", [RTCP_SR])
    assert sorted(p.name for p in rec.iterdir()) == ["mycopy.rtcp", "mycopy.rtp"]
    recs = parse_adhoc(rec / "mycopy.rtp")
    assert [r.data for r in recs] == sent and {r.src for r in recs} == {call.b.addr}
    assert [r.data for r in parse_adhoc(rec / "mycopy.rtcp")] == [RTCP_SR]


def test_single_file_copy_with_pcap(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "cs", "-P")
    assert proxy.cmd(f"Cs {call.call_id} onefile ftag;1 ttag;1") == "0"
    sent = caller_packets(call, 7)
    assert call.delete() == "0"
    wait_recorded(rec / "onefile", sent, parse_pcap)
    assert [p.name for p in rec.iterdir()] == ["onefile"]


def test_single_file_copies_of_both_legs_share_one_file(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "cs4", "-P")
    assert proxy.cmd(f"Cs {call.call_id} both.pcap ftag;1 ttag;1") == "0"
    assert proxy.cmd(f"Cs {call.call_id} both.pcap ttag;1") == "E50"  # no such session
    assert proxy.cmd(f"Cs {call.call_id} both.pcap ttag;1 ftag;1") == "0"
    sent = caller_packets(call, 3) + callee_packets(call, 3) + caller_packets(call, 2, first=3)
    assert call.delete() == "0"
    wait_recorded(rec / "both.pcap", sent, parse_pcap)
    assert [p.name for p in rec.iterdir()] == ["both.pcap"]


def test_single_file_copy_never_replaces_a_recording_of_the_leg(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "cs2", "-P")
    assert proxy.cmd(f"C {call.call_id} first ftag;1 ttag;1") == "0"
    assert proxy.cmd(f"Cs {call.call_id} second ftag;1 ttag;1") == "E65"
    assert proxy.cmd(f"Cs {call.call_id} other ttag;1 ftag;1") == "0"  # the other leg
    assert proxy.cmd(f"Cs {call.call_id} again ttag;1 ftag;1") == "E65"
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
    sent = caller_packets(call, 4)
    assert call.delete() == "0"
    wait_recorded(rec / "first.rtp", sent, parse_pcap)
    assert not (rec / "second").exists() and not (rec / "again").exists()
    # Without -P the s modifier changes nothing, and a repeated C is accepted.
    proxy = rtpproxy("-l", "127.0.0.1", "-r", str(new_dir("cs3")))
    call = kamailio_call(proxy)
    assert proxy.cmd(f"C {call.call_id} one ftag;1 ttag;1") == "0"
    assert proxy.cmd(f"Cs {call.call_id} two ftag;1 ttag;1") == "0"


def test_copy_and_record_of_one_leg_coexist(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "cr", "-R")
    listener = UdpClient()
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
    assert proxy.cmd(f"C {call.call_id} udp:127.0.0.1:{listener.port} ftag;1 ttag;1") == "0"
    sent = caller_packets(call, 5)
    assert [d for d, _ in drain(listener)] == sent
    assert call.delete() == "0"
    wait_recorded(rec / f"{call.call_id}=ftag.o.rtp", sent)


def test_mirror_subcommand_copies_another_session(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    first = kamailio_call(proxy)
    second = kamailio_call(proxy)
    reply = proxy.cmd(
        f"U {second.call_id} 127.0.0.1 {second.a.port} ftag;1 ttag;1"
        f" && C {first.call_id} ftag;1 ttag;1"
    )
    assert reply == f"{second.port_a} 127.0.0.1"
    pkt = rtp(1, 160, 0x77, b"m" * 160)
    assert first.a_to_b(pkt)[0] == pkt  # the session itself is unaffected
    data, src = second.a.recv()  # the copy leaves the second session's caller-side port
    assert data == pkt and src == ("127.0.0.1", second.port_b)


def test_norecord_stops_a_remote_copy(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = kamailio_call(proxy)
    listener = UdpClient()
    assert proxy.cmd(f"C {call.call_id} udp:127.0.0.1:{listener.port} ftag;1 ttag;1") == "0"
    caller_packets(call, 1)
    assert listener.recv()[0]
    assert proxy.cmd(f"N {call.call_id} ftag;1 ttag;1") == "0"
    caller_packets(call, 2)
    assert listener.recv_none(0.3)
    assert proxy.cmd(f"N {call.call_id} ftag;1 ttag;1") == "E50"
