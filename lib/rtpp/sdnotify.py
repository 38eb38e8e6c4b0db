"""systemd readiness notification and socket activation, without libsystemd."""

from __future__ import annotations

import array
import logging
import os
import select
import socket
import sys

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to $NOTIFY_SOCKET; False when there is none."""
    return _send(state, ())


def barrier(timeout: float) -> bool:
    """Wait until the service manager has dealt with every notification sent before
    (sd_notify_barrier: it closes the pipe end it was sent once it read BARRIER=1).
    False when there is no manager or it did not answer within `timeout` seconds."""
    rfd, wfd = os.pipe()
    try:
        sent = _send("BARRIER=1", (wfd,))
        os.close(wfd)
        wfd = -1
        if not sent:
            return False
        ready, _, _ = select.select([rfd], [], [], timeout)
        return bool(ready) and os.read(rfd, 1) == b""
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)


def _send(state: str, fds: tuple[int, ...]) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendmsg([state.encode()], ancillary)
    except OSError as exc:
        log.warning("sd_notify(%s) failed: %s", state, exc)
        return False
    return True


def listen_fds(unset_environment: bool = True) -> list[int]:
    """The file descriptors passed by socket activation (LISTEN_PID must be us)."""
    try:
        pid = int(os.environ.get("LISTEN_PID", ""))
        count = int(os.environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    if not _names_us(pid) or count <= 0:
        return []
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    for fd in fds:
        os.set_inheritable(fd, False)
    return fds


def _names_us(pid: int) -> bool:
    # A one-file frozen binary runs as a child of its bootloader, which systemd started.
    if pid == os.getpid():
        return True
    return bool(getattr(sys, "frozen", False)) and pid == os.getppid()
