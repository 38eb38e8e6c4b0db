"""The old process of a daemon run in a terminal's foreground job (`-f` at a shell
prompt), after a live handoff: it stays as that job, so Ctrl-C still stops the daemon
and the shell gets its prompt back only when the daemon ends.

The successor runs in a process group of its own (`successor.Executable.spawn`), out
of reach of the terminal's signals: this process passes them on to it. It closes every
descriptor but the standard streams, so it holds nothing of the daemon; as the child
subreaper of what runs after it, each later successor becomes its child once the
process before it exits, and it passes signals on to the newest. It exits, with the
status of the last of them, once none is left.
"""

from __future__ import annotations

import ctypes
import gc
import glob
import logging
import os
import resource
import signal
from typing import NoReturn

from gevent.monkey import get_original

log = logging.getLogger(__name__)

#: what the job gets from the terminal or the shell, passed on to the serving process
FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
#: passed on once to each process that serves until the daemon is gone (a one-file
#: build's bootloader, in the same group, may pass the terminal's on a second time)
STOPPING = frozenset((signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1))
#: seconds between looks for the process to stop while a stop is under way
STOP_POLL_S = 0.1
PR_SET_CHILD_SUBREAPER = 36

_signal = get_original("signal", "signal")
_waitpid = get_original("os", "waitpid")
_select = get_original("select", "select")


def wanted(foreground: bool) -> bool:
    """True for the terminal's foreground job: -f, its stdin the controlling terminal,
    its process group the terminal's foreground one, and no service manager."""
    if not foreground or os.environ.get("NOTIFY_SOCKET"):
        return False
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def stay() -> NoReturn:
    """Become the waiter (the handoff is done and everything released): never returns.

    Nothing here may yield to the gevent hub, whose loop is closed with the rest."""
    gc.disable()  # nothing may close a descriptor number behind our back from here on
    wakeup = _catch_signals()
    subreaper = _become_subreaper()
    log.info(
        "rtpproxy stays in the foreground for the terminal: process %d passes signals on "
        "to the serving process and exits with it%s",
        os.getpid(),
        "" if subreaper else " (but not past a further handoff: can't be a child subreaper)",
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    _close_all_but(wakeup)
    os._exit(_wait(wakeup[0]))


def _catch_signals() -> tuple[int, int]:
    """Every signal of interest, from whichever thread takes it, as a byte on a pipe."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    caught = (*FORWARDED, signal.SIGCHLD)
    for signum in caught:
        _signal(signum, _note)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, caught)
    return read_fd, write_fd


def _note(signum: int, frame: object) -> None:
    """The wakeup pipe carries the signal; nothing to do here."""


def _become_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)  # find_library would run ldconfig
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _close_all_but(keep: tuple[int, ...]) -> None:
    """Close every descriptor but 0-2 and `keep`: sockets, files, the gevent loop's."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    os.closerange(low, hard if hard != resource.RLIM_INFINITY else os.sysconf("SC_OPEN_MAX"))


def _wait(wakeup: int) -> int:
    """Pass signals on and reap; the exit status of the last child, once none is left.

    A stop signal is passed on to whichever process serves until none is left: one
    that arrives as a handoff ends reaches the new process too (each process gets it
    once)."""
    status = 0
    stop: int | None = None
    stopped: set[int] = set()
    while True:
        left, status = _reap(status)
        if not left:
            return status
        if stop is not None:
            pid = serving_child()
            if pid is not None and pid not in stopped:
                stopped.add(pid)
                _send(pid, stop)
        for signum in _signals(wakeup, STOP_POLL_S if stop is not None else None):
            if signum in STOPPING:
                stop = stop or signum
            elif signum != signal.SIGCHLD:
                _send(serving_child(), signum)


def _signals(wakeup: int, timeout: float | None) -> bytes:
    """The signals caught since the last call; none once `timeout` has passed."""
    ready, _, _ = _select([wakeup], [], [], timeout)
    return os.read(wakeup, 64) if ready else b""


def _reap(status: int) -> tuple[bool, int]:
    """(whether a child is left, the status of the last one reaped, else `status`)."""
    while True:
        try:
            pid, wstatus = _waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False, status
        if pid == 0:
            return True, status
        code = os.waitstatus_to_exitcode(wstatus)
        status = code if code >= 0 else 128 - code


def _send(pid: int | None, signum: int) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def serving_child() -> int | None:
    """The youngest live child (of any of this process's threads): the serving process
    or its bootloader. The one a further handoff replaced may linger a moment: exiting
    (a zombie, its last threads still going) or, as a bootloader, removing its unpack
    directory."""
    started: dict[int, int] = {}
    for path in glob.glob("/proc/self/task/*/children"):
        try:
            with open(path) as f:
                pids = [int(pid) for pid in f.read().split()]
        except OSError:
            continue
        for pid in pids:
            start = _live_since(pid)
            if start is not None:
                started[pid] = start
    return max(started, key=lambda pid: (started[pid], pid), default=None)


def _live_since(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), None unless it is alive."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])
