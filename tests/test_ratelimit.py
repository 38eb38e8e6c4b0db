"""Rate-limited log lines for repeating faults."""

from __future__ import annotations

import logging

from rtpp.ratelimit import LogThrottle

log = logging.getLogger("rtpp.test")


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_interval_then_the_number_held_back(caplog):
    clock = Clock()
    throttle = LogThrottle(10.0, clock)
    logged = [throttle.log(log, logging.WARNING, "accept: %s", "EMFILE") for _ in range(26)]
    assert logged == [True] + [False] * 25
    clock.now += 9.9
    assert not throttle.log(log, logging.WARNING, "accept: %s", "EMFILE")
    clock.now += 0.1
    assert throttle.log(log, logging.WARNING, "accept: %s", "EMFILE")
    assert [r.getMessage() for r in caplog.records] == [
        "accept: EMFILE",
        "accept: EMFILE (26 more in the last 10 s)",
    ]


def test_the_line_names_the_callers_module(caplog):
    LogThrottle().log(log, logging.ERROR, "x")
    assert caplog.records[0].module == "test_ratelimit"
