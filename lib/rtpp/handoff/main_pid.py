"""Telling systemd which process to supervise once a live handoff is done (MAINPID=).

systemd calls a main process that is not its own child "alien" and decides that when
MAINPID= names it, never again for the same pid. It does not wait for an alien main
process on stop: SIGTERM is followed at once by SIGKILL of the whole unit, so the daemon
never shuts down cleanly. The successor is started by the old process, so whatever it
names before the old process exits is alien:

- one-file build: MAINPID= the daemon (alien, so the old process may exit), then, once
  the bootloader has been handed to systemd, MAINPID= the bootloader;
- run from source (and any build where the daemon is the main process): MAINPID= the
  daemon, then, once it has been handed to systemd, a stand-in child of ours for a
  moment and the daemon again, so that systemd looks at it afresh.

The old process must not exit before systemd has read the first MAINPID= either: a
main process that exits with no successor named makes systemd stop the unit (and kill
the successor). So the successor releases it only after a barrier (BARRIER=1).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable

import gevent

from rtpp import sdnotify
from rtpp.handoff.successor import parent_of, service_pid
from rtpp.spawn import spawn_logged

log = logging.getLogger(__name__)

#: How often to look whether the old process has exited, and when to say that it has not.
POLL_S = 0.05
LATE_S = 10.0
#: How long systemd gets to read a notification before we go on.
BARRIER_S = 5.0
#: A process that lives until its standard input closes.
STAND_IN = (
    (sys.executable, "-I", "-S", "-c", "import sys; sys.stdin.buffer.read()")
    if not getattr(sys, "frozen", False)
    else ("/bin/sh", "-c", "cat >/dev/null")
)


def announce(status: str, old_pid: int | None, release: Callable[[], None]) -> None:
    """The successor serves: name it to systemd (READY=1 and `status` too), `release`
    the old process (`old_pid`, which started this one) once systemd has read that, and
    once the old process is gone, name the process systemd should supervise from now on."""
    if not sdnotify.notify(f"MAINPID={os.getpid()}\nREADY=1\nSTATUS={status}"):
        release()
        return
    spawn_logged(_follow_adoption, service_pid(), old_pid, release, name="main_pid")


def _follow_adoption(main: int, old_pid: int | None, release: Callable[[], None]) -> None:
    try:
        sdnotify.barrier(BARRIER_S)  # the old main process must not exit before this
    finally:
        release()
    _wait_adopted(main, old_pid)
    if main != os.getpid():
        named = sdnotify.notify(f"MAINPID={main}")
    else:
        named = _renew(main)
    if named:
        log.info("systemd supervises process %d as the main process", main)


def _wait_adopted(main: int, old_pid: int | None) -> None:
    """Return once the old process is no longer the parent of `main`: it exited."""
    waited = 0.0
    while old_pid is not None and parent_of(main) == old_pid:
        if waited <= LATE_S < waited + POLL_S:
            log.warning(
                "process %s has not exited %.0f s after the live handoff: until it does, "
                "systemd kills this one at once on stop",
                old_pid,
                LATE_S,
            )
        gevent.sleep(POLL_S)
        waited += POLL_S


def _renew(main: int) -> bool:
    """MAINPID= `main` again; systemd only looks at a pid that differs from the last."""
    try:
        stand_in = subprocess.Popen(
            STAND_IN,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
    except OSError as exc:
        log.warning("can't renew the main PID for systemd (%s): it will not wait for it", exc)
        return False
    try:
        sdnotify.notify(f"MAINPID={stand_in.pid}")
        sdnotify.barrier(BARRIER_S)  # the stand-in must live until systemd has seen it
        if stand_in.poll() is not None:
            log.warning("can't renew the main PID for systemd: the stand-in exited at once")
            return False
        named = sdnotify.notify(f"MAINPID={main}")
        sdnotify.barrier(BARRIER_S)
        return named
    finally:
        stand_in.stdin.close()
        stand_in.wait()
