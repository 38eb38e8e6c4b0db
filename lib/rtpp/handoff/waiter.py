"""The old process of a daemon run in a terminal's foreground job (`-f` at a shell
prompt), after a live handoff: it stays as that job, so Ctrl-C still stops the daemon
and the shell gets its prompt back only when the daemon ends.

The successor runs in a process group of its own (`successor.Executable.spawn`), out
of reach of the terminal's signals: this process passes them on to it. It closes every
descriptor but the standard streams, so it holds nothing of the daemon; as the child
subreaper of what runs after it, each later successor becomes its child once the
process before it exits, and it follows the newest. It exits, with the status of the
last of them, once none is left.
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
#: passed on once per process: a one-file build's bootloader, in the same group,
#: passes the terminal's signal on to this process a second time
STOPPING = frozenset((signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1))
PR_SET_CHILD_SUBREAPER = 36

_signal = get_original("signal", "signal")
_waitpid = get_original("os", "waitpid")


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
    """Pass signals on and reap; the exit status of the last child, once none is left."""
    status = 0
    stopped: set[int] = set()
    while True:
        left, status = _reap(status)
        if not left:
            return status
        for signum in os.read(wakeup, 64):
            if signum != signal.SIGCHLD:
                _forward(signum, stopped)


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


def _forward(signum: int, stopped: set[int]) -> None:
    for pid in children():
        if signum in STOPPING:
            if pid in stopped:
                continue
            stopped.add(pid)
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def children() -> list[int]:
    """This process's children, of all its threads: the serving process (a one-file
    build's bootloader, which passes signals on to it), and for a moment after a
    further handoff also the one it replaced."""
    pids: list[int] = []
    for path in glob.glob("/proc/self/task/*/children"):
        try:
            with open(path) as f:
                pids.extend(int(pid) for pid in f.read().split())
        except OSError:
            pass
    return pids
