"""Live handoff of a daemon run in a terminal's foreground job (`rtpproxy -f` at a shell
prompt): the old process stays as the job, holding nothing, and Ctrl-C at the terminal
still stops the daemon, however many handoffs later.

Without a terminal the old process exits: `hand_over` in test_handoff checks that on
every handoff there."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from helpers import Proxy, pid_alive
from integration.media_util import kamailio_call, rtp
from integration.test_handoff import hand_over, serving_pid

pytestmark = pytest.mark.timeout(90)

STOP_TIMEOUT_S = 5.0


def session_pids(sid: int) -> list[int]:
    """The live processes of session `sid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            pids.append(int(entry))
    return pids


def descriptors(pid: int) -> dict[int, str]:
    """What process `pid` holds open, past its standard streams."""
    fds = (int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    return {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds if fd > 2}


def bindable(port: int, kind: int = socket.SOCK_DGRAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def foreground(rtpproxy) -> Iterator[Callable[[], tuple[Proxy, int]]]:
    """Factory: a daemon started as a pseudo-terminal's foreground job; (the daemon,
    the terminal's master side)."""
    masters: list[int] = []

    def start() -> tuple[Proxy, int]:
        master, slave = os.openpty()
        masters.append(master)
        try:
            return rtpproxy("-l", "127.0.0.1", terminal=slave), master
        finally:
            os.close(slave)

    yield start
    for master in masters:
        os.close(master)


def interrupt(proxy: Proxy, master: int) -> str:
    """Ctrl-C at the terminal: every process of the job's session must end, the job
    with status 0, the daemon's ports must bind again. The log."""
    os.write(master, b"\x03")
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while session_pids(proxy.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    log = proxy.stderr_text()
    assert session_pids(proxy.proc.pid) == [], log[-3000:]
    assert proxy.proc.wait(timeout=1.0) == 0, log[-3000:]
    assert log.count("got signal 2") == 1, log[-3000:]  # one stop, of the serving one
    assert log.rstrip().endswith("rtpproxy ended"), log[-3000:]
    assert proxy.udp_addr is not None and bindable(proxy.udp_addr[1])
    busy = [p for p in range(proxy.port_min, proxy.port_max + 1) if not bindable(p)]
    assert busy == [], busy
    return log


def test_ctrl_c_stops_the_daemon_after_two_handoffs(foreground):
    proxy, master = foreground()
    call = kamailio_call(proxy)
    pids = [serving_pid(proxy)]
    for seq in range(3):
        if seq:
            pids.append(hand_over(proxy, old_exits=seq > 1))
        payload = bytes([seq]) * 160
        assert call.a_to_b(rtp(seq, seq * 160, 0x1111, payload))[0].endswith(payload)
        assert call.b_to_a(rtp(seq, seq * 160, 0x2222, payload))[0].endswith(payload)
    call.close()
    waiter, second = pids[0], pids[1]
    assert len(set(pids)) == 3, pids
    assert pid_alive(waiter) and not pid_alive(second), pids
    log = proxy.stderr_text()
    assert log.count("stays in the foreground for the terminal") == 1, log[-3000:]
    held = descriptors(waiter)  # its signal pipe, nothing of the daemon
    assert all(name.startswith("pipe:") for name in held.values()), held
    interrupt(proxy, master)


def test_ctrl_c_during_a_handoff_stops_both_processes(foreground):
    """The serving process stops and ends the successor it is starting; neither is
    left behind, and the job's status is the daemon's."""
    proxy, master = foreground()
    hand_over(proxy, old_exits=False)
    os.kill(serving_pid(proxy), signal.SIGUSR2)
    log = interrupt(proxy, master)
    assert log.count("live handoff done") == 1, log[-3000:]
