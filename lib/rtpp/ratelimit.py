"""Rate-limited log lines for faults that can repeat many times a second."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: seconds between two lines of the same kind
DEFAULT_INTERVAL_S = 10.0


class LogThrottle:
    """At most one line per `interval_s`; the next line says how many were held back."""

    def __init__(
        self, interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.next_at: float | None = None
        self.held = 0

    def ready(self) -> int | None:
        """None to stay quiet, else the number of lines held back since the last one."""
        now = self.clock()
        if self.next_at is not None and now < self.next_at:
            self.held += 1
            return None
        held, self.held = self.held, 0
        self.next_at = now + self.interval_s
        return held

    def log(self, logger: logging.Logger, level: int, msg: str, *args, **kwargs) -> bool:
        """Log `msg` unless a line went out less than `interval_s` ago; True if logged."""
        held = self.ready()
        if held is None:
            return False
        if held:
            msg += " (%d more in the last %.0f s)"
            args = (*args, held, self.interval_s)
        kwargs.setdefault("stacklevel", 2)  # the caller's module in the log line
        logger.log(level, msg, *args, **kwargs)
        return True
