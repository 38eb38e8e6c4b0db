"""Q: per-session counters of the RTP pair (PROTOCOL.md §4.10, §10.2)."""

from __future__ import annotations

from collections.abc import Callable

from rtpp.commands.command import Query
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.reply import compose_subreplies, require_fit
from rtpp.commands.update import run_subs
from rtpp.session import Session, Stream

DEFAULT_NAMES = ("ttl", "npkts_ina", "npkts_ino", "nrelayed", "ndropped")


def _rtpa(attr: str) -> Callable[[Stream, Stream, Session], int]:
    return lambda a, o, s: getattr(a.analyzer, attr) if a.analyzer is not None else 0


def _jitter(attr: str) -> Callable[[Stream, Stream, Session], float]:
    """Jitter in RTP timestamp units, as the classic analyser reports it."""
    return lambda a, o, s: getattr(a.analyzer, attr) if a.analyzer is not None else 0.0


#: name -> (value of (a, o, session), is_float); "a" faces the ftag party, "o" the other.
QUERY_STATS: dict[str, tuple[Callable, bool]] = {
    "ttl": (lambda a, o, s: max(0, s.ttl[a.index]), False),  # "a"'s own timer with -i
    "npkts_ina": (lambda a, o, s: a.npkts_in, False),
    "npkts_ino": (lambda a, o, s: o.npkts_in, False),
    "longest_ipi": (lambda a, o, s: a.analyzer.longest_ipi if a.analyzer else 0.0, True),
    "rtpa_jlast": (_jitter("jlast"), True),
    "rtpa_jmax": (_jitter("jmax"), True),
    "rtpa_javg": (_jitter("javg"), True),
    "nrelayed": (lambda a, o, s: a.nrelayed + o.nrelayed, False),
    "ndropped": (lambda a, o, s: a.ndropped + o.ndropped, False),
    "rtpa_nsent": (_rtpa("nsent"), False),
    "rtpa_nrcvd": (_rtpa("nrcvd"), False),
    "rtpa_ndups": (_rtpa("ndups"), False),
    "rtpa_nlost": (_rtpa("nlost"), False),
    "rtpa_perrs": (_rtpa("perrs"), False),
}


def handle(cmd: Query, app, peer) -> str:
    found = app.sessions.find_exact(cmd.call_id, cmd.from_tag, cmd.to_tag)
    if found is None:
        raise CommandError(ECode.SESUNKN)
    if cmd.mods.lower().strip("v"):
        raise CommandError(ECode.PARSE_8)
    verbose = bool(cmd.mods)
    sess, leg = found
    a = sess.rtp.streams[leg]
    o = sess.rtp.streams[1 - leg]
    parts = []
    for name in cmd.names or DEFAULT_NAMES:
        stat = QUERY_STATS.get(name)
        if stat is None:
            raise CommandError(ECode.QRYFAIL)
        getter, is_float = stat
        value = getter(a, o, sess)
        text = f"{value:f}" if is_float else str(int(value))
        parts.append(f"{name}={text}" if verbose else text)
    body = require_fit(" ".join(parts), ECode.RTOOBIG_2, peer.overhead)
    # Sub-commands act forward on the leg facing the from-tag party ("a").
    subs = run_subs(cmd.subcommands, sess, 1 - leg, app)
    return compose_subreplies(body, subs, peer.overhead)
