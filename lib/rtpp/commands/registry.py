"""Every control command in one table: letter -> how it parses, what it builds, who
handles it. Adding a command: its dataclass (command.py), its builder (parse.py), its
handler module (`handle(cmd, ctx) -> Reply`) and one row here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    Command,
    Copy,
    Delete,
    DeleteAll,
    Info,
    NoRecord,
    ParseContext,
    Play,
    Query,
    Record,
    Stats,
    StopPlay,
    Update,
    Version,
    VersionFeature,
)
from rtpp.commands.context import Context
from rtpp.commands.parse import (
    FEATURE_CHECK,
    CommandSpec,
    build_copy,
    build_delete,
    build_delete_all,
    build_info,
    build_lookup,
    build_norecord,
    build_play,
    build_query,
    build_record,
    build_stats,
    build_stop_play,
    build_update,
    build_version,
    build_version_feature,
    parse_with,
)
from rtpp.commands.reply import Reply

Handler = Callable[[Any, Context], Reply]


@dataclass(frozen=True, slots=True)
class Entry:
    spec: CommandSpec  # name, token counts, modifiers and sub-commands allowed, builder
    command: type  # what the builder returns
    handler: Handler


# fmt: off
REGISTRY: dict[str, Entry] = {
    "u": Entry(CommandSpec("update", 5, 8, True, True, build_update), Update, update.handle),
    "l": Entry(CommandSpec("lookup", 5, 6, True, True, build_lookup), Update, update.handle),
    "d": Entry(CommandSpec("delete", 3, 4, True, False, build_delete), Delete, delete.handle),
    "p": Entry(CommandSpec("play", 5, 6, True, False, build_play), Play, play.handle),
    "s": Entry(CommandSpec("noplay", 3, 4, False, False, build_stop_play), StopPlay,
               stop_play.handle),
    "r": Entry(CommandSpec("record", 3, 4, True, False, build_record), Record, record.handle),
    "c": Entry(CommandSpec("copy", 4, 5, True, False, build_copy), Copy, copy.handle),
    "n": Entry(CommandSpec("norecord", 3, 4, True, False, build_norecord), NoRecord,
               norecord.handle),
    "q": Entry(CommandSpec("query", 3, 15, True, True, build_query), Query, query.handle),
    "g": Entry(CommandSpec("get_stats", 1, 30, True, False, build_stats), Stats, stats.handle),
    "i": Entry(CommandSpec("get_info", 1, 1, True, False, build_info), Info, info.handle),
    "x": Entry(CommandSpec("delete_all", 1, 1, False, False, build_delete_all), DeleteAll,
               delete_all.handle),
    "v": Entry(CommandSpec("get_version", 1, 1, False, False, build_version), Version,
               version.handle),
    FEATURE_CHECK: Entry(CommandSpec("feature_check", 2, 2, False, False, build_version_feature),
                         VersionFeature, version.handle_feature),
}
# fmt: on

#: Command letter (and FEATURE_CHECK) -> how it parses.
SPECS: dict[str, CommandSpec] = {letter: entry.spec for letter, entry in REGISTRY.items()}
#: Parsed command type -> its handler.
HANDLERS: dict[type, Handler] = {entry.command: entry.handler for entry in REGISTRY.values()}


def parse_command(line: bytes, ctx: ParseContext) -> Command:
    """Parse one control command (without the UDP cookie); raises CommandError."""
    return parse_with(line, ctx, SPECS)
