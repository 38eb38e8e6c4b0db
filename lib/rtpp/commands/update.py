"""U and L: create or update a session, give a leg its ports (PROTOCOL.md §4.3, §7, §8.1).

`sel` is the leg whose port is returned, `upd` = 1 - sel the leg whose remote address
the command's `<addr> <port>` sets: for U, sel = 0 on a forward match (and for a new
session), 1 on a reverse match; for L the other way round.
"""

from __future__ import annotations

import logging
import socket
import time

from rtpp.commands import FailedReply
from rtpp.commands.command import (
    AddrMods,
    RemoteAddr,
    SubCopy,
    SubDelete,
    SubLookup,
    SubSet,
    Update,
)
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.reply import compose_subreplies, port_reply
from rtpp.config import ListenAddr
from rtpp.netutil import check_bindable, family_of, routed_source
from rtpp.ports import PortsExhausted
from rtpp.resizer import Resizer
from rtpp.session import Session, make_address

log = logging.getLogger(__name__)


def handle(cmd: Update, app, peer) -> str:
    if not cmd.lookup and cmd.notify_socket is not None and not app.notifier.configured:
        raise CommandError(ECode.NSOFF)
    found = app.sessions.find_exact(cmd.call_id, cmd.from_tag, cmd.to_tag)
    if found is None:
        if cmd.lookup:
            return FailedReply("0")
        sess, sel = _create(cmd, app), 0
    else:
        sess, leg = found
        sel = leg if cmd.lookup else 1 - leg
        sess.to_tag = (cmd.to_tag if leg == 1 else cmd.from_tag) or sess.to_tag
        _refresh_leg(sess, sel, cmd.mods, app, sess.leg(sel)[0].sock is None or cmd.mods.new_port)
        _mark_strength(sess, sel, cmd)
    if not cmd.lookup:
        _set_notify(sess, cmd, app, peer)
    _apply(sess, sel, cmd.mods, cmd.remote, app)
    sess.reset_ttl()
    main = _port_text(sess, sel)
    return compose_subreplies(main, run_subs(cmd.subcommands, sess, sel, app), peer.overhead)


def run_subs(subs, sess: Session, sel: int, app) -> list:
    """Run in order up to the first failure; nothing runs on a session a `D` destroyed."""
    out = []
    for sub in subs:
        result = -1 if sess.deleted else _run_sub(sub, sess, sel, app)
        out.append(result)
        if result == -1:
            break
    return out


def _create(cmd: Update, app) -> Session:
    media = app.media
    sess = media.create_session(cmd.call_id, cmd.from_tag)
    l1, l0 = pick_new_laddrs(cmd.mods, app)
    sess.rtp.streams[1].laddr = sess.rtcp.streams[1].laddr = l1
    try:
        media.allocate_leg(sess, 0, l0)
    except (PortsExhausted, OSError) as exc:
        raise CommandError(ECode.LSTFAIL_2) from exc
    if cmd.mods.weak:
        sess.strong = False
        sess.rtp.streams[0].weak = True
    media.register(sess)
    if app.config.record_all:
        media.recording.record_all(sess)
    return sess


def _refresh_leg(sess: Session, sel: int, mods: AddrMods, app, allocate: bool) -> None:
    if not allocate:
        return
    media = app.media
    laddr = pick_leg_laddr(sess, sel, mods, app)
    try:
        media.allocate_leg(sess, sel, laddr)
    except (PortsExhausted, OSError) as exc:
        raise CommandError(ECode.LSTFAIL_1) from exc
    media.complete(sess)


def _mark_strength(sess: Session, sel: int, cmd: Update) -> None:
    if cmd.mods.weak:
        sess.rtp.streams[sel].weak = True
    elif not cmd.lookup:
        sess.strong = True


def _set_notify(sess: Session, cmd: Update, app, peer) -> None:
    sess.notify_target = None
    sess.notify_tag = None
    if cmd.notify_socket is None:
        return
    spec = app.notifier.match(cmd.notify_socket)
    if spec is None:
        return
    sess.notify_target = app.notifier.resolve(spec, peer)
    sess.notify_tag = cmd.notify_tag


# Local address selection (PROTOCOL.md §7.7).


def _family(mods: AddrMods) -> int:
    return socket.AF_INET6 if mods.ipv6 else socket.AF_INET


def first_of_family(app, family: int) -> ListenAddr:
    for laddr in app.config.listen:
        if laddr.family == family:
            return laddr
    raise CommandError(ECode.INVLARG_6)


def explicit_laddr(mods: AddrMods, app) -> ListenAddr | None:
    """The address named by an L{label}, L<addr> or R<addr> modifier."""
    if mods.local_label is not None:
        for laddr in app.config.listen:
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


def _bridge_laddr(app, letter: str) -> ListenAddr:
    internal, external = app.config.bridge
    return external if letter == "e" else internal


def _default_for(mods: AddrMods, app) -> ListenAddr:
    default = app.config.listen[0]
    family = _family(mods)
    if default.family != family:
        return first_of_family(app, family)
    return default


