"""The handoff channel: one SOCK_SEQPACKET socket pair between the old and new process.

A message is a kind (a short ASCII word), a body (bytes: the state document is JSON)
and file descriptors. On the wire it is a head packet (`H` + JSON: kind, body size,
descriptor count), then the descriptors in packets of at most `FDS_PER_PACKET` (`F`,
SCM_RIGHTS), then the body in chunks (`D`). Sequenced packets keep the boundaries, so
descriptors never straddle two reads.
"""

from __future__ import annotations

import array
import json
import os
import socket
from dataclasses import dataclass, field

#: The kernel takes at most 253 descriptors in one SCM_RIGHTS message.
FDS_PER_PACKET = 250
CHUNK_BYTES = 60000
PACKET_BYTES = CHUNK_BYTES + 64
_FD_SIZE = array.array("i").itemsize


class ChannelError(Exception):
    """The peer closed the channel, broke the framing or did not answer in time."""


@dataclass
class Message:
    kind: str
    body: bytes = b""
    fds: list[int] = field(default_factory=list)

    def json(self) -> dict:
        return json.loads(self.body) if self.body else {}

    def close_fds(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(ours, theirs): `theirs` is inheritable, for the process about to be started."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.set_inheritable(True)
    return ours, theirs


class Channel:
    """Message framing over a connected SOCK_SEQPACKET socket (gevent-cooperative when
    the socket is a patched one)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        if sock.type != socket.SOCK_SEQPACKET:
            sock.detach()
            raise ChannelError(f"descriptor {fd} is not a handoff channel")
        return cls(sock)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send(self, kind: str, body: bytes | dict = b"", fds: list[int] | None = None) -> None:
        if isinstance(body, dict):
            body = json.dumps(body, separators=(",", ":")).encode()
        fds = list(fds or ())
        head = json.dumps({"kind": kind, "size": len(body), "nfds": len(fds)}).encode()
        try:
            self.sock.sendall(b"H" + head)
            for i in range(0, len(fds), FDS_PER_PACKET):
                socket.send_fds(self.sock, [b"F"], fds[i : i + FDS_PER_PACKET])
            for i in range(0, len(body), CHUNK_BYTES):
                self.sock.sendall(b"D" + body[i : i + CHUNK_BYTES])
        except OSError as exc:
            raise ChannelError(f"sending {kind}: {exc}") from None

    def recv(self, timeout: float | None = None) -> Message:
        """The next message; ChannelError on EOF, bad framing or `timeout` seconds."""
        self.sock.settimeout(timeout)
        fds: list[int] = []
        try:
            head = self._packet(fds)
            if head[:1] != b"H":
                raise ChannelError("handoff channel: expected a message head")
            meta = json.loads(head[1:])
            kind, size, nfds = str(meta["kind"]), int(meta["size"]), int(meta["nfds"])
            while len(fds) < nfds:
                if self._packet(fds)[:1] != b"F":
                    raise ChannelError("handoff channel: expected descriptors")
            body = bytearray()
            while len(body) < size:
                chunk = self._packet(fds)
                if chunk[:1] != b"D":
                    raise ChannelError("handoff channel: expected data")
                body += chunk[1:]
        except ChannelError:
            Message("", fds=fds).close_fds()
            raise
        except TimeoutError:
            Message("", fds=fds).close_fds()
            raise ChannelError("no answer in time") from None
        except (OSError, ValueError, KeyError) as exc:
            Message("", fds=fds).close_fds()
            raise ChannelError(f"handoff channel: {exc}") from None
        if len(fds) != nfds or len(body) != size:
            Message("", fds=fds).close_fds()
            raise ChannelError("handoff channel: message size mismatch")
        return Message(kind, bytes(body), fds)

    def _packet(self, fds: list[int]) -> bytes:
        data, ancdata, flags, _ = self.sock.recvmsg(
            PACKET_BYTES, socket.CMSG_SPACE(FDS_PER_PACKET * _FD_SIZE)
        )
        for level, ctype, cdata in ancdata:
            if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(cdata[: len(cdata) - len(cdata) % _FD_SIZE])
                fds.extend(got)
        for fd in fds:
            os.set_inheritable(fd, False)
        if not data:
            raise ChannelError("the other process closed the handoff channel")
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ChannelError("handoff channel: truncated packet")
        return data
