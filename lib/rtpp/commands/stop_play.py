"""S: stop the player facing the from-tag party (PROTOCOL.md §4.6)."""

from __future__ import annotations

from rtpp.commands.command import StopPlay
from rtpp.commands.context import Context
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.reply import Reply


def handle(cmd: StopPlay, ctx: Context) -> Reply:
    found = ctx.sessions.find_exact(cmd.call_id, cmd.from_tag, cmd.to_tag)
    if found is None:
        raise CommandError(ECode.SESUNKN)
    sess, leg = found
    ctx.media.players.stop(sess.rtp.streams[leg])
    return "0"
