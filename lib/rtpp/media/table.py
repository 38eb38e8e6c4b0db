"""All sessions, found by call-id and tags with the classic matching rules (PROTOCOL.md §7.1)."""

from __future__ import annotations

from collections.abc import Iterator

from rtpp.media.session import Session


def _suffix(tag: str) -> str | None:
    i = tag.rfind(";")
    return tag[i:] if i >= 0 else None


def exact_match(sess: Session, from_tag: str, to_tag: str | None) -> int | None:
    """1 for a forward match, 0 for a reverse match, None for no match (exact rule)."""
    stag = sess.from_tag
    if from_tag == stag:
        return 1
    if to_tag is None:
        return None
    if to_tag == stag:
        return 0
    if stag.startswith(to_tag + ";"):
        fsuffix = _suffix(from_tag)
        if fsuffix is not None and fsuffix == _suffix(stag):
            return 0
    return None


def prefix_match(sess: Session, tag: str) -> bool:
    """The prefix rule: `S.from == tag` or `S.from` starts with `tag;`."""
    stag = sess.from_tag
    return stag == tag or stag.startswith(tag + ";")


class SessionTable:
    def __init__(self) -> None:
        self.by_call: dict[str, list[Session]] = {}
        self.count = 0
        self._seq = 0

    def __iter__(self) -> Iterator[Session]:
        for sessions in list(self.by_call.values()):
            yield from list(sessions)

    def add(self, sess: Session) -> None:
        self._seq += 1
        sess.seq = self._seq
        self.by_call.setdefault(sess.call_id, []).append(sess)
        self.count += 1

    def remove(self, sess: Session) -> None:
        sessions = self.by_call.get(sess.call_id)
        if not sessions or sess not in sessions:
            return
        sessions.remove(sess)
        if not sessions:
            del self.by_call[sess.call_id]
        self.count -= 1

    def find_exact(
        self, call_id: str, from_tag: str, to_tag: str | None
    ) -> tuple[Session, int] | None:
        """(session, index of the leg facing the from-tag party) by the exact rule."""
        for sess in self.by_call.get(call_id, ()):
            leg = exact_match(sess, from_tag, to_tag)
            if leg is not None:
                return sess, leg
        return None

    def find_prefix(
        self, call_id: str, from_tag: str, to_tag: str | None
    ) -> list[tuple[Session, int, bool]]:
        """Every (session, leg index, exact) matched by the prefix rule.

        The from-tag is tried first (leg 1); only if nothing matched it, the to-tag
        (leg 0). `exact` tells whether the match was `S.from == tag`.
        """
        sessions = self.by_call.get(call_id, ())
        for tag, leg in ((from_tag, 1), (to_tag, 0)):
            if tag is None:
                continue
            found = [(s, leg, s.from_tag == tag) for s in sessions if prefix_match(s, tag)]
            if found:
                return found
        return []
