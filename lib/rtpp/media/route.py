"""A stream's route, decided in this one place from the stream's state alone.

PLAIN: both ends are known and the source is latched, and nothing needs the packets
in user space: no recorder, copy or resizer on the stream, no prompt playing to the
party it sends to, the session complete and not relaying everything the long way
(-2). A plain stream's packets only need forwarding; the media context's driver
serves that (drivers.py: the user-space fast path; a kernel engine may take it over).
FULL: everything else; every packet goes through relay.slow_packet.

`Session._reroute` is the only caller: every change of the state read here goes
through a method of the stream or session that ends in it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Protocol


class Route(IntEnum):
    FULL = 0
    PLAIN = 1


class SessionState(Protocol):
    allow_fast: bool
    complete: bool
    deleted: bool

    def streams(self) -> tuple[StreamState, ...]: ...


class StreamState(Protocol):
    """What the decision reads of a stream (media.session.Stream)."""

    session: SessionState
    peer: StreamState
    route: Route
    latched: bool
    asymmetric: bool
    remote: tuple | None
    sock: Any
    player: Any
    recorder: Any
    copier: Any
    resizer: Any


class Driver(Protocol):
    """What serves the routes: the media context's driver (drivers.py), which reads the
    stream sockets too. A kernel engine serving PLAIN streams takes this place."""

    name: str

    def watch(self, st: Any) -> None:
        """Start reading the stream's socket."""

    def unwatch(self, st: Any) -> None:
        """Stop reading the stream's socket (the stream closes it)."""

    def apply_routes(self, sess: Any) -> None:
        """Serve each stream of `sess` by the `route` just decided for it."""

    def close(self) -> None:
        """Release what the driver holds (after every stream is closed)."""


def decide(st: StreamState) -> Route:
    """The route of the packets `st` receives (and sends on from its peer's socket)."""
    sess = st.session
    peer = st.peer
    plain = (
        sess.allow_fast
        and sess.complete
        and not sess.deleted
        and st.latched
        and st.remote is not None
        and not st.asymmetric
        and peer.sock is not None
        and peer.remote is not None
        and peer.player is None
        and st.recorder is None
        and st.copier is None
        and st.resizer is None
    )
    return Route.PLAIN if plain else Route.FULL
