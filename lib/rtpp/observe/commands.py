"""Control commands by verb and result, and how long they took: plain counters that
the metrics collector reads (no lock, nothing else per command)."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

#: Command letters as operators know them; any other first letter counts as "other".
VERBS = frozenset("UDLPSRCQGIVXN")
OTHER = "other"
OK = "ok"
#: `L`/`U` lookups of a missing session answer `0`: counted as an error by `G`.
NOT_FOUND = "not_found"
#: Upper bounds (seconds) of the command handling time histogram.
BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def verb_of(line: bytes) -> str:
    """The command letter of a control line (`Uc0,8 ...` -> `U`)."""
    head = line.lstrip()[:1].upper()
    verb = head.decode("latin-1")
    return verb if verb and verb in VERBS else OTHER


def result_of(body: str, failed: bool) -> str:
    """`ok`, `E<code>`, or `not_found`."""
    if not failed:
        return OK
    return body if body.startswith("E") else NOT_FOUND


@dataclass(slots=True)
class Timings:
    """One histogram: counts per bucket (the last one is +Inf), their sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS_S, seconds)] += 1
        self.total_s += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """[(upper bound, count at or below it)] with "+Inf" last."""
        out = []
        running = 0
        for bound, n in zip((*map(repr, BUCKETS_S), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class CommandStats:
    def __init__(self) -> None:
        self.results: dict[tuple[str, str], int] = {}
        self.timings: dict[str, Timings] = {}

    def observe(self, line: bytes, body: str, failed: bool, seconds: float) -> None:
        verb = verb_of(line)
        key = (verb, result_of(body, failed))
        self.results[key] = self.results.get(key, 0) + 1
        timings = self.timings.get(verb)
        if timings is None:
            timings = self.timings[verb] = Timings()
        timings.observe(seconds)
