"""Every control command in one table: letter -> how it parses, what it builds, who
handles it. Adding a command: its dataclass (command.py), its builder (parse.py), its
handler module (`handle(cmd, ctx) -> Reply`) and one row here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtpp.commands import command as c
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
from rtpp.commands import parse as p
from rtpp.commands.command import Command, ParseContext
from rtpp.commands.context import Context
from rtpp.commands.parse import FEATURE_CHECK, CommandSpec
from rtpp.commands.reply import Reply

Handler = Callable[[Any, Context], Reply]


@dataclass(frozen=True, slots=True)
class Entry:
    spec: CommandSpec  # name, token counts, modifiers and sub-commands allowed, builder
    command: type  # what the builder returns
    handler: Handler


# fmt: off
REGISTRY: dict[str, Entry] = {
    "u": Entry(CommandSpec("update", 5, 8, True, True, p.build_update), c.Update, update.handle),
    "l": Entry(CommandSpec("lookup", 5, 6, True, True, p.build_lookup), c.Update, update.handle),
    "d": Entry(CommandSpec("delete", 3, 4, True, False, p.build_delete), c.Delete, delete.handle),
    "p": Entry(CommandSpec("play", 5, 6, True, False, p.build_play), c.Play, play.handle),
    "s": Entry(CommandSpec("noplay", 3, 4, False, False, p.build_stop_play), c.StopPlay,
               stop_play.handle),
    "r": Entry(CommandSpec("record", 3, 4, True, False, p.build_record), c.Record, record.handle),
    "c": Entry(CommandSpec("copy", 4, 5, True, False, p.build_copy), c.Copy, copy.handle),
    "n": Entry(CommandSpec("norecord", 3, 4, True, False, p.build_norecord), c.NoRecord,
               norecord.handle),
    "q": Entry(CommandSpec("query", 3, 15, True, True, p.build_query), c.Query, query.handle),
    "g": Entry(CommandSpec("get_stats", 1, 30, True, False, p.build_stats), c.Stats, stats.handle),
    "i": Entry(CommandSpec("get_info", 1, 1, True, False, p.build_info), c.Info, info.handle),
    "x": Entry(CommandSpec("delete_all", 1, 1, False, False, p.build_delete_all), c.DeleteAll,
               delete_all.handle),
    "v": Entry(CommandSpec("get_version", 1, 1, False, False, p.build_version), c.Version,
               version.handle),
    FEATURE_CHECK: Entry(CommandSpec("feature_check", 2, 2, False, False, p.build_version_feature),
                         c.VersionFeature, version.handle_feature),
}
# fmt: on

#: Command letter (and FEATURE_CHECK) -> how it parses.
SPECS: dict[str, CommandSpec] = {letter: entry.spec for letter, entry in REGISTRY.items()}
#: Parsed command type -> its handler.
HANDLERS: dict[type, Handler] = {entry.command: entry.handler for entry in REGISTRY.values()}


def parse_command(line: bytes, ctx: ParseContext) -> Command:
    """Parse one control command (without the UDP cookie); raises CommandError."""
    return p.parse_with(line, ctx, SPECS)
