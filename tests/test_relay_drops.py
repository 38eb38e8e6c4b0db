"""Drops on the full relay path with a resizer attached (OPERATIONS.md §4.7, §5.5)."""

from __future__ import annotations

import struct

import pytest

from rtpp.media.housekeeping import leg_active
from rtpp.media.playback.resizer import Resizer
from rtpp.media.relay import RelayContext, slow_packet
from rtpp.media.session import Session, Stream
from rtpp.stats import Counters

NOW = 1000.0
CALLER = ("192.0.2.10", 4000)


def rtp(seq: int, ts: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, ts, 0x5EED) + b"\xd5" * 160


@pytest.fixture
def ctx() -> RelayContext:
    return RelayContext(Counters())


def caller_leg_resized_to_40ms() -> Stream:
    """The caller's RTP stream of a complete session, latched, with UZ40 applied."""
    sess = Session("call", "tag", 0.0, 0.0)
    sess.complete = True
    st = sess.rtp.streams[1]
    st.remote = CALLER
    st.latched = True
    st.resizer = Resizer(40)
    return st


def send_ten_20ms_packets(st: Stream, ctx: RelayContext) -> None:
    for i in range(10):
        data = rtp(100 + i, 160 * i)
        slow_packet(st, memoryview(data), len(data), CALLER, NOW + i * 0.02, ctx)


def test_player_drops_count_each_received_packet_before_the_resizer(ctx):
    st = caller_leg_resized_to_40ms()
    st.peer.player = object()  # a prompt plays toward the callee
    send_ten_20ms_packets(st, ctx)
    resizer = st.resizer
    assert (resizer.npkts_in, resizer.npkts_out, resizer.npkts_discard) == (0, 0, 0)
    assert len(resizer) == 0
    assert (st.npkts_in, st.ndropped, st.nplayer_drop, st.nrelayed) == (10, 10, 10, 0)
    assert ctx.counters.values["npkts_discard"] == 10
    # Dropped for the player: no activity for the session timer.
    assert not leg_active(st.session, st.index)


def test_resized_packets_without_a_destination_are_not_counted_as_out(ctx):
    st = caller_leg_resized_to_40ms()
    assert st.peer.remote is None  # the callee's address is not known
    send_ten_20ms_packets(st, ctx)
    resizer = st.resizer
    assert (resizer.npkts_in, resizer.npkts_out, resizer.npkts_discard) == (10, 0, 0)
    assert (st.npkts_in, st.ndropped, st.nplayer_drop, st.nrelayed) == (10, 5, 0, 0)
    assert ctx.counters.values["npkts_discard"] == 5
    # Received media still keeps the session alive.
    assert leg_active(st.session, st.index)
