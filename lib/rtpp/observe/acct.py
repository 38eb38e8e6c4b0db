"""Per-call accounting (--acct): one JSON object per line for every session that ends.

The record is built on the hub when the session ends; the file is written by a
`record.FileWriter` thread of its own, so the disk never holds up the relay. A full
or vanished disk costs records (counted, logged once per spell), never media. The
file is opened again on SIGWINCH (log rotation): the reopen is queued behind the
records already waiting, so each lands in the file it was meant for.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from rtpp.media.recording.record import FileWriter
from rtpp.observe import source

log = logging.getLogger(__name__)

#: Records (bytes) that may wait for the disk; beyond it records are lost and counted.
MAX_QUEUED_BYTES = 16 << 20
CLOSE_TIMEOUT_S = 5.0
FILE_MODE = 0o640
OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class AcctLog:
    def __init__(self, path: str, writer: FileWriter | None = None) -> None:
        self.path = path
        self.writer = writer or FileWriter(max_queued_bytes=MAX_QUEUED_BYTES)
        self.nwritten = 0  # written by the writer thread only
        self.nlost = 0
        self._fd: int | None = None  # the writer thread's, once open() returned
        self._failing = False  # a spell of failures is being counted (hub side)
        self._thread_failed = False  # the last write failed (writer thread side)

    def open(self) -> None:
        """Open the file now (start-up): raises OSError so that a bad path stops start-up."""
        self._fd = os.open(self.path, OPEN_FLAGS, FILE_MODE)

    def session_ended(self, sess: Any, reason: str) -> None:
        """Media.on_end: queue the session's record."""
        record = source.ended_record(sess, reason, time.time(), time.monotonic())
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=True) + "\n"
        data = line.encode("ascii")
        if not self.writer.submit(self._append, data, nbytes=len(data)):
            self._lost("the disk does not keep up", 1)

    def reopen(self) -> None:
        """Log rotation: close and open the path again, after what is already queued."""
        self.writer.submit(self._reopen)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Write what is queued (blocking, for shutdown) and close the file."""
        self.writer.submit(self._close)
        if not self.writer.stop(timeout_s):
            log.error("accounting records not written within %.0f s", timeout_s)

    # -- writer thread

    def _append(self, data: bytes) -> None:
        try:
            if self._fd is None:
                self._fd = os.open(self.path, OPEN_FLAGS, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[self.writer.write(self._fd, view) :]
        except OSError as exc:
            self._thread_failed = True
            self.writer.report(self._lost, exc.strerror or str(exc), 1)
            return
        self.nwritten += 1
        if self._thread_failed:
            self._thread_failed = False
            self.writer.report(self._recovered)

    def _reopen(self) -> None:
        self._close()
        try:
            self._fd = os.open(self.path, OPEN_FLAGS, FILE_MODE)
        except OSError as exc:
            self.writer.report(self._reopen_failed, exc.strerror or str(exc))
            return
        self.writer.report(self._reopened)

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    # -- hub side: what the thread reported

    def _lost(self, why: str, n: int) -> None:
        self.nlost += n
        if not self._failing:
            self._failing = True
            log.error("accounting records are being lost (%s): %s", self.path, why)

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("accounting records written again to %s, %d lost", self.path, self.nlost)

    def _reopen_failed(self, why: str) -> None:
        log.error("can't reopen the accounting file %s: %s", self.path, why)
        self._failing = True

    def _reopened(self) -> None:
        log.info("accounting file %s reopened", self.path)
