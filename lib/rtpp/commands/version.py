"""V and VF: protocol version and capability probe (PROTOCOL.md §4.1, §4.2, §6)."""

from __future__ import annotations

from rtpp.capabilities import BASE_VERSION, supported
from rtpp.commands.command import Version, VersionFeature
from rtpp.commands.context import Context
from rtpp.commands.reply import Reply


def handle(cmd: Version, ctx: Context) -> Reply:
    return BASE_VERSION


def handle_feature(cmd: VersionFeature, ctx: Context) -> Reply:
    return "1" if supported(cmd.date, ctx.notifier.configured) else "0"
