"""The running process's side of a live handoff (SIGUSR2): start the successor, hand it
everything, and stop only once it is serving. On any failure it serves on."""

from __future__ import annotations

import logging
import subprocess
import time
from typing import Protocol

import gevent

from rtpp.handoff import protocol, state, successor
from rtpp.handoff.channel import Channel, ChannelError, socket_pair
from rtpp.handoff.protocol import HandoffFailed

log = logging.getLogger(__name__)


class Carrier(Protocol):
    """What the daemon provides to be handed over."""

    @property
    def format(self) -> int:
        """The state format its snapshot is written in."""

    def refusal(self) -> str | None:
        """Why this process cannot be handed over now (None: it can)."""

    def quiesce(self) -> None:
        """Stop reading every socket (may raise HandoffFailed)."""

    def snapshot(self, fds: state.FdTable) -> dict:
        """The state sections, adding every descriptor to `fds`."""

    def resume(self) -> None:
        """Serve again as if nothing happened."""

    @property
    def sessions(self) -> int:
        """How many sessions there are (for the log)."""


def hand_over(carrier: Carrier, executable: successor.Executable) -> int | None:
    """Run a handoff; the successor's pid once it serves, None when this process serves on.

    Failures are logged here, in one line.
    """
    reason = carrier.refusal()
    if reason is not None:
        log.error("live handoff refused: %s; this process serves on", reason)
        return None
    ours, theirs = socket_pair()
    try:
        proc = _start(executable, theirs.fileno())
    except OSError as exc:
        log.error(
            "live handoff failed: can't start %s: %s; this process serves on",
            executable.program,
            exc.strerror or exc,
        )
        ours.close()
        return None
    finally:
        theirs.close()
    channel = Channel(ours)
    try:
        pid, paused_s = _exchange(channel, carrier, proc)
        _await_release(channel)
    except gevent.GreenletExit:
        _abort(channel, proc)  # the process is stopping: no successor
        raise
    except HandoffFailed as exc:
        _abort(channel, proc)
        log.error("live handoff to %s failed: %s; this process serves on", executable.program, exc)
        return None
    except Exception:
        _abort(channel, proc)
        log.exception("live handoff to %s failed; this process serves on", executable.program)
        return None
    finally:
        channel.close()
    log.info(
        "live handoff done: process %d serves now (%d sessions, %.0f ms without reading)",
        pid,
        carrier.sessions,
        paused_s * 1000,
    )
    return pid


def _start(executable: successor.Executable, channel_fd: int) -> subprocess.Popen:
    """Start the successor. Stopped meanwhile (the greenlet killed while Popen waits for
    the exec), this process ends it once it is started: no successor is left behind."""
    starting = gevent.spawn(executable.spawn, channel_fd)
    try:
        return starting.get()
    except gevent.GreenletExit:
        try:
            successor.stop(starting.get())
        except OSError:
            pass
        raise


def _exchange(channel: Channel, carrier: Carrier, proc: subprocess.Popen) -> tuple[int, float]:
    """(the successor's pid, seconds this process did not read its sockets)."""
    hello = _expect(channel, protocol.HELLO, protocol.HELLO_TIMEOUT_S, proc)
    info = hello.json()
    reads = info.get("reads") or [0, 0]
    fmt = carrier.format
    if not reads[0] <= fmt <= reads[1]:
        raise HandoffFailed(
            f"the new executable (version {info.get('version')}) reads state formats "
            f"{reads[0]}-{reads[1]}, this process writes {fmt}"
        )
    paused_at = time.monotonic()
    try:
        carrier.quiesce()
        fds = state.FdTable()
        doc = state.document(carrier.snapshot(fds), fmt)
        try:
            channel.send(protocol.STATE, doc, fds.fds)
        except ChannelError as exc:
            raise HandoffFailed(_gone(proc, str(exc))) from None
        _expect(channel, protocol.READY, protocol.READY_TIMEOUT_S, proc)
        channel.send(protocol.GO)
    except (HandoffFailed, ChannelError) as exc:
        carrier.resume()
        raise HandoffFailed(str(exc)) from None
    except BaseException:
        carrier.resume()
        raise
    return int(info.get("pid") or proc.pid), time.monotonic() - paused_at


def _await_release(channel: Channel) -> None:
    """After GO, until the successor says SERVING (or closes the channel): it has then
    told the service manager its pid, and this process, the main one until then, may
    exit. Nothing stops that now, not even a stop signal (the successor serves)."""
    try:
        msg = channel.recv(protocol.RELEASE_TIMEOUT_S)
    except ChannelError as exc:
        if "in time" in str(exc):
            log.warning(
                "the new process did not release this one within %.0f s after taking over",
                protocol.RELEASE_TIMEOUT_S,
            )
        return
    except gevent.GreenletExit:
        return
    msg.close_fds()


def _expect(channel: Channel, kind: str, timeout: float, proc: subprocess.Popen):
    try:
        msg = channel.recv(timeout)
    except ChannelError as exc:
        if "in time" in str(exc):
            raise HandoffFailed(f"no {kind} from the new process within {timeout:.0f} s") from None
        raise HandoffFailed(_gone(proc, str(exc))) from None
    if msg.kind == protocol.REFUSE:
        msg.close_fds()
        raise HandoffFailed(f"the new process refused: {msg.json().get('reason')}")
    if msg.kind != kind:
        msg.close_fds()
        raise HandoffFailed(f"the new process sent {msg.kind!r} instead of {kind}")
    return msg


def _gone(proc: subprocess.Popen, detail: str) -> str:
    try:
        status = proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        return detail
    return f"the new process {successor.describe_exit(status)} before it was ready"


def _abort(channel: Channel, proc: subprocess.Popen) -> None:
    try:
        channel.send(protocol.ABORT)
    except ChannelError:
        pass
    successor.stop(proc)
