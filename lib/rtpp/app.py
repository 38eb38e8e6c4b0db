"""The running proxy: wires the control plane to the media plane; `execute(line, peer)`."""

from __future__ import annotations

# encodings.idna and gevent.threadpool are imported now, not on first use (host names in
# copy targets; the stdio listener's thread pool): a one-file build cannot load modules
# once the daemon has detached or dropped privileges.
import encodings.idna  # noqa: F401
import gc
import logging
import time
from collections.abc import Callable

import gevent
import gevent.threadpool  # noqa: F401

from rtpp.commands.command import ParseContext
from rtpp.commands.context import Context
from rtpp.commands.errors import CommandError, ECode, media_ecode
from rtpp.commands.registry import HANDLERS, parse_command
from rtpp.commands.reply import FailedReply
from rtpp.config import Config
from rtpp.control.peer import Peer
from rtpp.media.errors import MediaError
from rtpp.media.housekeeping import Sweeper
from rtpp.media.media import Media
from rtpp.media.notify import Notifier
from rtpp.media.table import SessionTable
from rtpp.stats import Counters

log = logging.getLogger(__name__)


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.counters = Counters()
        self.sessions = SessionTable()
        self.notifier = Notifier(config.notify_targets, self.counters, config.no_resolve)
        self.media = Media(config, self.counters, self.sessions, self.notifier)
        self.parse_ctx = ParseContext(bridged=config.bridged)
        self.sweeper = Sweeper(self.media)
        self.draining = False
        self.closed = False
        self.started = time.monotonic()
        #: Called after every command with (line, reply body, seconds it took).
        self.on_command: Callable[[bytes, str, float], None] | None = None

    # Lifecycle.

    def start(self) -> None:
        tune_gc()
        self.sweeper.start()

    def drain(self) -> None:
        """Graceful shutdown: refuse new sessions (E99), keep serving existing ones."""
        self.draining = True
        self.media.draining = True

    @property
    def kernel_route_on(self) -> bool:
        """True when the kernel may forward streams (--kernel-offload, and it works)."""
        return self.media.kernel is not None

    @property
    def session_count(self) -> int:
        return self.sessions.count

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sweeper.stop()
        self.media.close()  # every session destroyed, every recording written and moved
        self.notifier.close()

    # Commands.

    def execute(self, line: bytes, peer: Peer) -> str:
        """Run one command (without UDP cookie) and return its reply text with the LF."""
        began = time.perf_counter()
        counters = self.counters
        counters.incr("ncmds_rcvd")
        try:
            cmd = parse_command(line, self.parse_ctx)
            ctx = Context(self.sessions, self.media, counters, self.config, self.notifier, peer)
            body = HANDLERS[type(cmd)](cmd, ctx)
        except CommandError as exc:
            body = FailedReply(f"E{int(exc.ecode)}")
        except MediaError as exc:
            body = FailedReply(f"E{int(media_ecode(exc) or ECode.NOMEM_1)}")
        except (gevent.GreenletExit, KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            log.exception("command failed: %r", line[:200])
            body = FailedReply(f"E{int(ECode.NOMEM_1)}")
        counters.incr("ncmds_errs" if isinstance(body, FailedReply) else "ncmds_succd")
        counters.incr("ncmds_repld")
        if self.on_command is not None:
            self.on_command(line, body, time.perf_counter() - began)
        return body + "\n"

    def uptime_s(self) -> float:
        return time.monotonic() - self.started


#: Young-generation threshold: every relayed packet allocates a few short-lived tuples,
#: so the default (700) runs a collection every couple of hundred packets.
GC_GEN0_THRESHOLD = 20000


def tune_gc() -> None:
    """Collect less often, and never re-scan what start-up built (it lives forever)."""
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
