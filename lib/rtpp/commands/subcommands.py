"""Sub-commands after `U ... &&` and `Q ... &&` (PROTOCOL.md §4.15): one row per kind.

They run in order up to the first failure; nothing runs on a session a `D` destroyed.
A sub-command's result is a SubResult (reply.py): text, None for a silent success, or
-1 for a failure.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from rtpp.commands import legs, local_addr
from rtpp.commands.command import SubCommand, SubCopy, SubDelete, SubLookup, SubSet
from rtpp.commands.context import Context
from rtpp.commands.delete import delete_one
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.reply import SubResult
from rtpp.config import Config
from rtpp.media.session import Session


def run_subs(subs: Sequence[SubCommand], sess: Session, sel: int, ctx: Context) -> list:
    """`sel` is the leg whose port the main command returned: `S` acts on the other leg
    (forward) or on it (`Sr`). An `&& L` returns the other leg's port, and the
    sub-commands after it see the legs the other way round, as in the classic."""
    out: list[SubResult] = []
    for sub in subs:
        result = -1 if sess.deleted else _run(sub, sess, sel, ctx)
        out.append(result)
        if result == -1:
            break
        if isinstance(sub, SubLookup):
            sel = 1 - sel
    return out


def check_addrs(subs: Sequence[SubCommand], config: Config) -> None:
    """The addresses `&& L` sub-commands name are checked with the command: E3."""
    for sub in subs:
        if isinstance(sub, SubLookup):
            try:
                local_addr.check(sub.mods, config)
            except CommandError as exc:
                raise CommandError(ECode.PARSE_SUBC) from exc


def _run(sub: SubCommand, sess: Session, sel: int, ctx: Context) -> SubResult:
    try:
        return SUBCOMMANDS[type(sub)](sub, sess, sel, ctx)
    except CommandError:
        return -1


def lookup(sub: SubLookup, sess: Session, sel: int, ctx: Context) -> SubResult:
    """`&& L`: the other leg of a U, as an L would do it."""
    lsel = 1 - sel
    allocate = sess.leg(lsel)[0].sock is None or sub.mods.new_port
    chosen = local_addr.explicit(sub.mods, ctx.config)
    legs.refresh_leg(sess, lsel, sub.mods, ctx, allocate, chosen)
    legs.apply(sess, lsel, sub.mods, sub.remote, ctx)
    sess.reset_ttl()
    return legs.port_text(sess, lsel)


def delete(sub: SubDelete, sess: Session, sel: int, ctx: Context) -> SubResult:
    delete_one(sess, 1, sub.weak, ctx)
    return None


def set_leg(sub: SubSet, sess: Session, sel: int, ctx: Context) -> SubResult:
    """`&& S[r] ttl=<n>` / `tos=<n>` on the leg facing the command's party (`Sr`: the
    other one): its (or, without -i, both legs') timer for good, or its TOS."""
    index = sel if sub.reverse else 1 - sel
    if sub.ttl is not None:
        legs_ = (index,) if ctx.config.ttl_independent else (0, 1)
        sess.set_leg_ttl(sub.ttl, legs_)
    if sub.tos is not None:
        streams = sess.leg(index)
        if any(st.laddr is not None and st.laddr.family != socket.AF_INET for st in streams):
            return -1  # IPv4 only, as the classic
        for st in streams:
            st.set_tos(sub.tos)
    return None


def copy(sub: SubCopy, sess: Session, sel: int, ctx: Context) -> SubResult:
    """`&& C <callid> <ftag> <ttag>`: both directions of that session, out of this one."""
    found = ctx.sessions.find_exact(sub.call_id, sub.from_tag, sub.to_tag)
    if found is None or found[0] is sess:
        raise CommandError(ECode.PARSE_SUBC)
    ctx.media.mirror(found[0], sess)
    return None


SUBCOMMANDS: dict[type, Callable[[Any, Session, int, Context], SubResult]] = {
    SubLookup: lookup,
    SubDelete: delete,
    SubSet: set_leg,
    SubCopy: copy,
}
