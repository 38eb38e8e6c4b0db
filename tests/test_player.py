import random
import time

import gevent
import pytest
from gevent import socket

from rtpp.media.playback.player import (
    DEFAULT_PTIME_MS,
    Player,
    PromptSchedule,
    open_prompt,
    play_loop,
)
from rtpp.media.rtp import RtpPacket

START = 1000.0


def prompt(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def schedule(data: bytes, pt: int = 0, ptime_ms: int = DEFAULT_PTIME_MS, count: int = 1):
    s = PromptSchedule(data, pt, ptime_ms=ptime_ms, count=count, rng=random.Random(1))
    s.start(START)
    return s


def drain(s: PromptSchedule, until: float = START + 3600) -> list[RtpPacket]:
    return [RtpPacket.parse(p) for p in s.pop_due(until)]


@pytest.mark.parametrize(
    ("pt", "ptime_ms", "size", "duration_ms"),
    [
        (0, 10, 80, 10),
        (8, 10, 80, 10),
        (9, 10, 80, 10),
        (18, 10, 10, 10),
        (3, 10, 33, 20),
        (4, 10, 24, 30),
        (0, 20, 160, 20),
        (18, 25, 30, 30),
        (3, 30, 66, 40),
    ],
)
def test_packet_size_and_duration_per_codec(pt, ptime_ms, size, duration_ms):
    s = schedule(prompt(size * 5), pt=pt, ptime_ms=ptime_ms)
    assert (s.packet_bytes, s.duration_ms) == (size, duration_ms)
    packets = drain(s)
    assert len(packets) == 5
    assert {len(p.payload) for p in packets} == {size}
    assert [p.ts - packets[0].ts for p in packets] == [8 * duration_ms * k for k in range(5)]


def test_pcmu_default_packets():
    data = prompt(800 + 50)  # the 50-byte tail is never sent
    packets = drain(schedule(data))
    assert len(packets) == 10
    assert b"".join(p.payload for p in packets) == data[:800]
    assert {p.payload_type for p in packets} == {0}
    assert {p.ssrc for p in packets} == {packets[0].ssrc}
    seq0, ts0 = packets[0].seq, packets[0].ts
    assert [p.seq for p in packets] == [(seq0 + k) & 0xFFFF for k in range(10)]
    assert [p.ts for p in packets] == [(ts0 + 80 * k) & 0xFFFFFFFF for k in range(10)]
    assert [p.marker for p in packets] == [True] + [False] * 9
    assert all(p.csrc == () and p.extension is None and not p.padding for p in packets)


def test_random_start_values_come_from_the_rng():
    a = PromptSchedule(prompt(80), 0, rng=random.Random(5))
    b = PromptSchedule(prompt(80), 0, rng=random.Random(5))
    c = PromptSchedule(prompt(80), 0, rng=random.Random(6))
    assert (a.ssrc, a.seq0, a.ts0) == (b.ssrc, b.seq0, b.ts0)
    assert (a.ssrc, a.seq0, a.ts0) != (c.ssrc, c.seq0, c.ts0)


def test_repeat_count_three_plays_three_times_continuing_seq_and_ts():
    data = prompt(400 + 30)
    packets = drain(schedule(data, count=3))
    assert len(packets) == 15
    assert b"".join(p.payload for p in packets) == data[:400] * 3
    seq0, ts0 = packets[0].seq, packets[0].ts
    assert [p.seq for p in packets] == [(seq0 + k) & 0xFFFF for k in range(15)]
    assert [p.ts for p in packets] == [(ts0 + 80 * k) & 0xFFFFFFFF for k in range(15)]
    assert [p.marker for p in packets] == [True] + [False] * 14


def test_negative_count_loops_forever():
    s = schedule(prompt(160), count=-1)
    packets = drain(s, START + 1.0)
    assert len(packets) == 101  # due at 0, 10, ..., 1000 ms
    assert not s.finished
    assert s.next_deadline() == pytest.approx(START + 1.01)
    assert [p.payload for p in packets[:4]] == [prompt(160)[:80], prompt(160)[80:]] * 2


def test_count_zero_plays_nothing():
    s = schedule(prompt(800), count=0)
    assert s.finished
    assert drain(s) == []
    assert s.next_deadline() is None


def test_prompt_shorter_than_a_packet_finishes_at_once_even_when_looping():
    s = schedule(prompt(79), count=-1)
    assert s.finished
    assert drain(s) == []


def test_unsupported_payload_type_never_sends_and_never_finishes():
    s = schedule(prompt(800), pt=96)
    assert not s.supported
    assert drain(s) == []
    assert not s.finished
    assert s.next_deadline() is None


def test_nothing_is_due_before_start():
    s = PromptSchedule(prompt(800), 0)
    assert s.pop_due(1e9) == []
    assert s.next_deadline() is None


def test_packets_are_due_at_exact_multiples_of_ptime():
    s = schedule(prompt(80), count=-1)
    for k in (0, 1, 99, 360_000, 8_640_000):
        assert s.due_time(k) == START + k * 10 / 1000
    s = schedule(prompt(33 * 3), pt=3, count=-1)
    assert s.due_time(1_000_000) == START + 1_000_000 * 20 / 1000


def test_pop_due_hands_out_each_packet_exactly_at_its_deadline():
    s = schedule(prompt(160), count=-1)
    handed = 0
    for k in range(2000):
        deadline = s.next_deadline()
        assert deadline == START + k * 10 / 1000
        assert s.pop_due(deadline - 1e-6) == []
        got = s.pop_due(deadline)
        assert len(got) == 1
        handed += 1
    assert s.next_index == handed


def test_late_poll_returns_every_missed_packet_in_order():
    s = schedule(prompt(800))
    first = [RtpPacket.parse(p) for p in s.pop_due(START + 0.035)]
    assert len(first) == 4
    rest = drain(s)
    assert [p.seq for p in first + rest] == [(first[0].seq + k) & 0xFFFF for k in range(10)]
    assert s.finished


def test_open_prompt_takes_the_first_existing_file(tmp_path):
    name = str(tmp_path / "ringback")
    (tmp_path / "ringback.18").write_bytes(b"g729")
    (tmp_path / "ringback.0").write_bytes(b"pcmu")
    (tmp_path / "ringback.8").mkdir()  # exists but cannot be read as a file
    assert open_prompt(name, [8, 4, 18, 0]) == (18, b"g729")
    assert open_prompt(name, [0, 18]) == (0, b"pcmu")
    assert open_prompt(name, [8, 3]) is None
    assert open_prompt(str(tmp_path / "missing"), [0]) is None


def test_play_loop_sends_packets_over_udp_in_real_time():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    addr = rx.getsockname()
    received: list[tuple[float, bytes]] = []

    def receive() -> None:
        while True:
            data = rx.recv(2048)
            received.append((time.monotonic(), data))

    receiver = gevent.spawn(receive)
    try:
        s = PromptSchedule(prompt(400), 0, count=2)  # 10 packets, 100 ms
        began = time.monotonic()
        play_loop(s, lambda pkt: tx.sendto(pkt, addr))
        elapsed = time.monotonic() - began
        gevent.sleep(0.05)
    finally:
        receiver.kill()
        rx.close()
        tx.close()

    assert s.finished
    assert 0.085 <= elapsed < 1.0
    packets = [RtpPacket.parse(d) for _, d in received]
    assert len(packets) == 10
    assert [p.seq for p in packets] == [(s.seq0 + k) & 0xFFFF for k in range(10)]
    assert b"".join(p.payload for p in packets) == prompt(400) * 2
    spread = received[-1][0] - received[0][0]
    assert 0.08 <= spread < 1.0


def test_play_loop_survives_send_errors():
    calls = []

    def send(pkt: bytes) -> None:
        calls.append(pkt)
        raise OSError("no route")

    s = PromptSchedule(prompt(160), 0, ptime_ms=1)
    play_loop(s, send)
    assert len(calls) == 20
    assert s.finished


def test_player_completes_and_counts():
    sent: list[bytes] = []
    done: list[Player] = []
    player = Player(PromptSchedule(prompt(240), 0), sent.append, on_complete=done.append)
    player.start()
    assert player.finished.wait(timeout=2.0)
    assert player.completed
    assert player.npkts_played == 3 == len(sent)
    assert done == [player]
    assert not player.running


def test_player_stop_ends_an_endless_prompt():
    sent: list[bytes] = []
    done: list[Player] = []
    player = Player(PromptSchedule(prompt(80), 0, count=-1), sent.append, on_complete=done.append)
    player.start()
    gevent.sleep(0.05)
    assert player.running
    player.stop()
    assert player.finished.is_set()
    assert not player.completed
    count = player.npkts_played
    assert count >= 1 and count == len(sent)
    gevent.sleep(0.03)
    assert len(sent) == count
    assert done == []
    player.stop()  # idempotent


def test_player_can_be_stopped_from_its_own_send_callback():
    sent: list[bytes] = []

    def send(pkt: bytes) -> None:
        sent.append(pkt)
        if len(sent) == 3:
            player.stop()

    player = Player(PromptSchedule(prompt(80), 0, ptime_ms=1, count=-1), send)
    player.start()
    assert player.finished.wait(timeout=1.0)
    gevent.sleep(0.02)
    assert len(sent) == 3
    assert player.npkts_played == 3
    assert not player.completed


def test_player_for_unsupported_codec_stays_silent_until_stopped():
    sent: list[bytes] = []
    player = Player(PromptSchedule(prompt(800), 96), sent.append)
    player.start()
    gevent.sleep(0.02)
    assert player.running
    player.stop()
    assert sent == []
    assert player.finished.is_set()


def test_player_stopped_on_its_last_packet_is_not_completed():
    done: list[Player] = []

    def send(pkt: bytes) -> None:
        player.stop()

    player = Player(PromptSchedule(prompt(80), 0), send, on_complete=done.append)
    player.start()
    assert player.finished.wait(timeout=1.0)
    gevent.sleep(0.01)
    assert not player.completed
    assert done == []


def test_player_stopped_before_start_never_runs():
    sent: list[bytes] = []
    player = Player(PromptSchedule(prompt(800), 0), sent.append)
    player.stop()
    player.start()
    gevent.sleep(0.03)
    assert sent == []
    assert player.finished.is_set()


def test_player_crash_in_send_is_logged_and_ends_playback(caplog):
    def send(pkt: bytes) -> None:
        raise RuntimeError("boom")

    player = Player(PromptSchedule(prompt(800), 0), send)
    player.start()
    assert player.finished.wait(timeout=1.0)
    assert not player.completed
    assert "player failed" in caplog.text
