"""N: stop recording the leg facing the matched tag's party, or both with `a` (§4.9)."""

from __future__ import annotations

from rtpp.commands.command import NoRecord
from rtpp.commands.context import Context
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.reply import Reply


def handle(cmd: NoRecord, ctx: Context) -> Reply:
    recording = ctx.media.recording
    stopped = False
    for sess, leg, _exact in ctx.sessions.find_prefix(cmd.call_id, cmd.from_tag, cmd.to_tag):
        legs = (leg, 1 - leg) if cmd.both else (leg,)
        for index in legs:
            stopped = recording.stop(sess, index) or stopped
    if not stopped:
        raise CommandError(ECode.SESUNKN)
    return "0"
