"""I: the heartbeat status lines Sippy parses (PROTOCOL.md §4.12)."""

from __future__ import annotations

from rtpp.commands.command import Info
from rtpp.commands.context import Context
from rtpp.commands.errors import ECode
from rtpp.commands.reply import Reply, require_fit
from rtpp.stats import BY_NAME


def handle(cmd: Info, ctx: Context) -> Reply:
    values = ctx.counters.values
    media = ctx.media
    media.sync_kernel()  # what the kernel relayed, read now
    rcvd = values["npkts_rcvd"] + media.live_sum(BY_NAME["npkts_rcvd"])
    relayed = values["npkts_relayed"] + media.live_sum(BY_NAME["npkts_relayed"])
    sent = relayed + values["npkts_played"]
    lines = [
        f"sessions created: {values['nsess_created']}",
        f"active sessions: {values['nsess_created'] - values['nsess_destroyed']}",
        f"active streams: {2 * ctx.sessions.count}",
        f"packets received: {rcvd}",
        f"packets transmitted: {sent}",
    ]
    if cmd.load:
        lines.append(f"average load: {0.0:f}")
    return require_fit("\n".join(lines), ECode.NOMEM_6, ctx.peer.overhead)
