"""Attaching prompt players to streams (P and S; OPERATIONS.md §4)."""

from __future__ import annotations

import logging

import gevent

from rtpp.media.playback.player import Player, PromptSchedule
from rtpp.media.session import Stream
from rtpp.spawn import spawn_logged
from rtpp.stats import Counters

log = logging.getLogger(__name__)

#: How often a player waiting for its party's address looks again.
ADDRESS_POLL_S = 0.05
SMALL_PACKET_BYTES = 128


class Players:
    def __init__(self, counters: Counters, dup_small: bool) -> None:
        self.counters = counters
        self.dup_small = dup_small

    def start(self, st: Stream, schedule: PromptSchedule, new: bool = True) -> None:
        """Play `schedule` to the party `st` faces, from `st`'s own socket.

        `new=False`: a player handed over by a live handoff goes on (not counted again).
        """
        self.stop(st)
        player = Player(schedule, lambda pkt: self._send(st, pkt), on_complete=self._finished(st))
        st.set_player(player)
        if new:
            self.counters.incr("nplrs_created")
        spawn_logged(self._start_when_addressed, st, player, name="start_when_addressed")

    def stop(self, st: Stream) -> bool:
        player = st.player
        if player is None:
            return False
        st.set_player(None)
        player.stop()
        self.counters.incr("nplrs_destroyed")
        log.info("stopping player at port %d", st.port, extra=st.session.log_ctx)
        return True

    def _start_when_addressed(self, st: Stream, player: Player) -> None:
        while st.player is player and (st.remote is None or st.sock is None):
            gevent.sleep(ADDRESS_POLL_S)
        if st.player is player:
            player.start()

    def _send(self, st: Stream, packet: bytes) -> None:
        if st.sock is None or st.remote is None:
            return
        st.sock.sendto(packet, st.remote)
        if self.dup_small and len(packet) < SMALL_PACKET_BYTES:
            st.sock.sendto(packet, st.remote)
        self.counters.values["npkts_played"] += 1

    def _finished(self, st: Stream):
        def on_complete(player: Player) -> None:
            if st.player is not player:
                return
            st.set_player(None)
            self.counters.incr("nplrs_destroyed")
            log.info("player at port %d has finished", st.port, extra=st.session.log_ctx)

        return on_complete
