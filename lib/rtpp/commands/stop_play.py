"""S: stop the player facing the from-tag party (PROTOCOL.md §4.6)."""

from __future__ import annotations

from rtpp.commands.command import StopPlay
from rtpp.commands.errors import CommandError, ECode


def handle(cmd: StopPlay, app, peer) -> str:
    found = app.sessions.find_exact(cmd.call_id, cmd.from_tag, cmd.to_tag)
    if found is None:
        raise CommandError(ECode.SESUNKN)
    sess, leg = found
    app.media.players.stop(sess.rtp.streams[leg])
    return "0"
