"""X: destroy every session, without timeout notifications (PROTOCOL.md §4.13)."""

from __future__ import annotations

from rtpp.commands.command import DeleteAll
from rtpp.commands.context import Context
from rtpp.commands.reply import Reply


def handle(cmd: DeleteAll, ctx: Context) -> Reply:
    ctx.media.destroy_all("delete")
    return "0"
