"""U and L: create or update a session, give a leg its ports (PROTOCOL.md §4.3, §7, §8.1).

`sel` is the leg whose port is returned, `upd` = 1 - sel the leg whose remote address
the command's `<addr> <port>` sets: for U, sel = 0 on a forward match (and for a new
session), 1 on a reverse match; for L the other way round. What happens to a leg is
in legs.py, the sub-commands after `&&` in subcommands.py.
"""

from __future__ import annotations

from rtpp.commands import legs, local_addr
from rtpp.commands.command import Update
from rtpp.commands.context import Context
from rtpp.commands.errors import CommandError, ECode, Step, media_step
from rtpp.commands.reply import FailedReply, Reply, compose_subreplies
from rtpp.commands.subcommands import check_addrs, run_subs
from rtpp.config import ListenAddr
from rtpp.media.session import Session


def handle(cmd: Update, ctx: Context) -> Reply:
    chosen = local_addr.check(cmd.mods, ctx.config)
    check_addrs(cmd.subcommands, ctx.config)
    if not cmd.lookup and cmd.notify_socket is not None and not ctx.notifier.configured:
        raise CommandError(ECode.NSOFF)
    found = ctx.sessions.find_exact(cmd.call_id, cmd.from_tag, cmd.to_tag)
    if found is None:
        if cmd.lookup:
            return FailedReply("0")
        sess, sel = _create(cmd, ctx, chosen), 0
    else:
        sess, leg = found
        sel = leg if cmd.lookup else 1 - leg
        sess.to_tag = (cmd.to_tag if leg == 1 else cmd.from_tag) or sess.to_tag
        allocate = sess.leg(sel)[0].sock is None or cmd.mods.new_port
        legs.refresh_leg(sess, sel, cmd.mods, ctx, allocate, chosen)
        _mark_strength(sess, sel, cmd)
    if not cmd.lookup:
        _set_notify(sess, cmd, ctx)
    legs.apply(sess, sel, cmd.mods, cmd.remote, ctx)
    sess.reset_ttl()
    main = legs.port_text(sess, sel)
    overhead = ctx.peer.overhead
    return compose_subreplies(main, run_subs(cmd.subcommands, sess, sel, ctx), overhead)


def _create(cmd: Update, ctx: Context, chosen: ListenAddr | None) -> Session:
    media = ctx.media
    with media_step(Step.NEW_SESSION):
        sess = media.create_session(cmd.call_id, cmd.from_tag)
    l1, l0 = local_addr.for_new_session(cmd.mods, ctx.config, chosen)
    sess.rtp.streams[1].laddr = sess.rtcp.streams[1].laddr = l1
    with media_step(Step.NEW_SESSION):
        media.allocate_leg(sess, 0, l0)
    if cmd.mods.weak:
        sess.strong = False
        sess.rtp.streams[0].weak = True
    media.register(sess)
    if ctx.config.record_all:
        media.recording.record_all(sess)
    return sess


def _mark_strength(sess: Session, sel: int, cmd: Update) -> None:
    if cmd.mods.weak:
        sess.rtp.streams[sel].weak = True
    elif not cmd.lookup:
        sess.strong = True


def _set_notify(sess: Session, cmd: Update, ctx: Context) -> None:
    sess.notify_target = None
    sess.notify_tag = None
    if cmd.notify_socket is None:
        return
    spec = ctx.notifier.match(cmd.notify_socket)
    if spec is None:
        return
    sess.notify_target = ctx.notifier.resolve(spec, ctx.peer)
    sess.notify_tag = cmd.notify_tag
