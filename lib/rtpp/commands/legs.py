"""What U, L and the `&& L` sub-command do to a leg: pick its local address (PROTOCOL.md
§7.7), give it ports, apply the remote address and modifiers, and say its port.

`sel` is the leg whose port is returned, `upd` = 1 - sel the leg whose remote address
the command's `<addr> <port>` sets.
"""

from __future__ import annotations

import logging
import socket

from rtpp.commands.command import AddrMods, RemoteAddr
from rtpp.commands.context import Context
from rtpp.commands.errors import CommandError, ECode, Step, media_step
from rtpp.commands.reply import port_reply
from rtpp.config import ListenAddr
from rtpp.media.session import Session
from rtpp.netutil import check_bindable, family_of, routed_source

log = logging.getLogger(__name__)


def family(mods: AddrMods) -> int:
    return socket.AF_INET6 if mods.ipv6 else socket.AF_INET


def refresh_leg(sess: Session, sel: int, mods: AddrMods, ctx: Context, allocate: bool) -> None:
    """Give leg `sel` (new) ports when `allocate`; the session is complete from then on."""
    if not allocate:
        return
    laddr = pick_leg_laddr(sess, sel, mods, ctx)
    with media_step(Step.LEG):
        ctx.media.allocate_leg(sess, sel, laddr)
    ctx.media.complete(sess)


def apply(sess: Session, sel: int, mods: AddrMods, remote: RemoteAddr, ctx: Context) -> None:
    """The command's address, symmetry, codecs and resizing for the legs of `sess`."""
    upd = 1 - sel
    asym = mods.asymmetric or (ctx.config.asymmetric_default and not mods.symmetric)
    addr = (remote.host, remote.port) if remote.host is not None else None
    sess.update_leg(upd, addr, family(mods), remote.hold, asym, mods.codecs)
    sess.rtp.streams[sel].ptime_ms = mods.resize_ms
    rtp_upd = sess.rtp.streams[upd]
    if mods.resize_ms:
        log.info(
            "RTP packets from %s will be resized to %d milliseconds",
            "caller" if upd == 1 else "callee",
            mods.resize_ms,
            extra=sess.log_ctx,
        )
    ctx.media.set_resize(rtp_upd, mods.resize_ms)


def port_text(sess: Session, sel: int) -> str:
    st = sess.leg(sel)[0]
    laddr = st.laddr
    if laddr is None or st.sock is None:
        return "0"
    if laddr.advertised is not None:
        return port_reply(st.port, laddr.advertised, laddr.ipv6)
    if laddr.wildcard:
        return port_reply(st.port, None, False)
    return port_reply(st.port, laddr.host, laddr.ipv6)


# Local address selection (PROTOCOL.md §7.7).


def first_of_family(ctx: Context, family: int) -> ListenAddr:
    for laddr in ctx.config.listen:
        if laddr.family == family:
            return laddr
    raise CommandError(ECode.INVLARG_6)


def explicit_laddr(mods: AddrMods, ctx: Context) -> ListenAddr | None:
    """The address named by an L{label}, L<addr> or R<addr> modifier."""
    if mods.local_label is not None:
        for laddr in ctx.config.listen:
            if laddr.label == mods.local_label:
                return laddr
        raise CommandError(ECode.INVLARG_1)
    if mods.local_addr is not None:
        return _bindable(mods.local_addr)
    if mods.route_to is not None:
        return _routed(mods.route_to)
    return None


def _bindable(host: str) -> ListenAddr:
    try:
        check_bindable(host)
    except OSError as exc:
        raise CommandError(ECode.INVLARG_1) from exc
    return ListenAddr(family_of(host), host)


def _routed(host: str) -> ListenAddr:
    try:
        return ListenAddr(family_of(host), routed_source(host))
    except OSError as exc:
        raise CommandError(ECode.INVLARG_2) from exc


def _bridge_laddr(ctx: Context, letter: str) -> ListenAddr:
    assert ctx.config.bridge is not None
    internal, external = ctx.config.bridge
    return external if letter == "e" else internal


def _default_for(mods: AddrMods, ctx: Context) -> ListenAddr:
    default = ctx.config.listen[0]
    wanted = family(mods)
    if default.family != wanted:
        return first_of_family(ctx, wanted)
    return default


def pick_new_laddrs(mods: AddrMods, ctx: Context) -> tuple[ListenAddr, ListenAddr]:
    """(leg 1, leg 0) local addresses of a new session."""
    explicit = explicit_laddr(mods, ctx)
    if explicit is not None:
        return explicit, explicit
    default = _default_for(mods, ctx)
    if mods.bridge:
        l1 = _bridge_laddr(ctx, mods.bridge[0])
        l0 = _bridge_laddr(ctx, mods.bridge[1]) if len(mods.bridge) > 1 else default
        return l1, l0
    return default, default


def pick_leg_laddr(sess: Session, sel: int, mods: AddrMods, ctx: Context) -> ListenAddr:
    explicit = explicit_laddr(mods, ctx)
    if explicit is not None:
        return explicit
    if mods.new_port and len(mods.bridge) > 1:
        return _bridge_laddr(ctx, mods.bridge[1])
    current = sess.leg(sel)[0].laddr
    if current is not None and (mods.bridge or current.family == family(mods)):
        return current
    return _default_for(mods, ctx)
