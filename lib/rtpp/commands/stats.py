"""G: global statistics by name (PROTOCOL.md §4.11, §10.1); the names, and where each
counter lives, are in stats.py at the package top."""

from __future__ import annotations

from rtpp.commands.command import Stats
from rtpp.commands.context import Context
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.reply import Reply, require_fit
from rtpp.stats import BY_NAME, STAT_NAMES, Counter, Home


def stat_value(ctx: Context, counter: Counter) -> float:
    if counter.home is Home.RECORDING:
        return getattr(ctx.media.recording.counters, counter.name)
    value = ctx.counters.values[counter.name]
    if counter.home is Home.STREAM:
        value += ctx.media.live_sum(counter)
    return value


def handle(cmd: Stats, ctx: Context) -> Reply:
    ctx.media.sync_kernel()  # what the kernel relayed, read now
    parts = []
    for name in cmd.names:
        if name not in STAT_NAMES:
            raise CommandError(ECode.STSFAIL)
        counter = BY_NAME[name]
        text = counter.text(stat_value(ctx, counter))
        parts.append(f"{name}={text}" if cmd.verbose else text)
    return require_fit(" ".join(parts), ECode.RTOOBIG_1, ctx.peer.overhead)
