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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtpp.media.session import Stream


class Route(IntEnum):
    FULL = 0
    PLAIN = 1


def decide(st: Stream) -> Route:
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
