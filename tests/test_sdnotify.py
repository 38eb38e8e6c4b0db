"""sd_notify over a real datagram socket standing in for systemd's: the messages, and
the barrier that returns once the manager has read everything sent before it."""

from __future__ import annotations

import array
import os
import socket
import threading

import pytest

from rtpp import sdnotify


@pytest.fixture
def manager(tmp_path, monkeypatch) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    yield sock
    sock.close()


def receive(sock: socket.socket) -> tuple[str, list[int]]:
    """One message and the descriptors it carried (as a manager reads it)."""
    fds = array.array("i")
    data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(16 * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data.decode(), list(fds)


def test_notify_sends_the_state(manager):
    assert sdnotify.notify("MAINPID=42\nREADY=1")
    assert receive(manager) == ("MAINPID=42\nREADY=1", [])


def test_without_a_manager_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.notify("READY=1")
    assert not sdnotify.barrier(1.0)


def test_the_barrier_returns_once_the_manager_has_read_up_to_it(manager):
    seen: list[str] = []

    def serve() -> None:
        for _ in range(2):
            text, fds = receive(manager)
            seen.append(text)
            for fd in fds:
                os.close(fd)  # what systemd does with the fd of BARRIER=1

    thread = threading.Thread(target=serve)
    thread.start()
    sdnotify.notify("MAINPID=42")
    assert sdnotify.barrier(10.0)
    thread.join()
    assert seen == ["MAINPID=42", "BARRIER=1"]


def test_a_barrier_nobody_answers_times_out(manager):
    assert not sdnotify.barrier(0.2)
    text, fds = receive(manager)
    assert text == "BARRIER=1" and len(fds) == 1
    os.close(fds[0])
