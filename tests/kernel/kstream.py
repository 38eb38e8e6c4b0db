"""Both phones of a KCall sending and counting at once, from threads: what the relay
passes while something else happens (a live handoff)."""

from __future__ import annotations

import socket
import struct
import threading
import time

from integration.media_util import rtp
from kernel.kcall import SSRC_A, SSRC_B, KCall


class Streams:
    """A sends to B and B to A every `interval_s`; each phone notes the sequence
    numbers it gets. Starts after the call's own packets (its seq_a, seq_b)."""

    def __init__(self, call: KCall, interval_s: float = 0.01) -> None:
        self.call = call
        self.interval_s = interval_s
        self.sent = {"a": 0, "b": 0}
        self.got: dict[str, list[int]] = {"a": [], "b": []}
        self._stop = threading.Event()
        self._done = threading.Event()
        for client in (call.a, call.b):
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._recv, args=("a", call.a.sock), daemon=True),
            threading.Thread(target=self._recv, args=("b", call.b.sock), daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, settle_s: float = 0.5) -> None:
        self._stop.set()
        self._threads[0].join()
        time.sleep(settle_s)
        self._done.set()
        for thread in self._threads[1:]:
            thread.join()

    def _send(self) -> None:
        call = self.call
        while not self._stop.is_set():
            for side, seq, ssrc, sock, dst in (
                ("a", call.seq_a, SSRC_A, call.a.sock, call.to_b),
                ("b", call.seq_b, SSRC_B, call.b.sock, call.to_a),
            ):
                sock.sendto(rtp(seq, seq * 160, ssrc, b"\xd5" * 160), dst)
                self.sent[side] += 1
            call.seq_a += 1
            call.seq_b += 1
            time.sleep(self.interval_s)

    def _recv(self, side: str, sock: socket.socket) -> None:
        sock.settimeout(0.1)
        while not self._done.is_set():
            try:
                data = sock.recv(2048)
            except TimeoutError:
                continue
            self.got[side].append(struct.unpack("!H", data[2:4])[0])

    def received_in_full(self, first_a: int, first_b: int) -> None:
        """B got every packet A sent from `first_a` on exactly once, A every one of B's."""
        assert sorted(self.got["b"]) == list(range(first_a, first_a + self.sent["a"]))
        assert sorted(self.got["a"]) == list(range(first_b, first_b + self.sent["b"]))
