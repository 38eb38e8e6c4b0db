"""The --metrics HTTP endpoint: /metrics, /health and /sessions, served in the hub.

A scraper never gets the daemon's attention for longer than it takes to build one
answer: connections are capped (further ones wait in the kernel's backlog), every
read and write has a timeout, and a connection lives at most CONNECTION_LIFETIME_S
however slowly it trickles. Media and commands are served between two answers.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

import gevent
from gevent import Greenlet
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from rtpp.observe import sessions, source
from rtpp.spawn import spawn_logged

log = logging.getLogger(__name__)

#: Connections served at once; more wait in the listen backlog.
MAX_CONNECTIONS = 16
BACKLOG = 64
#: A read or write that makes no progress for this long ends the connection.
IO_TIMEOUT_S = 5.0
#: No connection is kept longer than this, busy or not.
CONNECTION_LIFETIME_S = 15.0
INDEX = b"rtpproxy: /metrics (Prometheus), /health, /sessions?limit=N&offset=N&sort=KEY\n"

Response = tuple[str, list[tuple[str, str]], bytes]


def bind_listener(host: str, port: int, shared: bool = False) -> socket.socket:
    """The listening socket (bound before the daemon detaches; OSError on failure).

    `shared`: a live handoff's successor binds the port while the old process, which
    has shared it (`share_port`), still serves it; the kernel lets only processes of
    the same user share a port, and never one whose socket did not ask to.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _ConnectionPool(Pool):
    """At most MAX_CONNECTIONS served at once, each in a greenlet whose crash is logged."""

    def spawn(self, func: Callable, *args: Any, **kwargs: Any) -> Greenlet:
        return spawn_logged(func, *args, name="metrics connection", group=self)


class _TimedHandler(WSGIHandler):
    """Per-connection I/O timeouts and a lifetime cap."""

    def handle(self) -> None:
        self.socket.settimeout(IO_TIMEOUT_S)
        with gevent.Timeout(CONNECTION_LIFETIME_S, False):
            super().handle()

    def log_request(self) -> None:
        pass  # no access log


class Endpoint:
    """The WSGI application and its server."""

    def __init__(self, app: Any, registry: CollectorRegistry) -> None:
        self.app = app
        self.registry = registry
        self.server: WSGIServer | None = None

    def start(self, listener: socket.socket) -> None:
        self.server = WSGIServer(
            listener,
            self.wsgi,
            spawn=_ConnectionPool(MAX_CONNECTIONS),
            handler_class=_TimedHandler,
            log=None,
            error_log=log,
        )
        self.server.start()
        host, port = listener.getsockname()[:2]
        log.info("metrics endpoint on %s", source.addr_text((host, port)))

    def share_port(self) -> None:
        """Let a live handoff's successor bind the same port (`bind_listener(shared=True)`)."""
        if self.server is not None and self.server.socket is not None:
            self.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=1.0)
            self.server = None

    def wsgi(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        status, headers, body = self.respond(environ)
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    def respond(self, environ: dict) -> Response:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _text("405 Method Not Allowed", b"only GET and HEAD\n")
        path = environ.get("PATH_INFO", "")
        try:
            if path == "/metrics":
                return self.metrics(environ.get("HTTP_ACCEPT", ""))
            if path == "/health":
                return self.health()
            if path == "/sessions":
                return self.sessions(environ.get("QUERY_STRING", ""))
        except Exception:
            log.exception("metrics endpoint: %s failed", path)
            return _text("500 Internal Server Error", b"internal error\n")
        if path == "/":
            return _text("200 OK", INDEX)
        return _text("404 Not Found", b"not found\n")

    def metrics(self, accept: str) -> Response:
        encoder, content_type = choose_encoder(accept)
        return "200 OK", [("Content-Type", content_type)], encoder(self.registry)

    def health(self) -> Response:
        code, text = health_of(*source.admission(self.app))
        status = "200 OK" if code == 200 else "503 Service Unavailable"
        return _text(status, text.encode() + b"\n")

    def sessions(self, query_text: str) -> Response:
        try:
            query = sessions.parse_query(query_text)
        except sessions.QueryError as exc:
            return _text("400 Bad Request", f"{exc}\n".encode())
        body = json.dumps(sessions.page(self.app, query), separators=(",", ":"))
        return "200 OK", [("Content-Type", "application/json")], body.encode()


def health_of(draining: bool, overloaded: bool, load: float) -> tuple[int, str]:
    """200 while new sessions are welcome; 503 and the reason when they are not."""
    if draining:
        return 503, "draining: new sessions are refused (E99)"
    if overloaded:
        return 503, f"overloaded: {load * 100:.0f}% of a core in the last second"
    return 200, "OK"


def _text(status: str, body: bytes) -> Response:
    return status, [("Content-Type", "text/plain; charset=utf-8")], body
