"""X: destroy every session, without timeout notifications (PROTOCOL.md §4.13)."""

from __future__ import annotations

from rtpp.commands.command import DeleteAll


def handle(cmd: DeleteAll, app, peer) -> str:
    app.media.destroy_all("delete")
    return "0"
