"""The handoff exchange between the running process (old) and its successor (new).

    new -> old  HELLO  {pid, version, reads: [oldest, newest]}   old still serving
    old -> new  STATE  the state document + every descriptor      old has paused
    new -> old  READY  (or REFUSE {reason})                       new has restored
    old -> new  GO                                                 old stops for good
    new -> old  SERVING                                            new is the main PID
    old -> new  ABORT  at any point before GO: new exits, old serves on

The old process pauses only after HELLO, so the successor's start-up (unpacking,
imports, parsing the configuration) costs the calls nothing. Nothing is served twice:
the new process serves only after GO, and the old one never after sending it. The old
process exits only after SERVING (or the channel's end): by then a service manager
has read the new main PID (a main process that exits before that stops the service).
"""

from __future__ import annotations

import os

HELLO = "HELLO"
STATE = "STATE"
READY = "READY"
REFUSE = "REFUSE"
GO = "GO"
SERVING = "SERVING"
ABORT = "ABORT"

#: Seconds the successor has to start and say HELLO (the old process serves meanwhile).
HELLO_TIMEOUT_S = float(os.environ.get("RTPP_HANDOFF_TIMEOUT", "30"))
#: Seconds it has, once the old process paused, to restore the state and say READY.
READY_TIMEOUT_S = 10.0
#: Seconds the successor waits for STATE, and then for GO.
STATE_TIMEOUT_S = 60.0
GO_TIMEOUT_S = 30.0
#: Seconds the old process waits after GO for SERVING, before it exits anyway.
RELEASE_TIMEOUT_S = 10.0
#: Seconds the old process waits for commands in progress to be answered before pausing.
IDLE_TIMEOUT_S = 2.0


class HandoffFailed(Exception):
    """The handoff did not happen; the message says why (one log line)."""
