"""The Z modifier through a live daemon: one party's packets re-cut for the other."""

from __future__ import annotations

import os
import struct
import time

import pytest

from helpers import UdpClient
from integration.media_util import kamailio_call, parse_port_reply, rtp

pytestmark = pytest.mark.timeout(120)

RTP_HEAD = struct.Struct("!BBHII")
SSRC = 0x5EED1234
SEQ0 = 65530  # wraps during the call
TS0 = 0xFFFFF000  # wraps too


def unpack(data: bytes) -> tuple[int, bool, int, int, int, bytes]:
    b0, b1, seq, ts, ssrc = RTP_HEAD.unpack_from(data)
    assert b0 == 0x80
    return b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc, data[12:]


def payloads(n: int, size: int = 160) -> list[bytes]:
    return [os.urandom(size) for _ in range(n)]


def send_paced(sock_send, dest, chunks: list[bytes], pt: int, step: int = 160) -> None:
    """20 ms packets (or `step` samples) in real time, the first one marked."""
    start = time.monotonic()
    for i, payload in enumerate(chunks):
        pkt = rtp(SEQ0 + i, (TS0 + i * step) & 0xFFFFFFFF, SSRC, payload, pt=pt, marker=i == 0)
        delay = start + i * step / 8000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock_send(pkt, dest)


def receive(client, count: int, quiet: float = 0.5) -> list[bytes]:
    got = []
    client.sock.settimeout(quiet)
    while len(got) < count + 1:
        try:
            got.append(client.sock.recvfrom(65536)[0])
        except TimeoutError:
            break
    return got


def check_output(got: list[bytes], expected: list[bytes], pt: int, samples: int) -> None:
    """Re-cut packets: exact bytes, timestamps advance by their size, seq from the first."""
    assert len(got) == len(expected)
    for k, data in enumerate(got):
        ptk, marker, seq, ts, ssrc, body = unpack(data)
        assert (ptk, ssrc) == (pt, SSRC)
        assert marker == (k == 0), f"marker on output {k}"
        assert seq == (SEQ0 + k) & 0xFFFF
        assert ts == (TS0 + k * samples) & 0xFFFFFFFF
        assert body == expected[k], f"payload of output {k}"


