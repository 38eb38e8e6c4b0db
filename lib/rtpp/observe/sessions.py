"""The /sessions view: one JSON object per active session, sorted and paginated."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from rtpp.observe import source

DEFAULT_LIMIT = 50
#: The most sessions one page holds, whatever the query asks.
MAX_LIMIT = 200
#: oldest: creation order; busiest: most packets received; worst: highest loss, then jitter.
SORTS = ("oldest", "busiest", "worst")


class QueryError(ValueError):
    """A malformed /sessions query (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class SessionsQuery:
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    sort: str = "oldest"


def parse_query(text: str) -> SessionsQuery:
    """`limit=N&offset=N&sort=oldest|busiest|worst`; anything else is a QueryError."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        raise QueryError("malformed query string") from None
    seen: dict[str, str] = {}
    for key, value in pairs:
        if key not in ("limit", "offset", "sort"):
            raise QueryError(f"unknown parameter {key!r}")
        if key in seen:
            raise QueryError(f"repeated parameter {key!r}")
        seen[key] = value
    limit = _count(seen.get("limit"), "limit", DEFAULT_LIMIT)
    offset = _count(seen.get("offset"), "offset", 0)
    if limit < 1 or limit > MAX_LIMIT:
        raise QueryError(f"limit must be 1..{MAX_LIMIT}")
    sort = seen.get("sort", "oldest")
    if sort not in SORTS:
        raise QueryError(f"sort must be one of {', '.join(SORTS)}")
    return SessionsQuery(limit, offset, sort)


def _count(text: str | None, name: str, default: int) -> int:
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise QueryError(f"{name} must be a decimal number")
    return int(text)


def page(app: Any, query: SessionsQuery) -> dict:
    """The page of sessions the query asks for, with the total to paginate by."""
    now = time.monotonic()
    found = source.sessions(app)
    if query.sort == "busiest":
        found.sort(key=source.busiest_key, reverse=True)
    elif query.sort == "worst":
        found.sort(key=source.worst_key, reverse=True)
    else:
        found.sort(key=lambda s: s.seq)
    chosen = found[query.offset : query.offset + query.limit]
    return {
        "total": len(found),
        "offset": query.offset,
        "limit": query.limit,
        "sort": query.sort,
        "sessions": [source.session_record(sess, now) for sess in chosen],
    }
