"""P: play a prompt file to the party named by the from-tag (PROTOCOL.md §4.5)."""

from __future__ import annotations

import logging
import re

from rtpp.commands.command import Play
from rtpp.commands.errors import CommandError, ECode
from rtpp.player import PromptSchedule, open_prompt

log = logging.getLogger(__name__)

#: Payload type numbers, each followed by exactly one separator character.
_CODECS = re.compile(r"(\d+)(?:[^\d](?=\d)|[^\d]?$)")


def parse_codecs(text: str) -> list[int]:
    codecs: list[int] = []
    pos = 0
    while pos < len(text):
        match = _CODECS.match(text, pos)
        if match is None:
            break
        codecs.append(int(match.group(1)))
        pos = match.end()
    return codecs


def handle(cmd: Play, app, peer) -> str:
    found = app.sessions.find_exact(cmd.call_id, cmd.from_tag, cmd.to_tag)
    if found is None:
        raise CommandError(ECode.SESUNKN)
    sess, leg = found
    st = sess.rtp.streams[leg]
    players = app.media.players
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
    players.start(st, PromptSchedule(data, pt, ptime_ms, cmd.count))
    log.info("playing %s.%d to port %d", cmd.name, pt, st.port, extra=sess.log_ctx)
    return "0"
