"""What a process hands over, part by part: control sockets and the reply cache, the
pidfile, counters, notification targets, and the media plane (`media_state`).

`DaemonCarrier` is the old process's side (sender.Carrier); `restore_*` and
`activate` are the new process's.
"""

from __future__ import annotations

import logging
import os
import stat

from rtpp.control.server import ControlServer, StdioListener, UdpListener
from rtpp.handoff import media_state
from rtpp.handoff.protocol import IDLE_TIMEOUT_S, HandoffFailed
from rtpp.handoff.state import FdSource, FdTable, decode, encode

log = logging.getLogger(__name__)


class DaemonCarrier:
    """The running daemon's parts, as the sender sees them."""

    def __init__(self, daemon) -> None:
        self.daemon = daemon
        self.server: ControlServer = daemon.server
        self.app = daemon.app
        self._paused: list[str] = []  # what quiesce stopped, for resume

    @property
    def sessions(self) -> int:
        return self.app.session_count

    def refusal(self) -> str | None:
        if any(isinstance(lst, StdioListener) for lst in self.server.listeners):
            return "a stdio: control socket cannot be handed to another process"
        if self.app.draining:
            return "the process is draining (SIGHUP)"
        if self.app.config.kernel_offload:
            # A new process would replace the kernel's forwarding table (kernel.py) while
            # this one still relies on it.
            return "the kernel route (--kernel-offload) cannot be handed to another process"
        return media_state.refusal(self.app)

    def quiesce(self) -> None:
        self._paused.append("control")
        for listener in self.server.listeners:
            listener.pause()
        for listener in self.server.listeners:
            if not listener.wait_idle(IDLE_TIMEOUT_S):
                raise HandoffFailed(
                    f"a client of {listener.spec.text} has not read its reply "
                    f"within {IDLE_TIMEOUT_S:.0f} s"
                )
        self._paused.append("sweeper")
        self.app.sweeper.stop()
        self._paused.append("media")
        media_state.quiesce(self.app)

    def resume(self) -> None:
        paused, self._paused = self._paused, []
        if "media" in paused:
            media_state.resume(self.app)
        if "sweeper" in paused:
            self.app.sweeper.start()
        if "control" in paused:
            for listener in self.server.listeners:
                listener.resume()

    def snapshot(self, fds: FdTable) -> dict:
        app = self.app
        return {
            "control": export_control(self.server, fds),
            "pidfile": export_pidfile(self.daemon.pidfile, fds),
            "app": {
                "counters": encode(dict(app.counters.values)),
                "started": app.started,
            },
            "media": media_state.snapshot(app, fds),
        }

    def release(self) -> None:
        """After GO: let go of the sockets without removing anything on disk."""
        for listener in self.server.listeners:
            listener.release()


# --------------------------------------------------------------- control


def export_control(server: ControlServer, fds: FdTable) -> dict:
    rcache = next((lst.rcache for lst in server.listeners if isinstance(lst, UdpListener)), None)
    return {
        "listeners": [lst.export(fds.add) for lst in server.listeners],
        "rcache": encode(rcache.entries()) if rcache is not None else [],
    }


def restore_control(server: ControlServer, doc: dict, fds: FdSource) -> None:
    docs = doc["listeners"]
    mine = [lst.spec.text for lst in server.listeners]
    theirs = [d.get("spec") for d in docs]
    if mine != theirs:
        raise HandoffFailed(f"control sockets differ: {theirs} handed over, {mine} configured")
    for listener, ldoc in zip(server.listeners, docs, strict=True):
        listener.adopt(ldoc, fds.take)
    entries = decode(doc.get("rcache") or [])
    for listener in server.listeners:
        if isinstance(listener, UdpListener):
            listener.rcache.load(entries)
            break


# --------------------------------------------------------------- pidfile


def export_pidfile(pidfile, fds: FdTable) -> dict:
    fd = pidfile.fd
    return {"path": pidfile.path, "fd": None if fd is None else fds.add(fd)}


def restore_pidfile(pidfile, doc: dict, fds: FdSource) -> None:
    if doc.get("fd") is not None:
        fd = fds.take(doc["fd"])
        if stat.S_ISREG(os.fstat(fd).st_mode):
            pidfile.fd = fd
        else:
            os.close(fd)


# --------------------------------------------------------------- app


def restore_app(app, doc: dict) -> None:
    values = decode(doc.get("counters") or {})
    for name, value in values.items():
        if name in app.counters.values:
            app.counters.values[name] = value
    app.started = float(doc.get("started", app.started))
