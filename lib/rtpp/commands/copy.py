"""C: copy a leg's media to a remote UDP listener or a local file (PROTOCOL.md §4.8).

Also the `U ... && C <callid> <ftag> <ttag>` sub-command that mirrors both streams of
another session into this one.
"""

from __future__ import annotations

import re
import socket

from rtpp.commands.command import Copy, SubCopy
from rtpp.commands.errors import CommandError, ECode
from rtpp.media.ports import PortsExhausted
from rtpp.media.recording.attach import RemoteCopy
from rtpp.media.session import Session
from rtpp.netutil import routed_source

#: A DNS name: dot-separated labels of letters, digits and hyphens.
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)

_PORT = re.compile(r"[0-9]{1,5}")


def parse_udp_target(target: str, no_resolve: bool = False) -> tuple[str, int] | None:
    """`udp:<host>:<port>` -> (IPv4 address, port); None when malformed, or when the
    host is a name and `no_resolve` (--no_resolve) forbids looking it up."""
    if not target.startswith("udp:"):
        return None
    host, sep, port_text = target[4:].rpartition(":")
    if not sep or not host or not _PORT.fullmatch(port_text):
        return None
    port = int(port_text)
    if not 0 < port < 65535:
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host)), port
    except OSError:
        pass
    if no_resolve or not _HOSTNAME.fullmatch(host):
        return None  # no DNS with --no_resolve; never hand junk to the resolver
    try:
        addr = socket.gethostbyname(host)
    except (OSError, UnicodeError):
        return None
    return addr, port


def start_remote_copy(sess: Session, leg: int, dest: tuple[str, int], app) -> tuple[int, str]:
    media = app.media
    try:
        local = routed_source(dest[0])
        pair = media.allocate_pair(socket.AF_INET, local)  # within the descriptor budget
    except (OSError, PortsExhausted) as exc:
        raise CommandError(ECode.CPYFAIL) from exc
    fds, allocator = media.fds, media.allocators[socket.AF_INET]

    def rtp_closed() -> None:
        allocator.release(pair.port)
        fds.closed(1)

    def rtcp_closed() -> None:
        fds.closed(1)

    rtp, rtcp = sess.leg(leg)
    copies = (
        (rtp, RemoteCopy(pair.rtp, dest, rtp_closed)),
        (rtcp, RemoteCopy(pair.rtcp, (dest[0], dest[1] + 1), rtcp_closed)),
    )
    for st, copier in copies:
        if st.copier is not None:
            st.copier.release()
        st.copier = copier
    if app.config.no_rtcp_record:
        rtcp.copier.release()
        rtcp.copier = None
    sess.refresh_fast()
    return pair.port, local


def handle(cmd: Copy, app, peer) -> str:
    # Resolve first: the resolver yields to other greenlets, which may end the session.
    remote = cmd.target.startswith("udp:")
    dest = parse_udp_target(cmd.target, app.config.no_resolve) if remote else None
    found = app.sessions.find_exact(cmd.call_id, cmd.from_tag, cmd.to_tag)
    if found is None:
        raise CommandError(ECode.SESUNKN)
    sess, leg = found
    if remote:
        if dest is None:
            raise CommandError(ECode.CPYFAIL)
        port, local = start_remote_copy(sess, leg, dest, app)
        return f"{port} {local}" if cmd.want_port else "0"
    if cmd.want_port or not app.media.recording.local_copy(sess, leg, cmd.target, cmd.single_file):
        raise CommandError(ECode.CPYFAIL)
    return "0"


class StreamMirror:
    """Forwards a copy of what one stream receives out of another session's stream."""

    def __init__(self, target) -> None:
        self.target = target

    def write(self, data, src, dst, arrival_wall_s: float) -> None:
        target = self.target
        if target.sock is None or target.remote is None:
            return
        try:
            target.sock.sendto(data, target.remote)
        except OSError:
            pass

    def close(self) -> None:
        self.target = None

    release = close


def mirror_session(sub: SubCopy, sess: Session, app) -> None:
    """Copy both directions of the session named by `sub` into `sess`'s legs."""
    found = app.sessions.find_exact(sub.call_id, sub.from_tag, sub.to_tag)
    if found is None or found[0] is sess:
        raise CommandError(ECode.PARSE_SUBC)
    other = found[0]
    for pipe, own in ((other.rtp, sess.rtp), (other.rtcp, sess.rtcp)):
        for src_st, dst_st in zip(pipe.streams, own.streams, strict=True):
            if src_st.copier is not None:
                src_st.copier.release()
            src_st.copier = StreamMirror(dst_st)
    other.refresh_fast()
