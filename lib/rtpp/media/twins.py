"""Connected twins (epoll driver): the kernel checks the latched source for us.

Once an RTP stream has latched, a second socket is bound to the same local address
and port and connected to the latched source. Linux delivers a datagram to the
connected socket that matches its source exactly, so that source's packets arrive
on the twin with the address check already done by the kernel (no source tuple to
build and compare), and the peer's twin sends without an address (no per-packet
address parsing or route lookup). Everything from any other source still arrives on
the stream's own socket and takes the checked path, so drops are counted and
re-latching works as before. SO_REUSEPORT is set only for the moment of the twin's
bind and cleared again, so no other socket can join the port.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Protocol

from rtpp.media.ports import RCVBUF_BYTES

if TYPE_CHECKING:
    from rtpp.media.fdbudget import FdBudget
    from rtpp.media.session import Session, Stream

log = logging.getLogger(__name__)


class TwinWatch(Protocol):
    """Where twins are read (the epoll driver)."""

    def add_twin(self, st: Stream) -> None: ...

    def remove_twin(self, st: Stream) -> None: ...


def _wants_twin(st: Stream) -> bool:
    sess = st.session
    return (
        sess.allow_fast
        and not sess.deleted
        and st.latched
        and st.remote is not None
        and not st.asymmetric
        and st.sock is not None
    )


def sync_twins(sess: Session, watch: TwinWatch, fds: FdBudget | None) -> None:
    """Give each latched RTP stream a twin connected to its source; route the fast path
    through the peer's twin when it is connected where the packets go."""
    for st in sess.rtp.streams:
        want = st.remote if _wants_twin(st) else None
        if st.twin_dst != want:
            drop_twin(st, watch, fds)
            if want is not None:
                _open_twin(st, want, watch, fds)
    for st in sess.rtp.streams:
        peer = st.peer
        fast = st.fast_src is not None and peer.twin is not None and peer.twin_dst == st.fwd_dst
        st.tfwd = peer.twin.send if fast else None


def _open_twin(st: Stream, dst: tuple, watch: TwinWatch, fds: FdBudget | None) -> None:
    if fds is not None and not fds.room_for(1):
        return
    sock = st.sock
    assert sock is not None
    twin = socket._socket.socket(sock.family, socket.SOCK_DGRAM)  # type: ignore[attr-defined]
    try:
        twin.setblocking(False)
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        if sock.family == socket.AF_INET6:
            twin.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        else:
            tos = sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)
            if tos:
                twin.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        # Both sockets share the port only for the moment of the bind: with the flag off
        # again on the first one, nobody else can join the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            twin.bind(sock.getsockname())
        finally:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
        twin.connect(dst)
    except OSError as exc:
        log.debug("no connected twin for port %d: %s", st.port, exc)
        twin.close()
        return
    st.twin = twin
    st.twin_dst = dst
    if fds is not None:
        fds.opened(1)
    watch.add_twin(st)


def drop_twin(st: Stream, watch: TwinWatch, fds: FdBudget | None) -> None:
    twin = st.twin
    if twin is None:
        return
    watch.remove_twin(st)
    twin.close()
    st.twin = None
    st.twin_dst = None
    st.tfwd = None
    if fds is not None:
        fds.closed(1)
