"""Control listeners: UDP/UDP6 datagrams, unix one-shot, continuous streams, stdio.

Every listener has the same verbs as a gevent server: `bind()` (done before
daemonizing and dropping privileges), `start(app)`, `close()` (stop accepting,
release the socket) and `stop(timeout)` (close, then end client greenlets).
All are idempotent. Commands run through `app.execute(line, peer) -> str`.

For a live handoff (rtpp.handoff) a listener can also `pause()` (finish the commands
in progress, then stop reading: what clients send next waits in the kernel),
`resume()`, `export(fds)` its sockets and connections, and `adopt(doc, fds)` them in
the next process instead of binding.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import re
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import gevent
from gevent.event import Event
from gevent.greenlet import Greenlet
from gevent.pool import Group

from rtpp.control.peer import Peer, cookie_overhead
from rtpp.control.rcache import ReplyCache
from rtpp.control.spec import ControlSpec
from rtpp.daemon import (
    chown_socket,
    clear_socket_path,
    socket_in_use,
    socket_inode,
    unlink_socket,
)
from rtpp.ratelimit import LogThrottle
from rtpp.sdnotify import listen_fds
from rtpp.spawn import spawn_logged

log = logging.getLogger(__name__)

BUF_SIZE = 8192
MAX_COMMAND = BUF_SIZE - 1
UNIX_PATH_MAX = 107
#: accept queue of stream listeners: dozens of one-shot clients may connect at once
BACKLOG = 128
UDP_RCVBUF = 64 * 1024
E5_REPLY = b"E5\n"
_SEPARATORS = re.compile(rb"[ \t\r\n]+")


class App(Protocol):
    counters: object

    def execute(self, line: bytes, peer: Peer) -> str: ...


class BindError(Exception):
    """`rtpproxy: can't bind to a socket: <spec>: <strerror>`."""

    def __init__(self, spec: ControlSpec, reason: str) -> None:
        super().__init__(f"can't bind to a socket: {spec.text}: {reason}")
        self.spec = spec
        self.reason = reason


def encode_reply(text: str) -> bytes:
    return text.encode("latin-1", "replace")


class Paused(gevent.GreenletExit):
    """Ends a greenlet for a handoff pause: its connection stays open."""


class Listener(ABC):
    """Common lifecycle; subclasses implement `_bind()` and `_serve_loop()`."""

    #: seconds `stop()` waits for client greenlets before killing them
    stop_timeout: float = 1.0

    def __init__(self, spec: ControlSpec) -> None:
        self.spec = spec
        self.sock: socket.socket | None = None
        self.app: App | None = None
        self._loop: Greenlet | None = None
        self._clients = Group()
        self._closed = Event()
        #: greenlets between reading a command and sending its reply (see `pause`)
        self._busy = 0
        self._pausing = False

    @property
    def started(self) -> bool:
        return self._loop is not None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def bind(self) -> None:
        if self.sock is None and not self.closed:
            self._bind()

    @abstractmethod
    def _bind(self) -> None:
        """Create and bind `self.sock`."""

    def start(self, app: App) -> None:
        if self.started or self.closed:
            return
        self.bind()
        self.app = app
        self._loop = spawn_logged(self._serve_loop, name=f"serve_loop {self.spec.text}")

    @abstractmethod
    def _serve_loop(self) -> None:
        """Serve until closed."""

    def close(self) -> None:
        if self.closed:
            return
        self._closed.set()
        if self._loop is not None and self._loop is not gevent.getcurrent():
            self._loop.kill(block=False)
        if self.sock is not None:
            self.sock.close()
        self._cleanup()

    def _cleanup(self) -> None:  # noqa: B027 - optional hook
        """Release what `close()` leaves behind (e.g. a unix socket file)."""

    def stop(self, timeout: float | None = None) -> None:
        self.close()
        self._clients.join(timeout=self.stop_timeout if timeout is None else timeout)
        self._clients.kill(block=True, timeout=1)

    def serve_forever(self, app: App) -> None:
        self.start(app)
        self._closed.wait()

    # -- live handoff

    def pause(self) -> None:
        """Stop reading. A greenlet waiting for input ends at once (nothing read yet);
        one running a command ends after its reply (`_check_pause`). `wait_idle` waits
        for both."""
        self._pausing = True
        loop = self._loop
        if loop is not None and not self._busy:
            loop.kill(Paused, block=False)

    def _check_pause(self) -> None:
        if self._pausing:
            raise Paused

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every greenlet stopped by `pause` has ended; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._busy and (self._loop is None or self._loop.dead):
                if self._clients.join(timeout=0):
                    return True
            gevent.sleep(0.002)
        return False

    def resume(self) -> None:
        """Serve again after `pause` (the handoff did not happen)."""
        self._pausing = False
        if self.closed or self.app is None:
            return
        if self._loop is None or self._loop.dead:
            self._loop = spawn_logged(self._serve_loop, name=f"serve_loop {self.spec.text}")

    def export(self, add_fd: Callable[[int], int]) -> dict:
        """This listener's sockets and state for the next process (after `pause`)."""
        return {
            "spec": self.spec.text,
            "fd": None if self.sock is None else add_fd(self.sock.fileno()),
        }

    def adopt(self, doc: dict, take_fd: Callable[[int], int]) -> None:
        """Take over what `export` described instead of binding."""
        if doc.get("fd") is not None:
            self.sock = socket.socket(fileno=take_fd(doc["fd"]))

    def release(self) -> None:
        """The next process serves now: close our descriptors, remove nothing."""
        self._closed.set()
        if self.sock is not None:
            self.sock.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _execute(self, line: bytes, peer: Peer) -> bytes:
        assert self.app is not None
        return encode_reply(self.app.execute(line, peer))