def wait_stat(proxy, names: str, value: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while (current := proxy.cmd(f"G {names}")) != value:
        assert time.monotonic() < deadline, f"{names} is {current}, never reached {value}"
        time.sleep(0.01)


@pytest.fixture
def proxy(rtpproxy):
    return rtpproxy("-l", "127.0.0.1")


@pytest.mark.parametrize("pt", [0, 8])
def test_caller_20ms_arrives_at_the_callee_as_40ms(proxy, pt):
    call = kamailio_call(proxy)
    reply = proxy.cmd(f"UZ40 {call.call_id} {call.addr} {call.a.port} {call.ftag}")
    assert int(reply.split()[0]) == call.port_a
    assert "RTP packets from caller will be resized to 40 milliseconds" in proxy.stderr_text()
    chunks = payloads(20)
    send_paced(call.a.send, (call.addr, call.port_b), chunks, pt)
    got = receive(call.b, 10)
    expected = [chunks[2 * k] + chunks[2 * k + 1] for k in range(10)]
    check_output(got, expected, pt, 320)
    wait_stat(proxy, "npkts_resizer_in npkts_resizer_out npkts_resizer_discard", "20 10 0")
    # The other direction is untouched.
    back = rtp(7, 7 * 160, 0xB, b"b" * 160)
    assert call.b_to_a(back)[0] == back


def test_callee_20ms_arrives_at_the_caller_as_10ms(proxy):
    call = kamailio_call(proxy)
    reply = proxy.cmd(f"LZ10 {call.call_id} {call.addr} {call.b.port} {call.ftag} {call.ttag}")
    assert int(reply.split()[0]) == call.port_b
    assert "RTP packets from callee will be resized to 10 milliseconds" in proxy.stderr_text()
    chunks = payloads(20)
    send_paced(call.b.send, (call.addr, call.port_a), chunks, 0)
    got = receive(call.a, 40)
    expected = [half for c in chunks for half in (c[:80], c[80:])]
    check_output(got, expected, 0, 80)
    wait_stat(proxy, "npkts_resizer_in npkts_resizer_out npkts_resizer_discard", "20 40 0")
    out = rtp(1, 160, 0xA, b"a" * 160)
    assert call.a_to_b(out)[0] == out


def test_g729_20ms_regrouped_to_30ms_whole_frames(proxy):
    call = kamailio_call(proxy)
    proxy.cmd(f"UZ30 {call.call_id} {call.addr} {call.a.port} {call.ftag}")
    chunks = payloads(12, size=20)  # two 10-byte frames each
    send_paced(call.a.send, (call.addr, call.port_b), chunks, 18)
    stream = b"".join(chunks)
    got = receive(call.b, 8)
    expected = [stream[i : i + 30] for i in range(0, len(stream), 30)]
    check_output(got, expected, 18, 240)


def test_late_packets_removal_and_counters(proxy):
    call = kamailio_call(proxy)
    cid = call.call_id
    dest = (call.addr, call.port_b)
    proxy.cmd(f"UZ40 {cid} {call.addr} {call.a.port} {call.ftag}")
    chunks = payloads(4)
    send_paced(call.a.send, dest, chunks, 0)
    assert len(receive(call.b, 2)) == 2
    # Older than what was already sent out: absorbed and discarded.
    call.a.send(rtp(SEQ0 + 1, (TS0 + 160) & 0xFFFFFFFF, SSRC, chunks[1]), dest)
    wait_stat(proxy, "npkts_resizer_in npkts_resizer_out npkts_resizer_discard", "5 2 1")
    assert call.b.recv_none(0.2)
    # A payload the resizer does not handle passes unchanged, even while resizing.
    odd = rtp(SEQ0 + 4, (TS0 + 640) & 0xFFFFFFFF, SSRC, b"v" * 50, pt=96)
    assert call.a_to_b(odd)[0] == odd
    # Half an output packet waits in the queue (a new SSRC: its clock starts afresh, so
    # the long pause above does not make it overdue)...
    call.a.send(rtp(SEQ0 + 5, (TS0 + 800) & 0xFFFFFFFF, SSRC + 1, chunks[0]), dest)
    wait_stat(proxy, "npkts_resizer_in", "6")
    assert call.b.recv_none(0.2)
    # ...and is thrown away when a U without Z removes the resizer.
    proxy.cmd(f"U {cid} {call.addr} {call.a.port} {call.ftag}")
    assert proxy.cmd("G npkts_resizer_in npkts_resizer_out npkts_resizer_discard") == "6 2 2"
    plain = rtp(SEQ0 + 6, (TS0 + 960) & 0xFFFFFFFF, SSRC, chunks[2])
    assert call.a_to_b(plain)[0] == plain
    # Counters survive the session.
    assert call.delete() == "0"
    assert proxy.cmd("G npkts_resizer_in npkts_resizer_out npkts_resizer_discard") == "6 2 2"


def test_changing_the_target_keeps_the_queue(proxy):
    call = kamailio_call(proxy)
    cid = call.call_id
    dest = (call.addr, call.port_b)
    proxy.cmd(f"UZ60 {cid} {call.addr} {call.a.port} {call.ftag}")
    chunks = payloads(6)
    send_paced(call.a.send, dest, chunks[:2], 0)
    assert call.b.recv_none(0.1)
    proxy.cmd(f"UZ20 {cid} {call.addr} {call.a.port} {call.ftag}")
    call.a.send(rtp(SEQ0 + 2, (TS0 + 320) & 0xFFFFFFFF, SSRC, chunks[2]), dest)
    got = receive(call.b, 3)
    check_output(got, chunks[:3], 0, 160)


def test_session_delete_discards_the_queue(proxy):
    call = kamailio_call(proxy)
    proxy.cmd(f"UZ40 {call.call_id} {call.addr} {call.a.port} {call.ftag}")
    call.a.send(rtp(SEQ0, TS0, SSRC, b"q" * 160), (call.addr, call.port_b))
    wait_stat(proxy, "npkts_resizer_in", "1")
    assert call.delete() == "0"
    assert proxy.cmd("G npkts_resizer_in npkts_resizer_out npkts_resizer_discard") == "1 0 1"


COUNTERS = "npkts_resizer_in npkts_resizer_out npkts_resizer_discard npkts_discard npkts_relayed"


def test_media_toward_a_party_hearing_a_prompt_is_dropped_before_the_resizer(proxy, tmp_path):
    call = kamailio_call(proxy)
    cid = call.call_id
    prompt = tmp_path / "moh"
    (tmp_path / "moh.0").write_bytes(b"\xff" * 800)
    proxy.cmd(f"UZ40 {cid} {call.addr} {call.a.port} {call.ftag}")
    # A prompt loops toward the callee: the caller's media to it is dropped per packet.
    assert proxy.cmd(f"P-1 {cid} {prompt} 0 {call.ttag} {call.ftag}") == "0"
    send_paced(call.a.send, (call.addr, call.port_b), payloads(10), 0)
    wait_stat(proxy, COUNTERS, "0 0 0 10 0")
    assert proxy.cmd(f"Qv {cid} {call.ftag} {call.ttag} ndropped") == "ndropped=10"
    assert proxy.cmd(f"S {cid} {call.ttag} {call.ftag}") == "0"


def test_resized_packets_that_cannot_be_sent_are_not_counted_out(proxy):
    a = UdpClient()
    cid = "nodest@test"
    port_a, _ = parse_port_reply(proxy.cmd(f"UZ40 {cid} 127.0.0.1 {a.port} ftag"))
    # The callee's address is not known yet: nothing can go out toward it.
    port_b, _ = parse_port_reply(proxy.cmd(f"L {cid} 0.0.0.0 0 ftag ttag"))
    assert port_a != port_b
    send_paced(a.send, ("127.0.0.1", port_b), payloads(10), 0)
    wait_stat(proxy, COUNTERS, "10 0 0 5 0")
    assert proxy.cmd(f"Qv {cid} ftag ttag ndropped") == "ndropped=5"
