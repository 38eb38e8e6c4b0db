"""Command handlers, one module per command; HANDLERS maps a parsed command type to one.

Every handler has the signature `handle(cmd, app, peer) -> str` and returns the reply
body without the LF. Failures raise `CommandError`; a reply that is not an `E<n>` but
still counts as an error (L on a missing session answers `0`) is a `FailedReply`.
"""

from __future__ import annotations


class FailedReply(str):
    """A reply body counted in `ncmds_errs`."""


def _registry() -> dict:
    from rtpp.commands import (
        copy,
        delete,
        delete_all,
        info,
        norecord,
        play,
        query,
        record,
        stats,
        stop_play,
        update,
        version,
    )
    from rtpp.commands.command import (
        Copy,
        Delete,
        DeleteAll,
        Info,
        NoRecord,
        Play,
        Query,
        Record,
        Stats,
        StopPlay,
        Update,
        Version,
        VersionFeature,
    )

    return {
        Update: update.handle,
        Delete: delete.handle,
        Play: play.handle,
        StopPlay: stop_play.handle,
        Record: record.handle,
        Copy: copy.handle,
        NoRecord: norecord.handle,
        Query: query.handle,
        Stats: stats.handle,
        Info: info.handle,
        Version: version.handle,
        VersionFeature: version.handle_feature,
        DeleteAll: delete_all.handle,
    }


def load_handlers() -> dict:
    """Import every handler module now: the daemon does it before dropping privileges."""
    if not HANDLERS:
        HANDLERS.update(_registry())
    return HANDLERS


HANDLERS: dict = {}
