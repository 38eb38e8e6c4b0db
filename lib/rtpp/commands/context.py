"""What a command handler may use: `handle(cmd, ctx) -> Reply`, never the daemon object."""

from __future__ import annotations

from dataclasses import dataclass

from rtpp.config import Config
from rtpp.control.peer import Peer
from rtpp.media.media import Media
from rtpp.media.notify import Notifier
from rtpp.media.table import SessionTable
from rtpp.stats import Counters


@dataclass(frozen=True, slots=True)
class Context:
    """One command's view of the daemon.

    `sessions` finds sessions by call-id and tags; `media` does everything to media
    (sessions, ports, copies, recording, playback) and raises media errors, which
    commands/errors.py maps to codes; `counters` are the process-wide counters
    (stats.py); `config` the daemon's configuration; `notifier` the timeout
    notification targets; `peer` who sent this command.
    """

    sessions: SessionTable
    media: Media
    counters: Counters
    config: Config
    notifier: Notifier
    peer: Peer
