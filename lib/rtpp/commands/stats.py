"""G: global statistics by name (PROTOCOL.md §4.11, §10.1)."""

from __future__ import annotations

from rtpp.commands.command import Stats
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.reply import require_fit
from rtpp.stats import RECORD_STAT_NAMES, STAT_NAMES, format_stat

#: Counters kept per live stream and folded in when the stream ends.
LIVE_STATS = frozenset(
    {
        "npkts_rcvd",
        "npkts_relayed",
        "npkts_resizer_in",
        "npkts_resizer_out",
        "npkts_resizer_discard",
        "rtpa_nsent",
        "rtpa_nrcvd",
        "rtpa_ndups",
        "rtpa_nlost",
        "rtpa_perrs",
    }
)


def stat_value(app, name: str):
    if name in RECORD_STAT_NAMES:
        return getattr(app.media.recording.counters, name)
    value = app.counters.values[name]
    if name in LIVE_STATS:
        value += app.media.live_sum(name)
    return value


def handle(cmd: Stats, app, peer) -> str:
    app.media.sync_kernel()
    parts = []
    for name in cmd.names:
        if name not in STAT_NAMES:
            raise CommandError(ECode.STSFAIL)
        text = format_stat(name, stat_value(app, name))
        parts.append(f"{name}={text}" if cmd.verbose else text)
    return require_fit(" ".join(parts), ECode.RTOOBIG_1, peer.overhead)
