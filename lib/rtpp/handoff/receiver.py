"""The successor's side of a live handoff: say HELLO, take the state, restore it, say
READY, and serve only after GO.

Until GO the process must not touch anything shared: it removes no socket file and no
pidfile, and on any failure it tells the old process why (REFUSE) and exits at once.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from rtpp import __version__
from rtpp.handoff import protocol, state
from rtpp.handoff.channel import Channel, ChannelError
from rtpp.handoff.successor import CHANNEL_ENV, parent_of, service_pid

log = logging.getLogger(__name__)


def inherited_channel() -> Channel | None:
    """The channel an old process passed us (and forget the variable), else None."""
    text = os.environ.pop(CHANNEL_ENV, None)
    if text is None:
        return None
    try:
        return Channel.from_fd(int(text))
    except (ValueError, OSError, ChannelError) as exc:
        sys.stderr.write(f"rtpproxy: {CHANNEL_ENV}={text}: not a handoff channel: {exc}\n")
        raise SystemExit(1) from None


class Takeover:
    """The new process's conversation with the old one."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        #: The old process: it started this one (or its bootloader) and waits for READY.
        self.old_pid = parent_of(service_pid())

    def hello(self) -> tuple[dict, state.FdSource]:
        """HELLO, then the state: (sections, descriptors). Exits on ABORT or EOF."""
        hello = {
            "pid": os.getpid(),
            "version": __version__,
            "reads": [state.OLDEST_READABLE, state.FORMAT],
        }
        try:
            self.channel.send(protocol.HELLO, hello)
            msg = self.channel.recv(protocol.STATE_TIMEOUT_S)
        except ChannelError:
            self.quit()
        if msg.kind != protocol.STATE:
            msg.close_fds()
            self.quit()
        fds = state.FdSource(msg.fds)
        try:
            sections = state.sections_of(msg.json())
        except (state.StateError, ValueError) as exc:
            self.refuse(str(exc))
        return sections, fds

    def restore(self, step: Callable[[], None]) -> None:
        """Run `step`; any failure is sent back as REFUSE and ends the process."""
        try:
            step()
        except Exception as exc:
            log.debug("restoring the handed-over state failed", exc_info=True)
            self.refuse(f"{type(exc).__name__}: {exc}")

    def ready(self) -> None:
        """READY, then wait for GO; exits on anything else."""
        try:
            self.channel.send(protocol.READY)
            msg = self.channel.recv(protocol.GO_TIMEOUT_S)
        except ChannelError:
            self.quit()
        if msg.kind != protocol.GO:
            self.quit()

    def release(self) -> None:
        """SERVING: the old process may exit (the service manager knows our pid)."""
        try:
            self.channel.send(protocol.SERVING)
        except ChannelError:
            pass  # an older version does not wait for it
        self.channel.close()

    def refuse(self, reason: str) -> None:
        try:
            self.channel.send(protocol.REFUSE, {"reason": reason})
        except ChannelError:
            pass
        self.quit()

    def quit(self) -> None:
        """Leave without any clean-up: everything we hold is the old process's."""
        sys.stderr.flush()
        os._exit(1)
