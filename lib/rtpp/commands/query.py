"""Q: per-session counters of the RTP pair (PROTOCOL.md §4.10, §10.2); the names and how
each is read are in stats.py."""

from __future__ import annotations

from rtpp.commands.command import Query
from rtpp.commands.context import Context
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.reply import Reply, compose_subreplies, require_fit
from rtpp.commands.subcommands import run_subs
from rtpp.stats import BY_NAME, QUERY_DEFAULT


def handle(cmd: Query, ctx: Context) -> Reply:
    found = ctx.sessions.find_exact(cmd.call_id, cmd.from_tag, cmd.to_tag)
    if found is None:
        raise CommandError(ECode.SESUNKN)
    if cmd.mods.lower().strip("v"):
        raise CommandError(ECode.PARSE_8)
    verbose = bool(cmd.mods)
    sess, leg = found
    ctx.media.sync_kernel(sess)
    a = sess.rtp.streams[leg]
    o = sess.rtp.streams[1 - leg]
    parts = []
    for name in cmd.names or QUERY_DEFAULT:
        counter = BY_NAME.get(name)
        if counter is None or not counter.in_q:
            raise CommandError(ECode.QRYFAIL)
        text = counter.text(counter.query(a, o, sess))
        parts.append(f"{name}={text}" if verbose else text)
    overhead = ctx.peer.overhead
    body = require_fit(" ".join(parts), ECode.RTOOBIG_2, overhead)
    # Sub-commands act forward on the leg facing the from-tag party ("a").
    subs = run_subs(cmd.subcommands, sess, 1 - leg, ctx)
    return compose_subreplies(body, subs, overhead)
