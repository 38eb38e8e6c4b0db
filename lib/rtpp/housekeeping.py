"""The 1 Hz sweeper: inactivity timers, session expiry, and the pps_in gauge.

Packets do not touch timers: the sweeper sees activity as a change of each stream's
accepted-packet count since its last pass (packets dropped for an active player do
not count), which keeps the per-packet path free of timer work.
"""

from __future__ import annotations

import gc
import logging
import os
import time

import gevent
from greenlet import greenlet

from rtpp.session import Session

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
#: --overload_prot: refuse new sessions above this share of one core, accept again below
#: the lower mark (the classic's thresholds).
OVERLOAD_HIGH = 0.90
OVERLOAD_LOW = 0.85
#: Debug aid for leak checks (tests/soak): when set, every sweep rewrites this file
#: with the live greenlet, session and gc-tracked object counts.
DEBUG_DUMP = os.environ.get("RTPP_DEBUG_DUMP", "")


def leg_active(sess: Session, index: int) -> bool:
    """True if leg `index` accepted packets since the last sweep (and remember the count)."""
    active = False
    for st in sess.leg(index):
        mark = st.npkts_in - st.nplayer_drop
        if mark != st.ttl_mark:
            st.ttl_mark = mark
            active = True
    return active


def tick(sess: Session, independent: bool) -> bool:
    """Advance one session's timers by a second; True when it has expired."""
    active = [leg_active(sess, 0), leg_active(sess, 1)]
    if sess.complete:
        if independent:
            for i in (0, 1):
                if active[i]:
                    sess.ttl[i] = sess.ttl_max[i]
        elif active[0] or active[1]:
            sess.reset_ttl()
    if min(sess.ttl) <= 0:
        return True
    sess.ttl[0] -= 1
    sess.ttl[1] -= 1
    return False


class Sweeper:
    def __init__(self, media) -> None:
        self.media = media
        self.greenlet: gevent.Greenlet | None = None
        self.last_rcvd = 0
        self.last_time = 0.0
        self.last_cpu = time.process_time()

    def start(self) -> None:
        self.last_time = time.monotonic()
        self.greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
            self.greenlet = None

    def _loop(self) -> None:
        deadline = time.monotonic()
        while True:
            deadline += SWEEP_INTERVAL_S
            gevent.sleep(max(0.0, deadline - time.monotonic()))
            try:
                self.sweep(time.monotonic())
                if DEBUG_DUMP:
                    debug_dump(DEBUG_DUMP, self.media)
            except Exception:
                log.exception("sweep failed")

    def sweep(self, now: float) -> None:
        media = self.media
        independent = media.config.ttl_independent
        for sess in list(media.sessions):
            if tick(sess, independent):
                log.info("session timeout", extra=sess.log_ctx)
                media.destroy(sess, "timeout")
        self._update_rates(now)

    def _update_rates(self, now: float) -> None:
        media = self.media
        values = media.counters.values
        rcvd = values["npkts_rcvd"] + media.live_sum("npkts_rcvd")
        cpu = time.process_time()
        elapsed = now - self.last_time
        if elapsed > 0:
            values["pps_in"] = max(0, rcvd - self.last_rcvd) / elapsed
            media.load = (cpu - self.last_cpu) / elapsed
            update_overload(media, media.load)
        self.last_rcvd = rcvd
        self.last_cpu = cpu
        self.last_time = now


def overload_state(overloaded: bool, load: float) -> bool:
    """Hysteresis between the two marks."""
    if overloaded:
        return load >= OVERLOAD_LOW
    return load > OVERLOAD_HIGH


def update_overload(media, load: float) -> None:
    """Move the overload state; with --overload_prot, log entering and leaving it."""
    was = media.overloaded
    media.overloaded = overload_state(was, load)
    if media.overloaded == was or not media.config.overload_prot:
        return
    if media.overloaded:
        log.warning(
            "overloaded: %.0f%% of a core in the last second, refusing new sessions (E98)",
            load * 100,
        )
    else:
        log.warning(
            "no longer overloaded: %.0f%% of a core in the last second, accepting new sessions",
            load * 100,
        )


def debug_dump(path: str, media) -> None:
    """Live greenlets, sessions and (after a full collection) gc-tracked objects."""
    gc.collect()
    objects = gc.get_objects()
    greenlets = sum(1 for obj in objects if isinstance(obj, greenlet))
    with open(path + ".tmp", "w") as f:
        f.write(f"greenlets {greenlets}\nsessions {media.sessions.count}\n")
        f.write(f"objects {len(objects)}\n")
    os.replace(path + ".tmp", path)
