"""Media port pairs inside [-m, -M]: RTP on an even port, RTCP on the next one."""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass

from rtpp.media.errors import PortsExhausted

RCVBUF_BYTES = 256 * 1024
#: bind() errors that mean "this port is taken, try the next one".
BUSY_ERRNOS = frozenset({errno.EADDRINUSE, errno.EACCES})


@dataclass(slots=True)
class SocketPair:
    port: int
    rtp: socket.socket
    rtcp: socket.socket

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


def open_media_socket(family: int, host: str, port: int, tos: int) -> socket.socket:
    """A non-blocking UDP socket bound to host:port; raises OSError on failure."""
    # The plain C socket type: the relay drives it from an I/O watcher, not gevent's
    # cooperative wrapper.
    sock = socket._socket.socket(family, socket.SOCK_DGRAM)  # type: ignore[attr-defined]
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        if family == socket.AF_INET and tos:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class PortAllocator:
    """Hands out even RTP ports of one address family, round-robin over a table that is
    shuffled at start and reshuffled as it is used (sequential with `-b`).

    A just-released port is not reused at once: allocation continues after the last
    port handed out. Unlike the classic table walk (at most N-1 candidates), every pair
    is tried, so a range holding one free pair still yields it.
    """

    def __init__(
        self,
        port_min: int,
        port_max: int,
        sequential: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.ports = list(range(port_min, port_max + 1, 2))
        self.rng = None if sequential else (rng or random.SystemRandom())
        if self.rng is not None:
            self.rng.shuffle(self.ports)
        self.next_index = 0
        self.in_use: set[int] = set()

    @property
    def size(self) -> int:
        return len(self.ports)

    def allocate(self, bind: Callable[[int], SocketPair]) -> SocketPair:
        """Bind the next free pair with `bind(port)`; BUSY errors move on, others raise."""
        count = len(self.ports)
        for step in range(count):
            index = (self.next_index + step) % count
            port = self.ports[index]
            if port in self.in_use:
                continue
            try:
                pair = bind(port)
            except OSError as exc:
                if exc.errno in BUSY_ERRNOS:
                    continue
                raise
            self.next_index = (index + 1) % count
            self.in_use.add(port)
            self._reshuffle(index)
            return pair
        raise PortsExhausted

    def _reshuffle(self, index: int) -> None:
        """Move the port just handed out to a random place in the second half of the
        coming lap, so the order keeps changing yet a released port is not soon reused."""
        count = len(self.ports)
        if self.rng is None or count < 4:
            return
        half = count // 2
        other = (self.next_index + half + self.rng.randrange(count - half)) % count
        if other != index:
            ports = self.ports
            ports[index], ports[other] = ports[other], ports[index]

    def release(self, port: int) -> None:
        self.in_use.discard(port)


def bind_pair(family: int, host: str, tos: int) -> Callable[[int], SocketPair]:
    def bind(port: int) -> SocketPair:
        rtp = open_media_socket(family, host, port, tos)
        try:
            rtcp = open_media_socket(family, host, port + 1, tos)
        except BaseException:
            rtp.close()
            raise
        return SocketPair(port, rtp, rtcp)

    return bind
