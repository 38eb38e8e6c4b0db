"""The 1 Hz sweeper: inactivity timers, session expiry, the pps_in gauge, and the load
that sets the overload state and the relay's poll pacing.

Packets do not touch timers: the sweeper sees activity as a change of each stream's
accepted-packet count since its last pass (packets dropped for an active player do
not count), which keeps the per-packet path free of timer work.

A pass costs a few microseconds per session (about 5 ms at 1,600 sessions). The
sweeper's own loop hands the hub back every SWEEP_CHUNK sessions, so the relay is
never held up for a whole pass: one stall per second that long would show as the
p99 latency of every call under load.
"""

from __future__ import annotations

import gc
import logging
import os
import time

import gevent
from greenlet import greenlet

from rtpp.media.drivers import poll_pause
from rtpp.media.session import Session
from rtpp.spawn import spawn_logged

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
#: Sessions ticked between two returns to the hub, and how long each pause asks for:
#: a timer (not sleep(0), which only runs other callbacks) so that the hub polls for
#: I/O, and the relay forwards what arrived, before the pass goes on.
SWEEP_CHUNK = 64
SWEEP_PAUSE_S = 0.0001
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
        self.last_time = 0.0
        self.last_cpu = time.process_time()

    def start(self) -> None:
        self.last_time = time.monotonic()
        self.greenlet = spawn_logged(self.sweep_loop, name="sweep_loop")

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
            self.greenlet = None

    def sweep_loop(self) -> None:
        deadline = time.monotonic()
        while True:
            deadline += SWEEP_INTERVAL_S
            gevent.sleep(max(0.0, deadline - time.monotonic()))
            try:
                self.sweep(time.monotonic(), pause_every=SWEEP_CHUNK)
                if DEBUG_DUMP:
                    debug_dump(DEBUG_DUMP, self.media)
            except Exception:
                log.exception("sweep failed")

    def sweep(self, now: float, pause_every: int = 0) -> None:
        """Tick every session; with `pause_every`, yield to the hub after that many."""
        media = self.media
        independent = media.config.ttl_independent
        media.sync_kernel()  # packets the kernel relayed count as activity
        rcvd = 0
        for n, sess in enumerate(list(media.sessions), 1):
            if pause_every and n % pause_every == 0:
                gevent.sleep(SWEEP_PAUSE_S)
            if sess.deleted:  # while the sweeper was paused
                continue
            rcvd += sess.take_rcvd()
            if tick(sess, independent):
                log.info("session timeout", extra=sess.log_ctx)
                media.destroy(sess, "timeout")
        rcvd += media.unswept_rcvd
        media.unswept_rcvd = 0
        self._update_rates(now, rcvd)

    def _update_rates(self, now: float, rcvd: int) -> None:
        """`rcvd`: packets read since the last call."""
        media = self.media
        cpu = time.process_time()
        elapsed = now - self.last_time
        if elapsed > 0:
            media.counters.values["pps_in"] = rcvd / elapsed
            media.load = (cpu - self.last_cpu) / elapsed
            update_overload(media, media.load)
            media.ctx.poll_pause = poll_pause(media.load)
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
