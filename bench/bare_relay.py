#!/usr/bin/env python3
"""Bare single-threaded epoll UDP relay: the floor for a relay written in Python.

It does nothing per packet but receive and forward: no latching, no counters,
no timers.  It speaks just enough of the rtpproxy UDP control protocol (cookie,
V, VF, U, L, D) to be driven by bench/loadgen:

* ``U <callid> <addr> <port> <ftag> [<ttag>]`` creates the session on first
  sight, stores the address for the caller leg and answers the port of the
  callee-facing leg (``<port> <local addr>``);
* ``L <callid> <addr> <port> <ftag> <ttag>`` stores the address for the callee
  leg and answers the port of the caller-facing leg (``0`` if no session);
* ``D <callid> ...`` closes the session's sockets (``0``, or ``E50``).

Usage: bare_relay.py --ctl 127.0.0.1:PORT [--addr 127.0.0.1] [--port-min N] [--port-max N]
"""

from __future__ import annotations

import argparse
import errno
import select
import signal
import socket
import sys


class Leg:
    """One local socket; packets received on it go out of ``peer`` to ``peer.remote``."""

    __slots__ = ("sock", "fd", "remote", "peer")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.remote: tuple[str, int] | None = None
        self.peer: Leg | None = None


class Session:
    """Leg ``callee`` faces the callee (port answered to U), ``caller`` the caller."""

    __slots__ = ("callee", "caller", "caller_remote")

    def __init__(self, callee: Leg) -> None:
        self.callee = callee
        self.caller: Leg | None = None
        self.caller_remote: tuple[str, int] | None = None


class Relay:
    def __init__(self, ctl: tuple[str, int], addr: str, port_min: int, port_max: int) -> None:
        self.addr = addr
        self.ports = list(range(port_min, port_max + 1))
        self.next_port = 0
        self.sessions: dict[bytes, Session] = {}
        self.ep = select.epoll()
        self.ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ctl.bind(ctl)
        self.ctl.setblocking(False)
        self.ep.register(self.ctl.fileno(), select.EPOLLIN)
        self.legs: dict[int, Leg] = {}

    # -- control ---------------------------------------------------------------

    def alloc(self) -> Leg:
        for _ in range(len(self.ports)):
            port = self.ports[self.next_port]
            self.next_port = (self.next_port + 1) % len(self.ports)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((self.addr, port))
            except OSError as e:
                s.close()
                if e.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            s.setblocking(False)
            leg = Leg(s)
            self.legs[leg.fd] = leg
            self.ep.register(leg.fd, select.EPOLLIN)
            return leg
        raise OSError(errno.EADDRINUSE, "port range exhausted")

    def close_leg(self, leg: Leg | None) -> None:
        if leg is None:
            return
        self.ep.unregister(leg.fd)
        del self.legs[leg.fd]
        leg.sock.close()

    def command(self, words: list[bytes]) -> bytes:
        if not words:
            return b"E5"
        verb = words[0][:1].upper()
        if verb == b"V":
            return b"1" if words[0][:2].upper() == b"VF" else b"20040107"
        if verb in (b"U", b"L"):
            if len(words) < 5:
                return b"E1"
            callid, remote = words[1], (words[2].decode(), int(words[3]))
            sess = self.sessions.get(callid)
            try:
                if verb == b"U":
                    if sess is None:
                        sess = self.sessions[callid] = Session(self.alloc())
                    sess.caller_remote = remote
                    if sess.caller is not None:
                        sess.caller.remote = remote
                    mine = sess.callee
                else:
                    if sess is None:
                        return b"0"
                    if sess.caller is None:
                        sess.caller = self.alloc()
                        sess.caller.remote = sess.caller_remote
                        sess.caller.peer, sess.callee.peer = sess.callee, sess.caller
                    sess.callee.remote = remote
                    mine = sess.caller
            except OSError:
                return b"E72"
            return b"%d %s" % (mine.sock.getsockname()[1], self.addr.encode())
        if verb == b"D":
            sess = self.sessions.pop(words[1], None) if len(words) >= 3 else None
            if sess is None:
                return b"E50"
            self.close_leg(sess.callee)
            self.close_leg(sess.caller)
            return b"0"
        return b"E1"

    def on_control(self) -> None:
        while True:
            try:
                data, peer = self.ctl.recvfrom(8192)
            except BlockingIOError:
                return
            words = data.split()
            if not words:
                self.ctl.sendto(b"E5\n", peer)
                continue
            try:
                body = self.command(words[1:])
            except (ValueError, UnicodeDecodeError, IndexError):
                body = b"E1"
            self.ctl.sendto(words[0] + b" " + body + b"\n", peer)

    # -- media -----------------------------------------------------------------

    def run(self) -> None:
        ctl_fd = self.ctl.fileno()
        legs = self.legs
        poll = self.ep.poll
        while True:
            for fd, _ev in poll():
                if fd == ctl_fd:
                    self.on_control()
                    continue
                leg = legs.get(fd)
                if leg is None:
                    continue
                try:
                    data = leg.sock.recv(2048)
                except OSError:
                    continue
                peer = leg.peer
                if peer is None or peer.remote is None:
                    continue
                try:
                    peer.sock.sendto(data, peer.remote)
                except OSError:
                    pass


def hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctl", type=hostport, required=True, help="control IP:PORT (UDP)")
    ap.add_argument("--addr", default="127.0.0.1", help="local media address")
    ap.add_argument("--port-min", type=int, default=20000)
    ap.add_argument("--port-max", type=int, default=30000)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    relay = Relay(args.ctl, args.addr, args.port_min, args.port_max)
    try:
        relay.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
