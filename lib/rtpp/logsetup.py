"""`-d LEVEL[:FACILITY]` -> logging handlers: stderr in the foreground, syslog as a daemon.

Lines look like the classic's: `LEVEL:CONTEXT:module: message`, where CONTEXT is
GLOBAL or the Call-ID passed as `extra={"ctx": call_id}`.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from rtpp.config import Config

SYSLOG_SOCKET = "/dev/log"
SYSLOG_IDENT = "rtpproxy"

#: classic level names <-> logging levels
LEVELS = {
    "DBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "ERR": logging.ERROR,
    "CRIT": logging.CRITICAL,
}
_NAMES = {value: name for name, value in LEVELS.items()}
_HANDLER_TAG = "_rtpp_handler"


class ClassicFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = _NAMES.get(record.levelno) or _nearest_name(record.levelno)
        ctx = getattr(record, "ctx", None) or "GLOBAL"
        line = f"{level}:{ctx}:{record.module}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _nearest_name(levelno: int) -> str:
    for value in sorted(_NAMES, reverse=True):
        if levelno >= value:
            return _NAMES[value]
    return "DBUG"


class SyslogHandler(logging.handlers.SysLogHandler):
    """SysLogHandler with a `rtpproxy[pid]: ` tag; quietly drops lines if syslog is absent."""

    def __init__(self, facility: str) -> None:
        code = logging.handlers.SysLogHandler.facility_names[facility.lower()]
        super().__init__(address=SYSLOG_SOCKET, facility=code)
        self.ident = f"{SYSLOG_IDENT}[{os.getpid()}]: "

    def emit(self, record: logging.LogRecord) -> None:
        self.ident = f"{SYSLOG_IDENT}[{os.getpid()}]: "
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802
        pass  # syslog down: nothing useful to do, and stderr may be /dev/null


def setup_logging(config: Config, foreground: bool) -> None:
    """(Re)configure the root logger; calling it again replaces our handlers."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_TAG, False)]:
        root.removeHandler(handler)
        handler.close()
    formatter = ClassicFormatter()
    handlers: list[logging.Handler] = []
    if foreground or config.no_redirect:
        handlers.append(logging.StreamHandler(sys.stderr))
    if not foreground:
        handlers.append(SyslogHandler(config.log_facility))
    for handler in handlers:
        setattr(handler, _HANDLER_TAG, True)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(LEVELS[config.log_level])
