"""Observability: the --metrics endpoint (Prometheus, /health, /sessions), control
command statistics and the --acct per-call records.

`source` holds every read of the daemon's internals; the other modules work on
what it returns. `Observability` wires them to a running `App`.
"""

from __future__ import annotations

import socket
from typing import Any

from rtpp.commands.reply import FailedReply
from rtpp.observe.acct import AcctLog
from rtpp.observe.commands import CommandStats
from rtpp.observe.http import Endpoint
from rtpp.observe.metrics import make_registry


class Observability:
    def __init__(self, app: Any, listener: socket.socket | None, acct_path: str | None) -> None:
        self.app = app
        self.listener = listener
        self.commands = CommandStats()
        self.acct = AcctLog(acct_path) if acct_path else None
        self.endpoint: Endpoint | None = None

    def start(self) -> None:
        """Open the accounting file (OSError stops start-up) and serve the endpoint."""
        app = self.app
        if self.acct is not None:
            self.acct.open()
            app.media.on_end = self.acct.session_ended
        if self.listener is not None:
            app.on_command = self.on_command
            self.endpoint = Endpoint(app, make_registry(app, self.commands, self.acct))
            self.endpoint.start(self.listener)

    def on_command(self, line: bytes, body: str, seconds: float) -> None:
        self.commands.observe(line, body, isinstance(body, FailedReply), seconds)

    def reopen(self) -> None:
        if self.acct is not None:
            self.acct.reopen()

    def share_port(self) -> None:
        """A live handoff begins: the successor may bind the endpoint's port too."""
        if self.endpoint is not None:
            self.endpoint.share_port()

    def stop_serving(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        elif self.listener is not None:
            self.listener.close()
        self.listener = None

    def close(self) -> None:
        """After the sessions are destroyed: write their records, close the file."""
        self.stop_serving()
        if self.acct is not None:
            self.acct.close()
