"""Global statistics: the `G` names (copied verbatim from the classic) and their values."""

from __future__ import annotations

from dataclasses import dataclass

#: (name, description, is_float) in the classic order.
STATS: tuple[tuple[str, str, bool], ...] = (
    ("nsess_created", "Number of RTP sessions created", False),
    ("nsess_destroyed", "Number of RTP sessions destroyed", False),
    ("nsess_timeout", "Number of RTP sessions ended due to media timeout", False),
    ("nsess_complete", "Number of RTP sessions fully setup", False),
    ("nsess_nortp", "Number of sessions that had no RTP neither in nor out", False),
    ("nsess_owrtp", "Number of sessions that had one-way RTP only", False),
    ("nsess_nortcp", "Number of sessions that had no RTCP neither in nor out", False),
    ("nsess_owrtcp", "Number of sessions that had one-way RTCP only", False),
    ("nplrs_created", "Number of RTP players created", False),
    ("nplrs_destroyed", "Number of RTP players destroyed", False),
    ("npkts_rcvd", "Total number of RTP/RTPC packets received", False),
    ("npkts_played", "Total number of RTP packets originated by players", False),
    ("npkts_relayed", "Total number of RTP/RTPC packets relayed", False),
    ("npkts_resizer_in", "Total number of RTP packets entering resizer", False),
    ("npkts_resizer_out", "Total number of RTP packets leaving resizer", False),
    ("npkts_resizer_discard", "Total number of RTP packets dropped by the resizer", False),
    ("npkts_discard", "Total number of RTP/RTPC packets discarded", False),
    ("total_duration", "Cumulative duration of all sessions", True),
    ("ncmds_rcvd", "Total number of control commands received", False),
    ("ncmds_rcvd_ndups", "Total number of duplicate control commands received", False),
    ("ncmds_succd", "Total number of control commands successfully processed", False),
    ("ncmds_errs", "Total number of control commands ended up with an error", False),
    ("ncmds_repld", "Total number of control commands that have a reply generated", False),
    ("rtpa_nsent", "Total number of uniqie RTP packets sent to us based on SEQ tracking", False),
    ("rtpa_nrcvd", "Total number of unique RTP packets received by us", False),
    ("rtpa_ndups", "Total number of duplicate RTP packets received by us", False),
    ("rtpa_nlost", "Total number of lost RTP packets based on SEQ tracking", False),
    ("rtpa_perrs", "Total number of RTP packets that failed to parse", False),
    ("pps_in", "Rate at which RTP/RTCP packets are received (packets per second)", True),
    # Faults: this implementation's additions.
    ("nsess_refused_ports", "Number of port pair requests refused: port range exhausted", False),
    ("nsess_refused_fds", "Number of port pair requests refused: too few descriptors", False),
    ("nsess_refused_overload", "Number of new sessions refused by overload protection", False),
    ("nnotify_failed", "Number of timeout notifications that could not be delivered", False),
    ("nnotify_dropped", "Number of timeout notifications dropped: target queue full", False),
)

#: This implementation's additions: recording health, read from the recording counters.
RECORD_STATS: tuple[tuple[str, str, bool], ...] = (
    ("nrec_errors", "Number of recording files that failed (open, write, move)", False),
    ("nrec_spool_copies", "Number of recordings copied out of a spool on another FS", False),
    ("nrec_pkts_dropped", "Number of packets not recorded: the disk did not keep up", False),
)

RECORD_STAT_NAMES = frozenset(name for name, _, _ in RECORD_STATS)
STAT_NAMES = frozenset(name for name, _, _ in STATS) | RECORD_STAT_NAMES
FLOAT_STATS = frozenset(name for name, _, is_float in STATS if is_float)


@dataclass(slots=True)
class Counters:
    """Process-wide counters that are not derived from live streams.

    Packet counters of live streams are kept on the streams themselves (no global
    increment per packet) and folded in here when a stream is destroyed; the
    `value()` of such a name adds the live part supplied by the caller.
    """

    values: dict

    def __init__(self) -> None:
        self.values = {name: (0.0 if is_float else 0) for name, _, is_float in STATS}

    def incr(self, name: str, n: int = 1) -> None:
        self.values[name] += n

    def __getitem__(self, name: str):
        return self.values[name]

    def __setitem__(self, name: str, value) -> None:
        self.values[name] = value


def format_stat(name: str, value) -> str:
    return f"{value:f}" if name in FLOAT_STATS else str(int(value))
