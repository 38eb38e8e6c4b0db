"""V and VF: protocol version and capability probe (PROTOCOL.md §4.1, §4.2, §6)."""

from __future__ import annotations

from rtpp.capabilities import BASE_VERSION, supported
from rtpp.commands.command import Version, VersionFeature


def handle(cmd: Version, app, peer) -> str:
    return BASE_VERSION


def handle_feature(cmd: VersionFeature, app, peer) -> str:
    return "1" if supported(cmd.date, app.notifier.configured) else "0"
