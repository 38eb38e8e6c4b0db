"""R: record the leg(s) facing the matched tag's party (PROTOCOL.md §4.7, OPERATIONS.md §3)."""

from __future__ import annotations

from rtpp.commands.command import Record
from rtpp.commands.context import Context
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.reply import Reply


def handle(cmd: Record, ctx: Context) -> Reply:
    recording = ctx.media.recording
    started = False
    for sess, leg, _exact in ctx.sessions.find_prefix(cmd.call_id, cmd.from_tag, cmd.to_tag):
        if recording.start(sess, leg, cmd.single_file):
            started = True
    if not started:
        raise CommandError(ECode.SESUNKN)
    return "0"
