"""Latching: who may send media into a leg (README "Latching", rules 1-5).

Both sides of a leg's remote address live here: what a command says (the
controller side, `command_remote`) and what packets may change (the packet side,
`judge_packet`, `learn`). Nothing here touches a socket or a clock; the functions
read and write a stream's latch fields only, and the stream's methods
(media/session.py) recompute its route afterwards.

The rules, as the packet side applies them:

1. a leg with no address yet takes the source of its first packet;
2. a leg whose address came from a command moves, once, to the first packet's source;
3. a latched leg drops other sources, unless a command changed its address in the
   last UPDATE_WINDOW_S, or (RTP only) the packet continues the stream's own SSRC
   within RELATCH_SEQ_RANGE sequence numbers;
4. with --strict-source packets never move a latched leg;
5. an asymmetric leg never learns: it accepts only its signalled host.
"""

from __future__ import annotations

import socket
from enum import Enum
from typing import Protocol

from rtpp.media.analyzer import RtpAnalyzer
from rtpp.media.rtp import HEADER, RTP_HEADER_LENGTH, RTP_VERSION

Address = tuple  # (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6


class Leg(Protocol):
    """A leg's latch state: the fields of media.session.Stream read and written here."""

    is_rtp: bool
    analyzer: RtpAnalyzer | None
    remote: Address | None
    latched: bool
    learned: bool  # remote came from packets: commands never override it
    asymmetric: bool
    on_hold: bool
    cmd_remote: Address | None  # the last address a command supplied
    cmd_changed_at: float  # monotonic time a command last changed the address
    seq_skew: int  # packets of the party relayed unseen (by the kernel) since the last


#: A command that changed a leg's address lets a new source take the leg over for this long.
UPDATE_WINDOW_S = 10.0
#: How far a packet's sequence number may be from the last one seen to move a latch.
RELATCH_SEQ_RANGE = 536


class Verdict(Enum):
    """What a packet from a given source does to the leg it arrives on."""

    ACCEPT = ""  # the leg's party, nothing changes
    CONFIRM = "confirmed"  # the signalled address sent: now latched (rule 2)
    LATCH = "latched to"  # rule 1
    MOVE = "moved to"  # rule 2
    RELATCH = "re-latched to"  # rule 3
    DROP = "dropped"

    @property
    def moves(self) -> bool:
        return self in (Verdict.LATCH, Verdict.MOVE, Verdict.RELATCH)


def make_address(family: int, host: str, port: int) -> Address:
    """The address tuple in the exact shape recvfrom() returns, so `==` compares sources."""
    if family == socket.AF_INET6:
        # recvfrom() carries the zone only as the scope id, never in the host text.
        addr, _, scope = host.partition("%")
        text = socket.inet_ntop(family, socket.inet_pton(family, addr))
        return (text, port, 0, _scope_id(scope))
    return (host, port)


def _scope_id(scope: str) -> int:
    """The interface index of an IPv6 zone (`fe80::1%eth0`, `%2`); 0 when absent or gone."""
    if scope.isdigit():
        return int(scope)
    try:
        return socket.if_nametoindex(scope) if scope else 0
    except OSError:
        return 0


# The controller side.


def command_remote(
    rtp: Leg, rtcp: Leg, host: str, port: int, family: int, hold: bool, now: float
) -> None:
    """A U/L names the leg's party `host port` (RTCP at port + 1; 0.0.0.0 puts it on hold)."""
    if hold:
        rtp.on_hold = rtcp.on_hold = True
        return
    set_by_command(rtp, make_address(family, host, port), now)
    if port < 65535:
        set_by_command(rtcp, make_address(family, host, port + 1), now)


def set_by_command(st: Leg, addr: Address, now: float) -> None:
    st.on_hold = False
    if moves_leg(st, addr):
        st.cmd_changed_at = now
    st.cmd_remote = addr
    if st.learned or st.remote == addr:
        return  # an address learned from packets is never overridden by a command
    st.remote = addr
    st.latched = False


def moves_leg(st: Leg, addr: Address) -> bool:
    """True if `addr` is news for a leg that already has an address (a re-INVITE moving
    it): only then may a new source re-latch the leg for a while (rule 3)."""
    return addr != st.cmd_remote and st.remote is not None and addr != st.remote


# The packet side.


def judge_packet(st: Leg, data, n: int, src: Address, now: float, strict: bool) -> Verdict:
    """What a packet (`n` bytes of `data`) from `src`, arriving at `now`, does to leg `st`."""
    remote = st.remote
    if remote is None:
        return Verdict.LATCH
    if src == remote:
        return Verdict.ACCEPT if st.latched else Verdict.CONFIRM
    if st.asymmetric:
        return Verdict.ACCEPT if src[0] == remote[0] else Verdict.DROP
    if not st.latched:
        return Verdict.MOVE
    if strict or not may_relatch(st, data, n, now):
        return Verdict.DROP
    return Verdict.RELATCH


def may_relatch(st: Leg, data, n: int, now: float) -> bool:
    """A latched RTP leg moves only after a changed command address or for its own SSRC."""
    if not st.is_rtp or n < RTP_HEADER_LENGTH:
        return False
    b0, _, seq, _, ssrc = HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        return False
    an = st.analyzer
    if an is None or an.last_ssrc is None:
        return False
    if now - st.cmd_changed_at < UPDATE_WINDOW_S:
        return True
    if ssrc != an.last_ssrc or an.last_seq is None:
        return False
    # Packets the kernel relayed moved the party's sequence on without the analyzer.
    dist = (seq - an.last_seq - st.seq_skew) & 0xFFFF
    return min(dist, 0x10000 - dist) <= RELATCH_SEQ_RANGE


def learn(st: Leg, src: Address, rtcp: Leg | None) -> None:
    """Latch `st` to `src`; for an RTP leg, point its RTCP leg `rtcp` at port + 1."""
    st.remote = src
    st.latched = True
    st.learned = True
    if rtcp is not None:
        guess_rtcp(rtcp, src)


def guess_rtcp(rtcp: Leg, src: Address) -> None:
    """After an RTP source is learned, the RTCP leg expects port+1 of the same host."""
    port = src[1]
    if port >= 65535 or rtcp.learned:
        return
    if rtcp.remote is not None and rtcp.remote[0] == src[0]:
        return
    rtcp.remote = (src[0], port + 1, *src[2:])
