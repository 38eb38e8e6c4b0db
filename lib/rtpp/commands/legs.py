"""What U, L and the `&& L` sub-command do to a leg: give it ports (on the local address
local_addr.py picks), apply the remote address and modifiers, and say its port.

`sel` is the leg whose port is returned, `upd` = 1 - sel the leg whose remote address
the command's `<addr> <port>` sets.
"""

from __future__ import annotations

import logging

from rtpp.commands import local_addr
from rtpp.commands.command import AddrMods, RemoteAddr
from rtpp.commands.context import Context
from rtpp.commands.errors import Step, media_step
from rtpp.commands.reply import port_reply
from rtpp.config import ListenAddr
from rtpp.media.session import Session

log = logging.getLogger(__name__)


def refresh_leg(
    sess: Session,
    sel: int,
    mods: AddrMods,
    ctx: Context,
    allocate: bool,
    chosen: ListenAddr | None,
) -> None:
    """Give leg `sel` (new) ports when `allocate`, on the address `local_addr` picks
    (`chosen`: what its modifiers named); the session is complete from then on."""
    if not allocate:
        return
    laddr = local_addr.for_leg(sess.leg(sel)[0].laddr, mods, ctx.config, chosen)
    with media_step(Step.LEG):
        ctx.media.allocate_leg(sess, sel, laddr)
    ctx.media.complete(sess)


def apply(sess: Session, sel: int, mods: AddrMods, remote: RemoteAddr, ctx: Context) -> None:
    """The command's address, symmetry, codecs and resizing for the legs of `sess`."""
    upd = 1 - sel
    asym = mods.asymmetric or (ctx.config.asymmetric_default and not mods.symmetric)
    addr = (remote.host, remote.port) if remote.host is not None else None
    sess.update_leg(upd, addr, local_addr.mods_family(mods), remote.hold, asym, mods.codecs)
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
