"""A stream's route, decided in this one place from the stream's state alone.

PLAIN: both ends are known and the source is latched, and nothing needs the packets
in user space: no recorder, copy or resizer on the stream, no prompt playing to the
party it sends to, the session complete and not relaying everything the long way
(-2). A plain stream's packets only need forwarding; the media context's driver
serves that (drivers.py: the user-space fast path).
FULL: everything else; every packet goes through relay.slow_packet.
KERNEL: with --kernel-offload, the streams of an RTP pipe that the kernel forwards
(kernel_driver.py): the pipe's two streams are `offloadable`, the same conditions as
PLAIN except that an asymmetric leg counts as known once the controller gave its
address. Set by that driver after `decide`; what still reaches the socket (a
stranger, the moment of a change) is served as `decide` said.

`Session._reroute` is the only caller: every change of the state read here goes
through a method of the stream or session that ends in it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Protocol


class Route(IntEnum):
    FULL = 0
    PLAIN = 1
    KERNEL = 2


class SessionState(Protocol):
    allow_fast: bool
    complete: bool
    deleted: bool

    def streams(self) -> tuple[StreamState, ...]: ...


class StreamState(Protocol):
    """What the decision reads of a stream (media.session.Stream)."""

    session: SessionState
    peer: StreamState
    is_rtp: bool
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

    def refresh(self, sess: Any = None) -> None:
        """Bring the streams' counts of packets relayed outside the process up to date
        (all sessions, or at least `sess`)."""

    def close(self) -> None:
        """Release what the driver holds (after every stream is closed)."""

    def pause(self) -> None:
        """Stop reading every socket: what arrives waits in the kernel (live handoff)."""

    def resume(self) -> None:
        """Read again after `pause`."""


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


def offloadable(st: StreamState) -> bool:
    """Whether the kernel may carry what `st` receives (an RTP pipe goes to the kernel
    when both of its streams are): both ends known, latched or fixed by the controller
    on an asymmetric leg, and nothing that needs the packets in user space on either
    stream of the pipe."""
    sess = st.session
    peer = st.peer
    return (
        st.is_rtp
        and sess.allow_fast
        and sess.complete
        and not sess.deleted
        and (st.latched or st.asymmetric)
        and st.remote is not None
        and st.sock is not None
        and peer.sock is not None
        and st.player is None
        and peer.player is None
        and st.recorder is None
        and st.copier is None
        and st.resizer is None
    )
