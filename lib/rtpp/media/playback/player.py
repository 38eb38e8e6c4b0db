"""Prompt player (``P`` command): a pure packet schedule and its pacing greenlet.

``PromptSchedule`` answers "which packets are due at time t" (the classic
``rtp_server.c``); ``play_loop`` sleeps until the next absolute deadline and
sends what is due, so there is no long-term drift; ``Player`` wraps that loop
in a greenlet with ``start``/``stop`` and a ``finished`` event.

Prompt files are raw codec payload (what ``makeann`` writes), one file per
payload type: ``<name>.<pt>``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import gevent
from gevent.event import Event

from rtpp.media.rtp import HEADER, RTP_VERSION
from rtpp.spawn import spawn_logged

log = logging.getLogger(__name__)

DEFAULT_PTIME_MS = 10
#: RTP timestamp units per millisecond (8 kHz clock for every prompt codec).
TS_PER_MS = 8
#: Sleep used while a player can never send anything (unsupported codec).
IDLE_SLEEP_S = 3600.0


@dataclass(frozen=True, slots=True)
class PromptCodec:
    frame_bytes: int
    frame_ms: int


#: Playback codecs by payload type (PCMU, PCMA, G.722, G.729, G.723.1 6.3k, GSM).
PLAYER_CODECS: dict[int, PromptCodec] = {
    0: PromptCodec(8, 1),
    8: PromptCodec(8, 1),
    9: PromptCodec(8, 1),
    18: PromptCodec(10, 10),
    4: PromptCodec(24, 30),
    3: PromptCodec(33, 20),
}

Send = Callable[[bytes], None]
Clock = Callable[[], float]


class PromptSchedule:
    """Packets of a prompt and when each is due; never touches a clock.

    Packet ``k`` (counting across loops) is due at ``start_s + k * duration``,
    carries sequence number ``seq0 + k`` and timestamp ``ts0 + k * 8 *
    duration_ms``; only packet 0 has the marker bit. ``count`` > 0 plays the
    prompt that many times, a negative count loops forever, 0 plays nothing.
    A trailing partial packet of the prompt is never sent. An unsupported
    payload type never produces a packet and never finishes (as the classic
    player does).
    """

    def __init__(
        self,
        prompt: bytes,
        payload_type: int,
        ptime_ms: int = DEFAULT_PTIME_MS,
        count: int = 1,
        rng: random.Random | None = None,
    ) -> None:
        rng = rng if rng is not None else random.Random()
        self.prompt = prompt
        self.payload_type = payload_type
        self.count = count
        self.ssrc = rng.getrandbits(32)
        self.seq0 = rng.getrandbits(16)
        self.ts0 = rng.getrandbits(32)
        self.start_s: float | None = None
        #: Index of the next packet to hand out.
        self.next_index = 0

        codec = PLAYER_CODECS.get(payload_type)
        if ptime_ms <= 0:
            ptime_ms = DEFAULT_PTIME_MS
        if codec is None:
            self.packet_bytes = self.duration_ms = self.packets_per_loop = 0
            self.total: int | None = None
            return
        frames = math.ceil(ptime_ms / codec.frame_ms)
        self.packet_bytes = frames * codec.frame_bytes
        self.duration_ms = frames * codec.frame_ms
        self.packets_per_loop = len(prompt) // self.packet_bytes
        if count < 0 and self.packets_per_loop:
            self.total = None  # forever
        else:
            # A prompt shorter than one packet ends at once, even when looping.
            self.total = self.packets_per_loop * max(count, 0)

    @property
    def supported(self) -> bool:
        return self.payload_type in PLAYER_CODECS

    @property
    def finished(self) -> bool:
        return self.total is not None and self.next_index >= self.total

    def start(self, now_s: float) -> None:
        """Start the clock: packet 0 is due at ``now_s``."""
        self.start_s = now_s

    def due_time(self, index: int) -> float:
        if self.start_s is None:
            raise RuntimeError("schedule not started")
        return self.start_s + index * self.duration_ms / 1000.0

    def next_deadline(self) -> float | None:
        """When the next packet is due; None if finished, unsupported or not started."""
        if self.finished or not self.supported or self.start_s is None:
            return None
        return self.due_time(self.next_index)

    def packet(self, index: int) -> bytes:
        """RTP packet number ``index`` (no bounds check against the count)."""
        offset = (index % self.packets_per_loop) * self.packet_bytes
        b1 = self.payload_type | (0x80 if index == 0 else 0)
        header = HEADER.pack(
            RTP_VERSION << 6,
            b1,
            (self.seq0 + index) & 0xFFFF,
            (self.ts0 + index * TS_PER_MS * self.duration_ms) & 0xFFFFFFFF,
            self.ssrc,
        )
        return header + self.prompt[offset : offset + self.packet_bytes]

    def pop_due(self, now_s: float) -> list[bytes]:
        """Every packet due at or before ``now_s`` not handed out yet, in order."""
        due: list[bytes] = []
        if not self.supported or self.start_s is None:
            return due
        while not self.finished and self.due_time(self.next_index) <= now_s:
            due.append(self.packet(self.next_index))
            self.next_index += 1
        return due


def open_prompt(name: str, codecs: Iterable[int]) -> tuple[int, bytes] | None:
    """Read ``<name>.<pt>`` for the first payload type whose file can be read."""
    for pt in codecs:
        try:
            with open(f"{name}.{pt}", "rb") as f:
                return pt, f.read()
        except OSError:
            continue
    return None


def play_loop(
    schedule: PromptSchedule,
    send: Send,
    clock: Clock = time.monotonic,
) -> None:
    """Pace ``schedule`` in real time until it finishes (or forever, if it never does).

    Starts the schedule's clock if it has not been started. A failing send is
    logged and the packet dropped; playback goes on.
    """
    if schedule.start_s is None:
        schedule.start(clock())
    while True:
        for packet in schedule.pop_due(clock()):
            try:
                send(packet)
            except OSError as exc:
                log.debug("player send failed: %s", exc)
        if schedule.finished:
            return
        deadline = schedule.next_deadline()
        if deadline is None:
            gevent.sleep(IDLE_SLEEP_S)
        else:
            gevent.sleep(max(0.0, deadline - clock()))


class Player:
    """A schedule played by its own greenlet.

    ``finished`` is set when playback ends for any reason; ``completed`` tells
    whether the count was exhausted (as opposed to ``stop()``). ``on_complete``
    runs in the player's greenlet after the last packet, never after ``stop()``.
    """

    def __init__(
        self,
        schedule: PromptSchedule,
        send: Send,
        clock: Clock = time.monotonic,
        on_complete: Callable[[Player], None] | None = None,
    ) -> None:
        self.schedule = schedule
        self.npkts_played = 0
        self.completed = False
        self.finished = Event()
        self._send = send
        self._clock = clock
        self._on_complete = on_complete
        self._stop_requested = False
        self._greenlet: gevent.Greenlet | None = None

    @property
    def running(self) -> bool:
        return self._greenlet is not None and not self.finished.is_set()

    def start(self) -> None:
        if self._greenlet is not None:
            raise RuntimeError("player already started")
        if self._stop_requested:
            return
        self._greenlet = spawn_logged(self._run, name="play_loop")

    def pause(self) -> None:
        """End the playing greenlet, keeping the schedule (a live handoff goes on with
        it, or `resume` does)."""
        greenlet = self._greenlet
        if greenlet is not None and not greenlet.dead:
            greenlet.kill(block=True)

    def resume(self) -> None:
        """Play on after `pause`: what fell due meanwhile is sent at once."""
        greenlet = self._greenlet
        if greenlet is not None and greenlet.dead and not self._stop_requested:
            self._greenlet = None
            self.finished = Event()
            self.start()

    def stop(self) -> None:
        """Stop playback; safe to call more than once and from any greenlet."""
        self._stop_requested = True
        greenlet = self._greenlet
        if greenlet is not None:
            # From inside the player (a send or completion callback) the kill
            # lands at its next switch; nothing more is sent meanwhile.
            greenlet.kill(block=greenlet is not gevent.getcurrent())
        self.finished.set()

    def _send_one(self, packet: bytes) -> None:
        if self._stop_requested:
            return
        self._send(packet)
        self.npkts_played += 1

    def _run(self) -> None:
        try:
            play_loop(self.schedule, self._send_one, self._clock)
            self.completed = not self._stop_requested
        except Exception:
            log.exception("player failed")
        finally:
            self.finished.set()
        if self.completed and self._on_complete is not None:
            self._on_complete(self)