# ---------------------------------------------------------------- datagrams


def _inet_family(spec: ControlSpec) -> int:
    return socket.AF_INET6 if spec.ipv6 else socket.AF_INET


def resolve_inet(spec: ControlSpec, socktype: int, no_resolve: bool) -> tuple:
    family = _inet_family(spec)
    host = spec.host or None
    flags = socket.AI_PASSIVE | (socket.AI_NUMERICHOST if no_resolve else 0)
    try:
        infos = socket.getaddrinfo(host, spec.port, family, socktype, 0, flags)
    except socket.gaierror as exc:
        raise BindError(spec, exc.strerror) from None
    return infos[0][4]


class UdpListener(Listener):
    """One datagram = one command; the first token is the cookie (PROTOCOL.md 1.2, 2)."""

    def __init__(
        self, spec: ControlSpec, rcache: ReplyCache | None = None, no_resolve: bool = False
    ) -> None:
        super().__init__(spec)
        self.rcache = rcache if rcache is not None else ReplyCache()
        self.no_resolve = no_resolve

    def _bind(self) -> None:
        addr = resolve_inet(self.spec, socket.SOCK_DGRAM, self.no_resolve)
        sock = socket.socket(_inet_family(self.spec), socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise BindError(self.spec, exc.strerror or str(exc)) from None
        self.sock = sock

    @property
    def address(self) -> tuple:
        assert self.sock is not None
        return self.sock.getsockname()

    def _serve_loop(self) -> None:
        assert self.sock is not None
        self.sock.settimeout(self.rcache.sweep_s)  # cached replies expire when idle too
        while not self.closed:
            try:
                data, addr = self.sock.recvfrom(BUF_SIZE)
            except TimeoutError:
                self.rcache.maybe_sweep(time.monotonic())
                continue
            except OSError as exc:
                if self.closed:
                    return
                log.debug("control recvfrom: %s", exc)
                continue
            self._busy += 1
            try:
                self.handle(data[:MAX_COMMAND], addr)
            finally:
                self._busy -= 1
            self._check_pause()

    def handle(self, data: bytes, addr: tuple) -> None:
        reply = self._reply_for(data, addr)
        if reply is None:
            return
        try:
            self.sock.sendto(reply, addr)  # type: ignore[union-attr]
        except OSError as exc:
            log.debug("control sendto %s: %s", addr, exc)

    def _reply_for(self, data: bytes, addr: tuple) -> bytes | None:
        parts = _SEPARATORS.split(data.lstrip(b" \t\r\n"), maxsplit=1)
        cookie = parts[0]
        if not cookie:
            return self._execute(b"", Peer(self.spec.kind, addr))
        peer = Peer(self.spec.kind, addr, cookie_overhead(cookie))
        now = time.monotonic()
        cached = self.rcache.lookup(cookie, now)
        if cached is not None:
            self.app.counters.incr("ncmds_rcvd_ndups")  # type: ignore[union-attr]
            return cached
        line = parts[1] if len(parts) > 1 else b""
        reply = cookie + b" " + self._execute(line, peer)
        self.rcache.insert(cookie, reply, now)
        return reply


# ---------------------------------------------------------------- streams


@dataclass(slots=True, eq=False)
class StreamClient:
    """What eviction needs to know about one connection."""

    conn: socket.socket
    #: completed at least one command: never dropped to make room for newcomers
    proven: bool = False
    #: monotonic time since which a partial line has been waiting (None: no partial line)
    stalled_since: float | None = None
    #: read and not yet executed: the start of the next line
    buf: bytes = b""
    #: the connection outlives its greenlet (a handoff pause)
    kept: bool = False


class StreamListener(Listener):
    """unix (one-shot), cunix, tcp, tcp6, systemd: one greenlet per client.

    At most `max_clients` connections are served. When full (or out of descriptors),
    room is made by dropping the oldest connection that never completed a command,
    else the one whose partial line has waited longest (over `stall_s`); a client that
    has completed commands and is not stuck mid-line is never dropped for a newcomer,
    which is refused instead. So a flood of idle connections cannot cut off a working
    controller.
    """

    #: concurrent connections per listener
    max_clients: int = 256
    #: seconds a partial line may wait before its (proven) connection may be dropped
    stall_s: float = 5.0
    #: seconds a one-shot client may take to send its command
    oneshot_timeout_s: float = 10.0
    #: seconds a persistent client may stay silent (None: forever)
    idle_timeout_s: float | None = 3600.0
    #: seconds a reply may take to be written
    send_timeout_s: float = 10.0

    def __init__(
        self,
        spec: ControlSpec,
        no_resolve: bool = False,
        owner: tuple[int | None, int | None, int] | None = None,
    ) -> None:
        super().__init__(spec)
        self.no_resolve = no_resolve
        self.owner = owner
        self._active: dict[Greenlet, StreamClient] = {}
        self._bound_path: str | None = None
        self._bound_inode: tuple[int, int] | None = None
        self._accept_log = LogThrottle()
        self._full_log = LogThrottle()
        #: connections whose greenlet a handoff pause ended, with what they had read
        self._kept: list[StreamClient] = []
        #: client greenlets between reading a command and sending its reply
        self._running: set[Greenlet] = set()

    @property
    def one_shot(self) -> bool:
        return self.spec.kind == "unix"

    @property
    def peer_kind(self) -> str:
        return self.spec.kind

    def _bind(self) -> None:
        if self.spec.kind in ("unix", "cunix"):
            self.sock = self._bind_unix()
        elif self.spec.kind == "systemd":
            self.sock = self._adopt_systemd()
        else:
            self.sock = self._bind_tcp()

    def _bind_unix(self) -> socket.socket:
        path = self.spec.path or ""
        if len(path.encode()) > UNIX_PATH_MAX:
            raise BindError(self.spec, "socket name is too long")
        if socket_in_use(path):
            raise BindError(self.spec, "Address already in use (a running process serves it)")
        if clear_socket_path(path) == "file":
            log.warning("control socket %s: removed the empty file at that path", path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            self._bound_path = path
            self._bound_inode = socket_inode(path)
            if self.owner is not None:
                chown_socket(path, *self.owner)
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            raise BindError(self.spec, exc.strerror or str(exc)) from None
        return sock

    def _bind_tcp(self) -> socket.socket:
        addr = resolve_inet(self.spec, socket.SOCK_STREAM, self.no_resolve)
        sock = socket.socket(_inet_family(self.spec), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            raise BindError(self.spec, exc.strerror or str(exc)) from None
        return sock

    def _adopt_systemd(self) -> socket.socket:
        fds = listen_fds()
        if not fds:
            raise BindError(self.spec, "no socket passed by systemd socket activation")
        if len(fds) > 1:
            raise BindError(self.spec, "Too many file descriptors received.")
        return socket.socket(fileno=fds[0])

    @property
    def address(self):
        assert self.sock is not None
        return self.sock.getsockname()

    def _cleanup(self) -> None:
        if self._bound_path is not None:
            # Only the socket this process bound: a later instance may own the path now.
            unlink_socket(self._bound_path, self._bound_inode)
            self._bound_path = None
        for client in list(self._active.values()):
            _close_quietly(client.conn)

    def _serve_loop(self) -> None:
        assert self.sock is not None
        while not self.closed:
            try:
                conn, addr = self.sock.accept()
            except OSError as exc:
                if self.closed:
                    return
                out_of_fds = exc.errno in (errno.EMFILE, errno.ENFILE)
                if out_of_fds and self._drop_one("out of file descriptors"):
                    gevent.sleep(0)
                    continue
                self._accept_log.log(
                    log, logging.WARNING, "control accept on %s: %s", self.spec.text, exc
                )
                gevent.sleep(0.1 if out_of_fds else 0)
                continue
            self._admit(conn, addr)

    def _admit(self, conn: socket.socket, addr) -> None:
        if len(self._active) >= self.max_clients and not self._drop_one("too many connections"):
            self._full_log.log(
                log,
                logging.WARNING,
                "too many control connections on %s, all of them working: refusing a new one",
                self.spec.text,
            )
            _close_quietly(conn)
            return
        self._serve_client(StreamClient(conn), addr)

    def _serve_client(self, client: StreamClient, addr) -> None:
        greenlet = spawn_logged(self._client, client, addr, name="client_loop", group=self._clients)
        greenlet.rawlink(self._forget)
        self._active[greenlet] = client

    def _drop_one(self, why: str) -> bool:
        """Close the connection eviction picks (see the class docstring); False if none."""
        victim = pick_victim(self._active, time.monotonic(), self.stall_s)
        if victim is None:
            return False
        client = self._active.pop(victim)
        self._full_log.log(
            log,
            logging.WARNING,
            "%s on %s: dropping an idle control connection",
            why,
            self.spec.text,
        )
        _close_quietly(client.conn)
        victim.kill(block=False)
        return True

    def _forget(self, greenlet: Greenlet) -> None:
        client = self._active.pop(greenlet, None)
        if client is not None and not client.kept:
            _close_quietly(client.conn)

    def _progress(self, completed: bool, partial: bool) -> None:
        """Note what the current client's last read achieved."""
        client = self._active.get(gevent.getcurrent())
        if client is None:
            return
        if completed:
            client.proven = True
            client.stalled_since = None
        if not partial:
            client.stalled_since = None
        elif client.stalled_since is None:
            client.stalled_since = time.monotonic()

    def _client(self, client: StreamClient, addr) -> None:
        conn = client.conn
        peer = Peer(self.peer_kind, addr if isinstance(addr, tuple) else None)
        try:
            if self.one_shot:
                self._one_shot(conn, peer)
            else:
                self._lines(client, peer)
        except Paused:
            if not client.kept:
                client.kept = True
                self._kept.append(client)
        except (OSError, TimeoutError) as exc:
            log.debug("control client %s: %s", peer, exc)
        finally:
            if not client.kept:
                _close_quietly(conn)

    def _one_shot(self, conn: socket.socket, peer: Peer) -> None:
        """A single read is the whole command; LF optional; EOF -> no reply."""
        conn.settimeout(self.oneshot_timeout_s)
        data = conn.recv(MAX_COMMAND)
        if not data:
            return
        self._enter()
        try:
            reply = self._execute(data, peer)
            conn.settimeout(self.send_timeout_s)
            conn.sendall(reply)
        finally:
            self._leave()

    def _lines(self, client: StreamClient, peer: Peer) -> None:
        conn = client.conn
        while True:
            if b"\n" not in client.buf:
                conn.settimeout(self.idle_timeout_s)
                data = conn.recv(BUF_SIZE)
                if not data:
                    return
                client.buf += data
            self._enter()
            try:
                lines = client.buf.split(b"\n")
                client.buf = lines.pop()
                if len(client.buf) >= BUF_SIZE:
                    log.debug("control client %s: line too long, closing", peer)
                    return
                for line in lines:
                    self._reply_line(conn, line, peer)
            finally:
                self._leave()
            self._progress(completed=bool(lines), partial=bool(client.buf))
            self._check_pause()

    def _reply_line(self, conn: socket.socket, line: bytes, peer: Peer) -> None:
        reply = self._execute(line[:MAX_COMMAND], peer)
        conn.settimeout(self.send_timeout_s)
        conn.sendall(reply)

    # -- live handoff

    def _enter(self) -> None:
        self._busy += 1
        self._running.add(gevent.getcurrent())

    def _leave(self) -> None:
        self._busy -= 1
        self._running.discard(gevent.getcurrent())

    def pause(self) -> None:
        super().pause()
        if self._loop is not None:
            self._loop.kill(Paused, block=False)  # accept() has not run: nothing lost
        for greenlet, client in list(self._active.items()):
            if not greenlet.dead and greenlet not in self._running:
                # Kept here: a greenlet killed before it first ran never sees Paused.
                client.kept = True
                self._kept.append(client)
                greenlet.kill(Paused, block=False)

    def resume(self) -> None:
        super().resume()
        if self.closed or self.app is None:
            return
        kept, self._kept = self._kept, []
        for client in kept:
            client.kept = False
            self._serve_client(client, None)

    def export(self, add_fd: Callable[[int], int]) -> dict:
        doc = super().export(add_fd)
        doc["path"] = self._bound_path
        doc["inode"] = list(self._bound_inode) if self._bound_inode else None
        doc["clients"] = [
            {
                "fd": add_fd(c.conn.fileno()),
                "buf": base64.b64encode(c.buf).decode(),
                "proven": c.proven,
            }
            for c in self._kept
        ]
        return doc

    def adopt(self, doc: dict, take_fd: Callable[[int], int]) -> None:
        super().adopt(doc, take_fd)
        self._bound_path = doc.get("path")
        inode = doc.get("inode")
        self._bound_inode = (inode[0], inode[1]) if inode else None
        self._kept = [
            StreamClient(
                socket.socket(fileno=take_fd(c["fd"])),
                proven=bool(c.get("proven")),
                buf=base64.b64decode(c.get("buf", "")),
                kept=True,
            )
            for c in doc.get("clients", ())
        ]

    def start(self, app: App) -> None:
        super().start(app)
        self.resume()

    def release(self) -> None:
        super().release()
        self._bound_path = None  # the next process removes it when it stops
        for client in self._kept:
            _close_quietly(client.conn)
        self._kept = []


def pick_victim(
    clients: dict[Greenlet, StreamClient], now: float, stall_s: float
) -> Greenlet | None:
    """The connection to drop for room: the oldest that never completed a command, else
    the proven one stuck longest (over `stall_s`) on a partial line, else None.

    `clients` is in connection order.
    """
    stuck: Greenlet | None = None
    stuck_since = now - stall_s
    for greenlet, client in clients.items():
        if not client.proven:
            return greenlet
        since = client.stalled_since
        if since is not None and since <= stuck_since:
            stuck, stuck_since = greenlet, since
    return stuck


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


# ---------------------------------------------------------------- stdio


class StdioListener(Listener):
    """stdio:/stdioc: LF-terminated commands on stdin, replies on stdout.

    `on_eof` (graceful shutdown) is called on EOF when given.
    """

    def __init__(
        self,
        spec: ControlSpec,
        on_eof: Callable[[], None] | None = None,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
    ) -> None:
        super().__init__(spec)
        self.on_eof = on_eof
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd

    def _bind(self) -> None:
        pass

    def _serve_loop(self) -> None:
        peer = Peer("stdio", None)
        pool = gevent.get_hub().threadpool
        buf = b""
        while not self.closed:
            data = pool.apply(_read_or_eof, (self.stdin_fd,))
            if not data:
                break
            buf += data
            lines = buf.split(b"\n")
            buf = lines.pop()
            for line in lines:
                self._write(pool, self._execute(line[:MAX_COMMAND], peer))
            if len(buf) >= BUF_SIZE:
                log.error("stdio: command too long, discarded")
                buf = b""
        if not self.closed and self.on_eof is not None:
            log.info("EOF on %s", self.spec.text)
            self.on_eof()

    def _write(self, pool, reply: bytes) -> None:
        try:
            pool.apply(_write_all, (self.stdout_fd, reply))
        except OSError as exc:
            log.error("stdio: write failed: %s", exc)


def _read_or_eof(fd: int) -> bytes:
    try:
        return os.read(fd, BUF_SIZE)
    except OSError:
        return b""


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


# ---------------------------------------------------------------- all of them


class ControlServer:
    """Every `-s` listener of the daemon."""

    def __init__(self, listeners: Iterable[Listener]) -> None:
        self.listeners = list(listeners)

    def bind(self) -> None:
        for listener in self.listeners:
            listener.bind()

    def start(self, app: App) -> None:
        for listener in self.listeners:
            listener.start(app)

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()

    def stop(self, timeout: float = 1.0) -> None:
        for listener in self.listeners:
            listener.stop(timeout)


def make_listeners(
    specs: Iterable[ControlSpec],
    *,
    no_resolve: bool = False,
    owner: tuple[int | None, int | None, int] | None = None,
    on_eof: Callable[[], None] | None = None,
) -> list[Listener]:
    """One listener per spec. UDP listeners share one reply cache (keyed by cookie).

    `on_eof` is given to `stdioc:` and to `stdio:` when no udp/udp6 socket exists.
    """
    specs = list(specs)
    rcache = ReplyCache()
    has_datagram = any(s.datagram for s in specs)
    listeners: list[Listener] = []
    for spec in specs:
        if spec.datagram:
            listeners.append(UdpListener(spec, rcache, no_resolve))
        elif spec.stdio:
            eof = on_eof if spec.kind == "stdioc" or not has_datagram else None
            listeners.append(StdioListener(spec, eof))
        else:
            listeners.append(StreamListener(spec, no_resolve, owner))
    return listeners
