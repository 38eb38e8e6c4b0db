"""Timeout notifications to the `-n` targets (PROTOCOL.md §9, OPERATIONS.md §2.12).

Each target has its own bounded queue and sender greenlet holding one persistent
stream connection, so a target that is down, slow or never reads delays nobody else:
not the other targets, not commands, not media, not shutdown.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from typing import Protocol

import gevent
from gevent.queue import Full, Queue

from rtpp.netutil import ipv4_of
from rtpp.ratelimit import LogThrottle
from rtpp.spawn import spawn_logged
from rtpp.stats import Counters

log = logging.getLogger(__name__)

CC_SELF = "%%CC_SELF%%"
QUEUE_LIMIT = 1000
CONNECT_TIMEOUT_S = 3.0
SEND_TIMEOUT_S = 3.0
SEND_RETRIES = 3


class NotifyConfigError(ValueError):
    pass


class Sender(Protocol):
    """Who sent the command that named the target (the control plane's Peer)."""

    @property
    def ipv4_host(self) -> str: ...


@dataclass(frozen=True, slots=True)
class TargetSpec:
    name: str  # what a U's notify socket is compared with
    family: int
    address: str | None  # unix path or IPv4 host; None for the %%CC_SELF%% wildcard
    port: int = 0

    @property
    def wildcard(self) -> bool:
        return self.address is None


def parse_target(text: str, no_resolve: bool = False) -> TargetSpec:
    """One `-n` value; with `no_resolve` a tcp: host must be a numeric IPv4 address."""
    if not text:
        raise NotifyConfigError("timeout notification socket name too short")
    if text.startswith("tcp:"):
        host, sep, port_text = text[4:].rpartition(":")
        if not sep or not _is_port(port_text):
            raise NotifyConfigError(f"error adding timeout notification: invalid port in {text}")
        if host == CC_SELF:
            return TargetSpec(text, socket.AF_INET, None, int(port_text))
        try:
            addr = ipv4_of(host, no_resolve)
        except OSError as exc:
            raise NotifyConfigError(f"error adding timeout notification: {host}: {exc}") from exc
        return TargetSpec(text, socket.AF_INET, addr, int(port_text))
    path = text[5:] if text.startswith("unix:") else text
    return TargetSpec("unix:" + path, socket.AF_UNIX, path)


@dataclass(eq=False)
class Target:
    """One connection target with its queue and sender greenlet."""

    family: int
    address: object  # path or (host, port)
    queue: Queue = field(default_factory=lambda: Queue(QUEUE_LIMIT))
    sock: socket.socket | None = None
    greenlet: gevent.Greenlet | None = None
    counters: Counters | None = None
    nsent: int = 0
    nfailed: int = 0
    ndropped: int = 0
    #: the notification being sent (None while the sender waits for one)
    sending: bytes | None = None
    drop_log: LogThrottle = field(default_factory=LogThrottle)

    def submit(self, message: bytes) -> None:
        try:
            self.queue.put_nowait(message)
        except Full:
            self.ndropped += 1
            self._count("nnotify_dropped")
            self.drop_log.log(
                log,
                logging.ERROR,
                "notification queue for %s is full (%d waiting), dropping a notification",
                self.address,
                self.queue.qsize(),
            )
            return
        if self.greenlet is None or self.greenlet.dead:
            self.greenlet = spawn_logged(self._send_loop, name="notify_send_loop")

    def _send_loop(self) -> None:
        while True:
            message = self.sending = self.queue.get()
            try:
                sent = self._send(message)
            finally:
                self.sending = None
            if sent:
                self.nsent += 1
            else:
                self.nfailed += 1
                self._count("nnotify_failed")
                log.error("unable to send timeout notification to %s", self.address)

    def _count(self, name: str) -> None:
        if self.counters is not None:
            self.counters.incr(name)

    def _send(self, message: bytes) -> bool:
        if self.sock is not None and self._closed_by_target():
            self._disconnect()
        for _ in range(1 + SEND_RETRIES):
            if self.sock is None and not self._connect():
                return False
            try:
                with gevent.Timeout(SEND_TIMEOUT_S):
                    self.sock.sendall(message)
                return True
            except (OSError, gevent.Timeout) as exc:
                log.warning("notification to %s failed: %s", self.address, exc)
                self._disconnect()
        return False

    def _closed_by_target(self) -> bool:
        """True if the target closed the kept connection (it restarted, say): over TCP a
        write into it would still succeed and the notification would be lost. Whatever
        the target sent meanwhile (the Sippy B2BUA answers each notification) is read."""
        sock = self.sock
        sock.setblocking(False)
        try:
            while sock.recv(4096):
                pass
            return True
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            sock.setblocking(True)

    def _connect(self) -> bool:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            with gevent.Timeout(CONNECT_TIMEOUT_S):
                sock.connect(self.address)
        except (OSError, gevent.Timeout) as exc:
            sock.close()
            log.error("can't connect to notification target %s: %s", self.address, exc)
            return False
        self.sock = sock
        return True

    def _disconnect(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
        self._disconnect()


class Notifier:
    def __init__(
        self, specs: tuple[str, ...], counters: Counters | None = None, no_resolve: bool = False
    ) -> None:
        self.specs = [parse_target(text, no_resolve) for text in specs]
        self.counters = counters
        self.targets: dict[object, Target] = {}

    @property
    def configured(self) -> bool:
        return bool(self.specs)

    def match(self, name: str) -> TargetSpec | None:
        """The configured target a U's notify socket names (PROTOCOL.md §9.2)."""
        for spec in self.specs:
            if not spec.wildcard and spec.name == name:
                return spec
        if ":" not in name:
            for spec in self.specs:
                if spec.family == socket.AF_UNIX and spec.address == name:
                    return spec
            return None
        for spec in self.specs:
            if spec.wildcard and spec.name == name:
                return spec
        return None

    def resolve(self, spec: TargetSpec, peer: Sender) -> tuple[int, object]:
        """The concrete (family, address) for a session; %%CC_SELF%% uses the sender's IPv4."""
        if spec.family == socket.AF_UNIX:
            return spec.family, spec.address
        host = peer.ipv4_host if spec.wildcard else spec.address
        return spec.family, (host, spec.port)

    def send(self, dest: tuple[int, object], tag: bytes) -> None:
        target = self.targets.get(dest)
        if target is None:
            target = self.targets[dest] = Target(*dest, counters=self.counters)
        target.submit(tag + b"\n")

    def close(self) -> None:
        for target in self.targets.values():
            target.close()


def _is_port(text: str) -> bool:
    """1..65535 in ASCII decimal (str.isdigit() alone also takes "²" and huge numbers)."""
    return text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536
