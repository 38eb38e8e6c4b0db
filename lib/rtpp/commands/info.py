"""I: the heartbeat status lines Sippy parses (PROTOCOL.md §4.12)."""

from __future__ import annotations

from rtpp.commands.command import Info
from rtpp.commands.errors import ECode
from rtpp.commands.reply import require_fit


def handle(cmd: Info, app, peer) -> str:
    values = app.counters.values
    media = app.media
    media.sync_kernel()
    rcvd = values["npkts_rcvd"] + media.live_sum("npkts_rcvd")
    sent = values["npkts_relayed"] + media.live_sum("npkts_relayed") + values["npkts_played"]
    lines = [
        f"sessions created: {values['nsess_created']}",
        f"active sessions: {values['nsess_created'] - values['nsess_destroyed']}",
        f"active streams: {2 * app.sessions.count}",
        f"packets received: {rcvd}",
        f"packets transmitted: {sent}",
    ]
    if cmd.load:
        lines.append(f"average load: {0.0:f}")
    return require_fit("\n".join(lines), ECode.NOMEM_6, peer.overhead)
