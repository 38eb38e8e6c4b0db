"""C: copy a leg's media to a remote UDP listener or a local file (PROTOCOL.md §4.8).

The copies themselves are media/recording/copy.py; `U ... && C` is in subcommands.py.
"""

from __future__ import annotations

import re
import socket

from rtpp.commands.command import Copy
from rtpp.commands.context import Context
from rtpp.commands.errors import CommandError, ECode, Step, media_step
from rtpp.commands.reply import Reply

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


def handle(cmd: Copy, ctx: Context) -> Reply:
    # Resolve first: the resolver yields to other greenlets, which may end the session.
    remote = cmd.target.startswith("udp:")
    dest = parse_udp_target(cmd.target, ctx.config.no_resolve) if remote else None
    found = ctx.sessions.find_exact(cmd.call_id, cmd.from_tag, cmd.to_tag)
    if found is None:
        raise CommandError(ECode.SESUNKN)
    sess, leg = found
    if remote:
        if dest is None:
            raise CommandError(ECode.CPYFAIL)
        with media_step(Step.COPY):
            port, local = ctx.media.copy_to_remote(sess, leg, dest)
        return f"{port} {local}" if cmd.want_port else "0"
    if cmd.want_port or not ctx.media.recording.local_copy(sess, leg, cmd.target, cmd.single_file):
        raise CommandError(ECode.CPYFAIL)
    return "0"
