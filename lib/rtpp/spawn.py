"""Every greenlet the daemon starts, started one way: a crash is logged, never lost.

gevent reports a greenlet's uncaught exception to the hub, which prints it to stderr:
invisible once the daemon has detached. `spawn_logged` links a logger instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gevent import Greenlet
from gevent.pool import Group

log = logging.getLogger(__name__)


def spawn_logged(
    func: Callable, *args, name: str | None = None, group: Group | None = None
) -> Greenlet:
    """Start `func(*args)` in a new greenlet (in `group`, if given) whose crash is logged
    as `<name> crashed` with the traceback."""
    greenlet = Greenlet(func, *args)
    greenlet.name = name or getattr(func, "__qualname__", repr(func))
    greenlet.link_exception(_log_crash)
    if group is not None:
        group.add(greenlet)
    greenlet.start()
    return greenlet


def _log_crash(greenlet: Greenlet) -> None:
    log.error("greenlet %s crashed", greenlet.name, exc_info=greenlet.exc_info)
