"""A live handoff as a service manager sees it, through a notify socket of the test's
own (NOTIFY_SOCKET): the old process, the main one, exits only once the manager has
read the successor's MAINPID= (a main process gone before that stops the service), and
once the old process is gone the successor names the process to supervise again, so
that the manager finds it to be its child (tests/packaging/test_systemd.py does the
same under a real systemd)."""

from __future__ import annotations

import array
import os
import signal
import socket
import time

import pytest

from helpers import pid_alive
from integration.test_handoff import HANDOFF_TIMEOUT_S, serving_pid

pytestmark = pytest.mark.timeout(120)


class Manager:
    """The service manager's end of NOTIFY_SOCKET."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def receive(self, timeout: float = HANDOFF_TIMEOUT_S) -> tuple[dict[str, str], list[int]]:
        """One message as fields, and the descriptors it carried."""
        self.sock.settimeout(timeout)
        fds = array.array("i")
        data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16 * fds.itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        return fields, list(fds)

    def close(self) -> None:
        self.sock.close()


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_the_old_process_waits_for_the_manager_then_the_main_pid_is_renamed(rtpproxy, tmp_path):
    manager = Manager(str(tmp_path / "notify"))
    try:
        proxy = rtpproxy(extra_env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert manager.receive()[0].get("READY") == "1"
        old = serving_pid(proxy)
        os.kill(old, signal.SIGUSR2)

        fields, fds = manager.receive()
        new = int(fields["MAINPID"])
        assert new != old and fields.get("READY") == "1" and not fds
        fields, (barrier,) = manager.receive()
        assert fields == {"BARRIER": "1"}
        time.sleep(1.0)  # the manager has not read it yet: the old process must wait
        assert pid_alive(old), proxy.stderr_text()[-3000:]
        os.close(barrier)
        deadline = time.monotonic() + HANDOFF_TIMEOUT_S
        while pid_alive(old):
            assert time.monotonic() < deadline, proxy.stderr_text()[-3000:]
            time.sleep(0.05)
        proxy.daemon_pid = new

        named: list[int] = []
        # A one-file build's daemon runs under its bootloader, the process to supervise.
        supervised = parent_of(new) if os.environ.get("RTPP_BIN") else new
        while not named or named[-1] != supervised:
            fields, fds = manager.receive()
            for fd in fds:
                os.close(fd)  # answers a barrier
            if "MAINPID" in fields:
                named.append(int(fields["MAINPID"]))
        if supervised == new:  # the same pid again would not be looked at
            assert len(named) == 2 and named[0] not in (new, old), named
            fields, fds = manager.receive()  # the stand-in lives on until this is answered
            assert fields == {"BARRIER": "1"} and len(fds) == 1
            os.close(fds[0])
        while f"systemd supervises process {supervised}" not in proxy.stderr_text():
            assert time.monotonic() < deadline, proxy.stderr_text()[-3000:]
            time.sleep(0.05)
        assert proxy.cmd("V") == "20040107"
    finally:
        manager.close()
