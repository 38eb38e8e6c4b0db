"""Prompts made by the real makeann, played through a live daemon (P and S)."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from helpers import UdpClient, rtpproxy_command
from integration.media_util import kamailio_call, parse_port_reply, rtp
from rtpp.tools.g711 import alaw_encode, ulaw_encode

pytestmark = pytest.mark.timeout(120)

RATE = 8000
RTP_HEAD = struct.Struct("!BBHII")


def tone(seconds: float, freq: float = 440.0, amplitude: int = 12000) -> bytes:
    """Signed 16-bit little-endian mono PCM at 8 kHz."""
    n = int(seconds * RATE)
    samples = (int(amplitude * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n))
    return struct.pack(f"<{n}h", *samples)


def makeann(tmp: Path, name: str, pcm: bytes) -> str:
    """Run the real makeann on `pcm`; returns the template (`<template>.<pt>` files)."""
    raw = tmp / f"{name}.raw"
    raw.write_bytes(pcm)
    template = str(tmp / name)
    result = subprocess.run(
        rtpproxy_command() + ["makeann", str(raw), template],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return template


@pytest.fixture
def prompts(tmp_path):
    """Prompt templates: 3 s, 0.2 s and 0.1 s of a 440 Hz tone."""
    out = {}
    for name, seconds in (("long", 3.0), ("short", 0.2), ("tiny", 0.1)):
        pcm = tone(seconds)
        template = makeann(tmp_path, name, pcm)
        # The files hold exactly the G.711 encoding of the tone.
        assert Path(template + ".0").read_bytes() == ulaw_encode(pcm)
        assert Path(template + ".8").read_bytes() == alaw_encode(pcm)
        out[name] = template
    return out


def frames(template: str, pt: int, size: int) -> list[bytes]:
    data = Path(f"{template}.{pt}").read_bytes()
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)]


def unpack(data: bytes) -> tuple[int, bool, int, int, int, bytes]:
    b0, b1, seq, ts, ssrc = RTP_HEAD.unpack_from(data)
    assert b0 == 0x80, f"not a plain V2 header: {b0:#x}"
    return b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc, data[12:]


def collect(client: UdpClient, count: int | None = None, quiet: float = 0.5):
    """(arrival, data, src) until `count` packets arrived or `quiet` s of silence."""
    got = []
    client.sock.settimeout(quiet)
    while count is None or len(got) < count:
        try:
            data, src = client.sock.recvfrom(65536)
        except TimeoutError:
            break
        got.append((time.monotonic(), data, src))
    return got


def wait_stat(proxy, name: str, value: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while (current := proxy.cmd(f"G {name}")) != value:
        assert time.monotonic() < deadline, f"{name} is {current}, never reached {value}"
        time.sleep(0.01)


def check_sequence(packets: list[bytes], pt: int, step_ts: int) -> list[bytes]:
    """Classic header rules; returns the payloads."""
    heads = [unpack(p) for p in packets]
    _, _, seq0, ts0, ssrc0, _ = heads[0]
    for k, (ptk, marker, seq, ts, ssrc, _) in enumerate(heads):
        assert ptk == pt
        assert marker == (k == 0), f"marker on packet {k}"
        assert seq == (seq0 + k) & 0xFFFF
        assert ts == (ts0 + k * step_ts) & 0xFFFFFFFF
        assert ssrc == ssrc0
    return [h[5] for h in heads]


@pytest.fixture
def proxy(rtpproxy):
    return rtpproxy("-l", "127.0.0.1")


def test_long_prompt_plays_every_frame_in_order_without_drift(proxy, prompts):
    call = kamailio_call(proxy)
    expected = frames(prompts["long"], 0, 80)
    assert len(expected) == 300
    reply = proxy.cmd(f"P {call.call_id} {prompts['long']} 0 {call.ftag} {call.ttag}")
    assert reply == "0"
    got = collect(call.a, count=len(expected) + 1, quiet=1.0)
    assert len(got) == len(expected)
    # From the caller's own proxy port (the one the caller sends to).
    assert {src for _, _, src in got} == {(call.addr, call.port_b)}
    payloads = check_sequence([d for _, d, _ in got], pt=0, step_ts=80)
    assert payloads == expected
    # RTP time against arrival time: no drift over 3 s, only pacing jitter.
    t0, ts0 = got[0][0], unpack(got[0][1])[3]
    offsets = [(t - t0) - ((unpack(d)[3] - ts0) & 0xFFFFFFFF) / RATE for t, d, _ in got]
    assert max(abs(o) for o in offsets) < 0.05, max(offsets, key=abs)
    head = sorted(offsets[:50])[25]
    tail = sorted(offsets[-50:])[25]
    assert abs(tail - head) < 0.01, (head, tail)
    wall = got[-1][0] - got[0][0]
    assert 2.95 < wall < 3.05
    assert proxy.cmd("G nplrs_created nplrs_destroyed npkts_played") == "1 1 300"
    assert proxy.cmd("G npkts_relayed npkts_rcvd") == "0 0"
    assert "has finished" in proxy.stderr_text()
    assert call.b.recv_none(0.05)


def test_play_to_callee_uses_the_callee_address_and_its_port(proxy, prompts):
    call = kamailio_call(proxy)
    expected = frames(prompts["short"], 8, 80)
    assert proxy.cmd(f"P {call.call_id} {prompts['short']} 8 {call.ttag} {call.ftag}") == "0"
    got = collect(call.b, count=len(expected))
    assert {src for _, _, src in got} == {(call.addr, call.port_a)}
    assert check_sequence([d for _, d, _ in got], pt=8, step_ts=80) == expected
    assert call.a.recv_none(0.1)


def test_repeat_count_plays_the_file_that_many_times_with_continuous_numbering(proxy, prompts):
    call = kamailio_call(proxy)
    expected = frames(prompts["short"], 0, 80)
    assert len(expected) == 20
    assert proxy.cmd(f"P3 {call.call_id} {prompts['short']} 0 {call.ftag} {call.ttag}") == "0"
    got = collect(call.a, count=61)
    assert check_sequence([d for _, d, _ in got], pt=0, step_ts=80) == expected * 3
    wait_stat(proxy, "nplrs_destroyed", "1")
    assert proxy.cmd("G nplrs_created npkts_played") == "1 60"


def test_s_stops_playback_and_p0_stops_too(proxy, prompts):
    call = kamailio_call(proxy)
    cid, name = call.call_id, prompts["long"]
    assert proxy.cmd(f"P {cid} {name} 0 {call.ftag} {call.ttag}") == "0"
    assert len(collect(call.a, count=20)) == 20
    assert proxy.cmd(f"S {cid} {call.ftag} {call.ttag}") == "0"
    wait_stat(proxy, "nplrs_destroyed", "1")
    collect(call.a, quiet=0.05)  # whatever was in flight
    assert call.a.recv_none(0.3)
    # S with nothing playing is fine.
    assert proxy.cmd(f"S {cid} {call.ftag} {call.ttag}") == "0"

    assert proxy.cmd(f"P {cid} {name} 0 {call.ftag} {call.ttag}") == "0"
    assert len(collect(call.a, count=10)) == 10
    assert proxy.cmd(f"P0 {cid} {name} 0 {call.ftag} {call.ttag}") == "0"
    wait_stat(proxy, "nplrs_destroyed", "2")
    collect(call.a, quiet=0.05)
    assert call.a.recv_none(0.3)
    assert proxy.cmd("G nplrs_created nplrs_destroyed") == "2 2"
    assert "stopping player at port" in proxy.stderr_text()


def test_negative_count_loops_until_stopped(proxy, prompts):
    call = kamailio_call(proxy)
    expected = frames(prompts["tiny"], 0, 80)
    assert len(expected) == 10
    assert proxy.cmd(f"P-1 {call.call_id} {prompts['tiny']} 0 {call.ftag} {call.ttag}") == "0"
    got = collect(call.a, count=45)
    assert len(got) == 45
    payloads = check_sequence([d for _, d, _ in got], pt=0, step_ts=80)
    assert payloads == (expected * 5)[:45]
    assert proxy.cmd("G nplrs_destroyed") == "0"
    assert proxy.cmd(f"S {call.call_id} {call.ftag} {call.ttag}") == "0"
    collect(call.a, quiet=0.05)
    assert call.a.recv_none(0.3)
    played = int(proxy.cmd("G npkts_played"))
    assert played >= 45
    assert proxy.cmd("G nplrs_created nplrs_destroyed") == "1 1"


def test_a_new_p_replaces_the_running_player(proxy, prompts):
    call = kamailio_call(proxy)
    cid = call.call_id
    assert proxy.cmd(f"P {cid} {prompts['long']} 0 {call.ftag} {call.ttag}") == "0"
    first = collect(call.a, count=5)
    assert proxy.cmd(f"P {cid} {prompts['tiny']} 8 {call.ftag} {call.ttag}") == "0"
    rest = collect(call.a, quiet=0.4)
    pts = [unpack(d)[0] for _, d, _ in first + rest]
    switch = pts.index(8)
    assert set(pts[:switch]) == {0} and pts[switch:] == [8] * 10
    second = [d for _, d, _ in rest if unpack(d)[0] == 8]
    assert check_sequence(second, pt=8, step_ts=80) == frames(prompts["tiny"], 8, 80)
    assert proxy.cmd("G nplrs_created nplrs_destroyed") == "2 2"


def test_media_toward_the_played_party_is_dropped_then_resumes(proxy, prompts):
    call = kamailio_call(proxy)
    cid = call.call_id
    # Both parties latched and talking first.
    call.a_to_b(rtp(1, 160, 0xA, b"a" * 160))
    assert call.b_to_a(rtp(1, 160, 0xB, b"b" * 160))[0] == rtp(1, 160, 0xB, b"b" * 160)
    dropped_before = int(proxy.cmd("G npkts_discard"))

    assert proxy.cmd(f"P {cid} {prompts['short']} 0 {call.ftag} {call.ttag}") == "0"
    for i in range(2, 8):
        call.b.send(rtp(i, i * 160, 0xB, b"b" * 160), (call.addr, call.port_a))
        # The caller still reaches the callee while it listens to the prompt.
        out = rtp(i, i * 160, 0xA, b"a" * 160)
        assert call.a_to_b(out)[0] == out
        time.sleep(0.01)
    got = collect(call.a, quiet=0.4)
    ssrcs = {unpack(d)[4] for _, d, _ in got}
    assert 0xB not in ssrcs and len(ssrcs) == 1
    assert len(got) == 20
    wait_stat(proxy, "nplrs_destroyed", "1")
    assert int(proxy.cmd("G npkts_discard")) == dropped_before + 6
    q = proxy.cmd(f"Qv {cid} {call.ttag} {call.ftag} ndropped npkts_ina")
    assert q == "ndropped=6 npkts_ina=7"

    # Finished: the callee's media reaches the caller again.
    back = rtp(9, 9 * 160, 0xB, b"c" * 160)
    assert call.b_to_a(back)[0] == back


def test_player_waits_for_the_party_address(proxy, prompts):
    a, b = UdpClient(), UdpClient()
    cid = "noaddr@test"
    name = prompts["tiny"]
    port_a, _ = parse_port_reply(proxy.cmd(f"U {cid} 0.0.0.0 0 ftag"))
    port_b, _ = parse_port_reply(proxy.cmd(f"L {cid} 127.0.0.1 {b.port} ftag ttag"))
    # The caller's address is not known yet: its player waits.
    assert proxy.cmd(f"P {cid} {name} 0 ftag ttag") == "0"
    # The callee's is: playing to it works at once.
    assert proxy.cmd(f"P {cid} {name} 0 ttag ftag") == "0"
    assert len(collect(b, count=10)) == 10
    assert a.recv_none(0.2)
    # The caller's address is learned from its first packet; the prompt follows.
    a.send(rtp(1, 160, 0xA, b"a" * 160), ("127.0.0.1", port_b))
    got = collect(a, count=11)
    assert check_sequence([d for _, d, _ in got], pt=0, step_ts=80) == frames(name, 0, 80)
    assert {src for _, _, src in got} == {("127.0.0.1", port_b)}
    assert port_a != port_b


def test_codec_list_first_existing_file_wins(proxy, prompts, tmp_path):
    call = kamailio_call(proxy)
    cid, name = call.call_id, prompts["tiny"]
    assert not os.path.exists(f"{name}.18")
    assert proxy.cmd(f"P {cid} {name} 18,8,0 {call.ftag} {call.ttag}") == "0"
    got = collect(call.a, count=10)
    assert check_sequence([d for _, d, _ in got], pt=8, step_ts=80) == frames(name, 8, 80)
    wait_stat(proxy, "nplrs_destroyed", "1")
    assert proxy.cmd(f"P {cid} {name} 0,8 {call.ftag} {call.ttag}") == "0"
    got = collect(call.a, count=10)
    assert check_sequence([d for _, d, _ in got], pt=0, step_ts=80) == frames(name, 0, 80)


def test_codec_list_ends_at_an_empty_entry_and_the_start_is_logged(proxy, prompts):
    call = kamailio_call(proxy)
    cid, name = call.call_id, prompts["tiny"]
    # As the classic's strtol loop: "0,,8" is the list "0", "18,,8" just "18".
    assert proxy.cmd(f"P {cid} {name} 18,,8 {call.ftag} {call.ttag}") == "E60"
    assert proxy.cmd(f"P {cid} {name} 0,,8 {call.ftag} {call.ttag}") == "0"
    got = [d for _, d, _ in collect(call.a, count=10)]
    assert check_sequence(got, pt=0, step_ts=80) == frames(name, 0, 80)
    _, _, seq0, _, ssrc, _ = unpack(got[0])
    assert f"playing {name}.0 to port {call.port_b}, ssrc={ssrc:08x} seq={seq0}" in (
        proxy.stderr_text()
    )


def test_session_codecs_and_ptime_come_from_the_offer_and_answer(proxy, prompts):
    a, b = UdpClient(), UdpClient()
    cid = "sess@test"
    name = prompts["short"]
    # Caller offers 8 then 0 and asks for 30 ms packets toward the callee.
    assert proxy.cmd(f"UZ30c8,0 {cid} 127.0.0.1 {a.port} ftag") != ""
    assert proxy.cmd(f"Lc18,0 {cid} 127.0.0.1 {b.port} ftag ttag") != ""
    # To the caller: its own list (8 first), ptime from the callee's side (none): 10 ms.
    assert proxy.cmd(f"P {cid} {name} session ftag ttag") == "0"
    got = collect(a, count=20)
    assert check_sequence([d for _, d, _ in got], pt=8, step_ts=80) == frames(name, 8, 80)
    # To the callee: its list (no .18 file, so 0) at the 30 ms stored by UZ30.
    assert proxy.cmd(f"P {cid} {name} session ttag ftag") == "0"
    got = collect(b, count=7)
    assert len(got) == 6  # 1600 bytes hold six 240-byte packets; the tail is not sent
    assert check_sequence([d for _, d, _ in got], pt=0, step_ts=240) == frames(name, 0, 240)


def test_session_without_a_stored_codec_list_is_e35(proxy, prompts):
    call = kamailio_call(proxy)
    name = prompts["tiny"]
    assert proxy.cmd(f"P {call.call_id} {name} session {call.ftag} {call.ttag}") == "E35"
    assert proxy.cmd("G nplrs_created") == "0"


def test_missing_files_and_bad_lists_are_e60(proxy, prompts, tmp_path):
    call = kamailio_call(proxy)
    cid = call.call_id
    missing = str(tmp_path / "nothing")
    assert proxy.cmd(f"P {cid} {missing} 0,8 {call.ftag} {call.ttag}") == "E60"
    assert proxy.cmd(f"P {cid} {prompts['tiny']} 18,3 {call.ftag} {call.ttag}") == "E60"
    assert proxy.cmd(f"P {cid} {prompts['tiny']} x0 {call.ftag} {call.ttag}") == "E60"
    assert proxy.cmd(f"P {cid} {prompts['tiny']} 0 nosuch {call.ttag}") == "E50"
    assert proxy.cmd(f"P {cid} {prompts['tiny']} 0 {call.ftag} {call.ttag}") == "0"
    assert proxy.cmd("G nplrs_created") == "1"
    assert "can't create player" in proxy.stderr_text()
    assert call.a.recv_none(0.05) is False


def test_deleting_the_session_stops_the_player(proxy, prompts):
    call = kamailio_call(proxy)
    assert proxy.cmd(f"P-1 {call.call_id} {prompts['tiny']} 0 {call.ftag} {call.ttag}") == "0"
    assert len(collect(call.a, count=5)) == 5
    assert call.delete() == "0"
    wait_stat(proxy, "nplrs_destroyed", "1")
    collect(call.a, quiet=0.05)
    assert call.a.recv_none(0.3)


def test_unsupported_payload_type_with_a_file_plays_nothing_until_stopped(proxy, tmp_path):
    call = kamailio_call(proxy)
    name = str(tmp_path / "odd")
    Path(name + ".96").write_bytes(bytes(800))
    assert proxy.cmd(f"P {call.call_id} {name} 96 {call.ftag} {call.ttag}") == "0"
    assert call.a.recv_none(0.3)
    assert proxy.cmd("G nplrs_created nplrs_destroyed npkts_played") == "1 0 0"
    # It still holds the party: media toward it is dropped.
    call.b.send(rtp(1, 160, 0xB, b"b" * 160), (call.addr, call.port_a))
    assert call.a.recv_none(0.2)
    assert proxy.cmd(f"S {call.call_id} {call.ftag} {call.ttag}") == "0"
    assert proxy.cmd("G nplrs_created nplrs_destroyed") == "1 1"
