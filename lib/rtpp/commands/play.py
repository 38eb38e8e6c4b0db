"""P: play a prompt file to the party named by the from-tag (PROTOCOL.md §4.5)."""

from __future__ import annotations

import logging
import re

from rtpp.commands.command import Play
from rtpp.commands.context import Context
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.reply import Reply
from rtpp.media.playback.player import PromptSchedule, open_prompt

log = logging.getLogger(__name__)

#: One number as C's strtol(..., 10) reads it: blanks, an optional sign, digits.
_CODECS = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def parse_codecs(text: str) -> list[int]:
    """Payload types in order, read as the classic does.

    A number, then exactly one separator character skipped (whatever it is);
    the list ends where no number can be read, so ``0,,8`` is just ``[0]``.
    """
    codecs: list[int] = []
    pos = 0
    while pos < len(text):
        match = _CODECS.match(text, pos)
        if match is None:
            break
        codecs.append(int(match.group(1)))
        pos = match.end() + 1
    return codecs


def handle(cmd: Play, ctx: Context) -> Reply:
    found = ctx.sessions.find_exact(cmd.call_id, cmd.from_tag, cmd.to_tag)
    if found is None:
        raise CommandError(ECode.SESUNKN)
    sess, leg = found
    st = sess.rtp.streams[leg]
    players = ctx.media.players
    players.stop(st)
    if cmd.count == 0:
        return "0"
    ptime_ms = 0
    if cmd.codecs == "session":
        if not st.codecs:
            raise CommandError(ECode.INVLARG_5)
        codecs = parse_codecs(st.codecs)
        ptime_ms = st.ptime_ms
    else:
        codecs = parse_codecs(cmd.codecs)
    prompt = open_prompt(cmd.name, codecs) if codecs else None
    if prompt is None:
        log.error(
            "can't create player: no prompt %s for codecs %s",
            cmd.name,
            cmd.codecs,
            extra=sess.log_ctx,
        )
        raise CommandError(ECode.PLRFAIL)
    pt, data = prompt
    schedule = PromptSchedule(data, pt, ptime_ms, cmd.count)
    players.start(st, schedule)
    log.info(
        "playing %s.%d to port %d, ssrc=%08x seq=%d",
        cmd.name,
        pt,
        st.port,
        schedule.ssrc,
        schedule.seq0,
        extra=sess.log_ctx,
    )
    return "0"