def pick_new_laddrs(mods: AddrMods, app) -> tuple[ListenAddr, ListenAddr]:
    """(leg 1, leg 0) local addresses of a new session."""
    explicit = explicit_laddr(mods, app)
    if explicit is not None:
        return explicit, explicit
    default = _default_for(mods, app)
    if mods.bridge:
        l1 = _bridge_laddr(app, mods.bridge[0])
        l0 = _bridge_laddr(app, mods.bridge[1]) if len(mods.bridge) > 1 else default
        return l1, l0
    return default, default


def pick_leg_laddr(sess: Session, sel: int, mods: AddrMods, app) -> ListenAddr:
    explicit = explicit_laddr(mods, app)
    if explicit is not None:
        return explicit
    if mods.new_port and len(mods.bridge) > 1:
        return _bridge_laddr(app, mods.bridge[1])
    current = sess.leg(sel)[0].laddr
    if current is not None and (mods.bridge or current.family == _family(mods)):
        return current
    return _default_for(mods, app)


# Applying the command to the session.


def _apply(sess: Session, sel: int, mods: AddrMods, remote: RemoteAddr, app) -> None:
    upd = 1 - sel
    rtp_upd, rtcp_upd = sess.leg(upd)
    _apply_remote(sess, upd, remote, _family(mods))
    asym = mods.asymmetric or (app.config.asymmetric_default and not mods.symmetric)
    rtp_upd.asymmetric = rtcp_upd.asymmetric = asym
    rtp_upd.codecs = mods.codecs
    sess.rtp.streams[sel].ptime_ms = mods.resize_ms
    _apply_resizer(rtp_upd, mods.resize_ms, app)
    sess.refresh_fast()


def _apply_remote(sess: Session, upd: int, remote: RemoteAddr, family: int) -> None:
    if remote.host is None:
        return
    rtp, rtcp = sess.leg(upd)
    if remote.hold:
        rtp.on_hold = rtcp.on_hold = True
        return
    now = time.monotonic()
    targets = [(rtp, remote.port)]
    if remote.port < 65535:
        targets.append((rtcp, remote.port + 1))
    for st, port in targets:
        addr = make_address(family, remote.host, port)
        st.on_hold = False
        if _moves_leg(st, addr):
            st.cmd_changed_at = now
        st.cmd_remote = addr
        if st.learned or st.remote == addr:
            continue
        st.remote = addr
        st.latched = False


def _moves_leg(st, addr) -> bool:
    """True if `addr` is news for a leg that already has an address (a re-INVITE moving
    it): only then may a new source re-latch the leg for a while (README, latching)."""
    return addr != st.cmd_remote and st.remote is not None and addr != st.remote


def _apply_resizer(st, resize_ms: int, app) -> None:
    if resize_ms:
        log.info(
            "RTP packets from %s will be resized to %d milliseconds",
            "caller" if st.index == 1 else "callee",
            resize_ms,
            extra=st.session.log_ctx,
        )
    if st.resizer is None:
        if resize_ms:
            st.resizer = Resizer(resize_ms)
    elif resize_ms:
        st.resizer.set_ptime(resize_ms)
    else:
        app.media.drop_resizer(st)


def _port_text(sess: Session, sel: int) -> str:
    st = sess.leg(sel)[0]
    laddr = st.laddr
    if laddr is None or st.sock is None:
        return "0"
    if laddr.advertised is not None:
        return port_reply(st.port, laddr.advertised, laddr.ipv6)
    if laddr.wildcard:
        return port_reply(st.port, None, False)
    return port_reply(st.port, laddr.host, laddr.ipv6)


# Sub-commands (PROTOCOL.md §4.15).


def _run_sub(sub, sess: Session, sel: int, app):
    try:
        if isinstance(sub, SubLookup):
            return _sub_lookup(sub, sess, sel, app)
        if isinstance(sub, SubDelete):
            from rtpp.commands.delete import delete_one

            delete_one(sess, 1, sub.weak, app)
            return None
        if isinstance(sub, SubSet):
            return set_leg(sub, sess, sel, app.config.ttl_independent)
        if isinstance(sub, SubCopy):
            from rtpp.commands.copy import mirror_session

            mirror_session(sub, sess, app)
            return None
    except CommandError:
        return -1
    return -1


def _sub_lookup(sub: SubLookup, sess: Session, sel: int, app) -> str:
    lsel = 1 - sel
    allocate = sess.leg(lsel)[0].sock is None or sub.mods.new_port
    _refresh_leg(sess, lsel, sub.mods, app, allocate)
    _apply(sess, lsel, sub.mods, sub.remote, app)
    sess.reset_ttl()
    return _port_text(sess, lsel)


def set_leg(sub: SubSet, sess: Session, sel: int, independent: bool):
    index = 1 - sel if sub.reverse else sel
    if sub.ttl is not None:
        legs = (index,) if independent else (0, 1)
        sess.set_ttl_max(sub.ttl, legs)
    if sub.tos is not None:
        for st in sess.leg(index):
            if st.sock is not None and st.laddr.family == socket.AF_INET:
                st.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, sub.tos)
    return None
