"""What a stream hands its accepted packets to besides the other party: recorders and
copies (media/recording/). A stream holds at most one recorder and one copier."""

from __future__ import annotations

from typing import Protocol


class Sink(Protocol):
    def write(self, data, src: tuple, dst: tuple, arrival_wall_s: float) -> None:
        """Take one packet `src` -> `dst` (dst: the stream's local address); never raise
        for a packet the sink cannot take: count or log it."""

    def release(self) -> None:
        """The stream lets go of the sink (detached, replaced or the session ended)."""


def is_live(sink: Sink) -> bool:
    """False for a recorder that stopped on an error (it is kept only to be replaced)."""
    return getattr(sink, "active", True)
