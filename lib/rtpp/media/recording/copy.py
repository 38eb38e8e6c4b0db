"""Copies of a stream's packets sent elsewhere: to a remote listener (`C udp:host:port`)
or out of another session's stream (`U ... && C`). Both are sinks (media/sink.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RemoteCopy:
    """Sends every packet of a stream, unchanged, from its own socket to a remote listener."""

    def __init__(self, sock, dest: tuple, on_close: Callable[[], None] | None = None) -> None:
        self.sock = sock
        self.dest = dest
        self.nsent = 0
        self.nfailed = 0
        self.on_close = on_close  # called once, when the socket is closed

    def write(self, data, src, dst, arrival_wall_s: float) -> None:
        try:
            self.sock.sendto(data, self.dest)
            self.nsent += 1
        except OSError:
            self.nfailed += 1

    def release(self) -> None:
        self.sock.close()
        if self.on_close is not None:
            self.on_close()
            self.on_close = None

    close = release


class StreamMirror:
    """Forwards a copy of what one stream receives out of another session's stream."""

    def __init__(self, target: Any) -> None:
        self.target = target  # the media.session.Stream the copy leaves from

    def write(self, data, src, dst, arrival_wall_s: float) -> None:
        target = self.target
        if target is None or target.sock is None or target.remote is None:
            return
        try:
            target.sock.sendto(data, target.remote)
        except OSError:
            pass

    def release(self) -> None:
        self.target = None

    close = release
