"""D: delete sessions by the prefix rule, honouring weak/strong flags (PROTOCOL.md §4.4, §7.6)."""

from __future__ import annotations

from rtpp.commands.command import Delete
from rtpp.commands.context import Context
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.reply import Reply
from rtpp.media.session import Session


def delete_one(sess: Session, leg: int, weak: bool, ctx: Context) -> None:
    """Clear the strong flag (or leg `leg`'s weak flag); destroy when no flag is left."""
    if weak:
        sess.rtp.streams[leg].weak = False
    else:
        sess.strong = False
    if not sess.strong and not sess.weak:
        ctx.media.destroy(sess, "delete")


def handle(cmd: Delete, ctx: Context) -> Reply:
    matches = ctx.sessions.find_prefix(cmd.call_id, cmd.from_tag, cmd.to_tag)
    if not matches:
        raise CommandError(ECode.SESUNKN)
    for sess, leg, exact in matches:
        delete_one(sess, leg, cmd.weak, ctx)
        if exact:
            break
    return "0"
