"""The descriptor budget: media ports never take the last descriptors of the process.

The control sockets need a descriptor for every connection they accept (one per
command for `unix:` clients), so media allocation stops while fewer than `reserve`
descriptors would remain under RLIMIT_NOFILE (`-L`). Counting /proc/self/fd costs
time in proportion to the descriptors open, so the count is refreshed at most once a
second while far from the limit (media sockets opened and closed in between are
tracked exactly) and on every check once close to it.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable

#: descriptors kept free for control connections, notifications and recordings
RESERVE = 16
#: within this many descriptors of the reserve, every check counts again
RECOUNT_MARGIN = 256
RECOUNT_INTERVAL_S = 1.0
FD_DIR = "/proc/self/fd"


def nofile_limit() -> int | None:
    """The soft RLIMIT_NOFILE, None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def count_open_fds() -> int | None:
    try:
        return len(os.listdir(FD_DIR)) - 1  # minus the descriptor listdir itself used
    except OSError:
        return None


class FdBudget:
    def __init__(
        self,
        limit: int | None,
        reserve: int = RESERVE,
        count: Callable[[], int | None] = count_open_fds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.reserve = reserve
        self.count = count
        self.clock = clock
        self.counted: int | None = None  # descriptors open at the last count
        self.counted_at = 0.0
        self.delta = 0  # media descriptors opened minus closed since then

    @property
    def in_use(self) -> int | None:
        return None if self.counted is None else self.counted + self.delta

    def room_for(self, n: int) -> bool:
        """True if `n` more descriptors still leave `reserve` free."""
        if self.limit is None:
            return True
        now = self.clock()
        estimate = self.in_use
        stale = estimate is None or now - self.counted_at >= RECOUNT_INTERVAL_S
        if stale or self.limit - (estimate + n) < self.reserve + RECOUNT_MARGIN:
            self.recount(now)
        if self.counted is None:
            return True  # no /proc: the kernel's EMFILE is the only limit
        return self.limit - (self.in_use + n) >= self.reserve

    def recount(self, now: float) -> None:
        self.counted = self.count()
        self.counted_at = now
        self.delta = 0

    def opened(self, n: int) -> None:
        self.delta += n

    def closed(self, n: int) -> None:
        self.delta -= n
