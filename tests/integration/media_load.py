"""Many calls' RTP both ways from one thread: every packet sent and received counted.

Each endpoint sends one packet per tick (50 per second by default) with its own SSRC
and consecutive sequence numbers; what arrives is checked off per (endpoint, SSRC) in
a bitmap, so a packet that arrives twice is a duplicate and one that never arrives is
lost. One epoll set serves every socket.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from integration.media_util import rtp

PAYLOAD = b"\xd5" * 160
_HEAD = struct.Struct("!BBHII")


@dataclass(eq=False)
class Endpoint:
    sock: socket.socket
    ssrc: int
    dest: tuple | None = None  # where it sends (the proxy port of the other leg)
    nsent: int = 0
    sending: bool = True
    #: per sender SSRC: (bitmap of sequence numbers, packets, duplicates, first seq)
    got: dict = field(default_factory=dict)

    def note(self, data: bytes) -> None:
        if len(data) < 12:
            return
        _, _, seq, _, ssrc = _HEAD.unpack_from(data)
        entry = self.got.get(ssrc)
        if entry is None:
            entry = self.got[ssrc] = [bytearray(8192), 0, 0, seq]
        bitmap = entry[0]
        byte, bit = seq >> 3, 1 << (seq & 7)
        if bitmap[byte] & bit:
            entry[2] += 1
        else:
            bitmap[byte] |= bit
            entry[1] += 1

    def received_from(self, ssrc: int) -> tuple[int, int]:
        """(unique packets, duplicates) from `ssrc`."""
        entry = self.got.get(ssrc)
        return (0, 0) if entry is None else (entry[1], entry[2])


class MediaLoad:
    """Sends from every endpoint each `interval_s` and receives everything, in a thread."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.endpoints: dict[int, Endpoint] = {}
        self.epoll = select.epoll()
        self._stop = threading.Event()
        self._sending = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def endpoint(self, ssrc: int) -> Endpoint:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        ep = Endpoint(sock, ssrc)
        self.endpoints[sock.fileno()] = ep
        self.epoll.register(sock.fileno(), select.EPOLLIN)
        return ep

    def start(self) -> None:
        self._sending.set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop_sending(self, settle_s: float = 1.0) -> None:
        """Stop sending, keep receiving for `settle_s`, then stop."""
        self._sending.clear()
        time.sleep(settle_s)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self._stop.set()
        for ep in self.endpoints.values():
            ep.sock.close()
        self.epoll.close()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by stop_sending
            self.error = exc

    def _loop(self) -> None:
        eps = list(self.endpoints.values())
        by_fd = self.endpoints
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if self._sending.is_set() and now >= next_tick:
                for ep in eps:
                    if ep.sending and ep.dest is not None:
                        seq = ep.nsent & 0xFFFF
                        try:
                            ep.sock.sendto(rtp(seq, seq * 160, ep.ssrc, PAYLOAD), ep.dest)
                            ep.nsent += 1
                        except BlockingIOError:
                            pass
                next_tick += self.interval_s
                if next_tick < now - 1.0:
                    next_tick = now  # fell far behind (a loaded machine): no burst
            wait = max(0.0, min(next_tick - time.monotonic(), 0.005))
            for fd, _ in self.epoll.poll(wait):
                ep = by_fd.get(fd)
                if ep is None:
                    continue
                while True:
                    try:
                        data = ep.sock.recv(2048)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    ep.note(data)
