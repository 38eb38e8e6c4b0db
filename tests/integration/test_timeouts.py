"""Inactivity timeouts and the notifications controllers rely on."""

from __future__ import annotations

import os
import socket
import time

import pytest

from helpers import free_tcp_port, short_tmpdir
from integration.media_util import kamailio_call, rtp

pytestmark = pytest.mark.timeout(120)


class Listener:
    """A stream listener standing in for Kamailio's / OpenSIPS's notification socket."""

    def __init__(self, family: int, address) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(8)
        self.sock.settimeout(10)
        self.conn: socket.socket | None = None

    def read_line(self, timeout: float = 8.0) -> bytes:
        if self.conn is None:
            self.conn, _ = self.sock.accept()
            self.conn.settimeout(timeout)
        data = b""
        while not data.endswith(b"\n"):
            chunk = self.conn.recv(4096)
            assert chunk, "connection closed"
            data += chunk
        return data

    def quiet(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            self.conn, _ = self.sock.accept()
        except TimeoutError:
            return True
        return False


def wait_gone(proxy, query: str, timeout: float) -> float:
    start = time.monotonic()
    while proxy.cmd(query) != "E50":
        assert time.monotonic() - start < timeout, "session did not time out"
        time.sleep(0.1)
    return time.monotonic() - start


def test_idle_session_times_out_and_notifies_unix_listener(rtpproxy):
    path = os.path.join(short_tmpdir(), "notify.sock")
    listener = Listener(socket.AF_UNIX, path)
    proxy = rtpproxy("-T", "2", "-n", f"unix:{path}")
    assert proxy.cmd("VF 20081224") == "1"
    proxy.cmd(f"U t1 127.0.0.1 4000 fa tb unix:{path} first")
    # Every U rewrites the notification settings: the last one wins.
    assert proxy.cmd(f"U t1 127.0.0.1 4000 fa tb unix:{path} r+12%2Fx").split()[0].isdigit()
    assert listener.read_line() == b"r 12/x\n"
    assert proxy.cmd("Q t1 fa tb") == "E50"
    assert proxy.cmd("G nsess_timeout nsess_destroyed") == "1 1"


def test_bare_path_notify_socket_matches_unix_target(rtpproxy):
    path = os.path.join(short_tmpdir(), "n.sock")
    listener = Listener(socket.AF_UNIX, path)
    proxy = rtpproxy("-T", "1", "-n", f"unix:{path}")
    proxy.cmd(f"U t2 127.0.0.1 4000 fa {path} Tdialog42")  # OpenSIPS: no to-tag, bare path
    assert listener.read_line() == b"Tdialog42\n"


def tcp_notifying(rtpproxy, host: str = "127.0.0.1"):
    """A TCP listener on a free port, the -n target naming it via host, a daemon using it."""
    port = free_tcp_port()
    listener = Listener(socket.AF_INET, ("127.0.0.1", port))
    target = f"tcp:{host}:{port}"
    return listener, target, rtpproxy("-T", "1", "-n", target)


def test_tcp_notification_and_persistent_connection(rtpproxy):
    listener, target, proxy = tcp_notifying(rtpproxy)
    proxy.cmd(f"U t3 127.0.0.1 4000 fa tb {target} first")
    assert listener.read_line() == b"first\n"
    proxy.cmd(f"U t4 127.0.0.1 4000 fa tb {target} second")
    assert listener.read_line() == b"second\n"  # same connection, reused


def test_cc_self_wildcard_connects_back_to_the_controller(rtpproxy):
    listener, target, proxy = tcp_notifying(rtpproxy, "%%CC_SELF%%")
    assert proxy.cmd("VF 20150617") == "1"
    proxy.cmd(f"U t5 127.0.0.1 4000 fa tb {target} r%2042")
    assert listener.read_line() == b"r 42\n"


def test_delete_and_x_never_notify(rtpproxy):
    listener, target, proxy = tcp_notifying(rtpproxy)
    proxy.cmd(f"U t6 127.0.0.1 4000 fa tb {target} gone")
    proxy.cmd(f"U t7 127.0.0.1 4000 fa tb {target} gone")
    assert proxy.cmd("D t6 fa tb") == "0"
    assert proxy.cmd("X") == "0"
    assert listener.quiet(3.0)


def test_unknown_target_disables_notification_silently(rtpproxy):
    proxy = rtpproxy("-T", "1", "-n", "tcp:127.0.0.1:9")
    # Kamailio's 7-token form: its to-tag is read as the notify socket.
    reply = proxy.cmd("U t8 127.0.0.1 4000 fa;1 tb;1 udp:127.0.0.1:5060")
    assert reply.split()[0].isdigit()
    wait_gone(proxy, "Q t8 fa;1", 5)


def test_dead_notify_target_blocks_nobody(rtpproxy):
    port = free_tcp_port()  # nobody listens there
    target = f"tcp:127.0.0.1:{port}"
    proxy = rtpproxy("-T", "1", "-n", target)
    for n in range(20):
        proxy.cmd(f"U d{n} 127.0.0.1 4000 fa tb {target} t{n}")
    wait_gone(proxy, "Q d19 fa tb", 6)
    start = time.monotonic()
    for _ in range(20):
        assert proxy.cmd("V") == "20040107"
    assert time.monotonic() - start < 5  # correctness bound, not a benchmark


def test_traffic_keeps_a_session_alive(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", "-T", "2")
    call = kamailio_call(proxy, "alive")
    for i in range(12):
        call.a.send(rtp(i, i * 160, 1, b"k" * 20), ("127.0.0.1", call.port_b))
        call.b.recv()
        time.sleep(0.3)
    ttl = int(proxy.cmd("Q alive ftag;1 ttag;1").split()[0])
    assert 1 <= ttl <= 2
    wait_gone(proxy, "Q alive ftag;1 ttag;1", 5)
    assert proxy.cmd("G nsess_timeout nsess_owrtp") == "1 1"


def test_setup_timeout_applies_before_answer(rtpproxy):
    proxy = rtpproxy("-T", "30", "-W", "1")
    proxy.cmd("U w1 127.0.0.1 4000 fa")
    elapsed = wait_gone(proxy, "Q w1 fa", 5)
    assert elapsed < 4


def test_ttl_subcommand_shortens_the_timeout(rtpproxy):
    proxy = rtpproxy("-T", "60")
    assert proxy.cmd("U s1 127.0.0.1 4000 fa && S ttl=1").split()[0].isdigit()
    wait_gone(proxy, "Q s1 fa", 5)


def ttl_of(proxy, call: str) -> int:
    """The session's remaining TTL, or one less should the 1 Hz sweep fall in between."""
    reply = proxy.cmd(f"Qv {call} fa tb ttl")
    assert reply.startswith("ttl="), reply
    return int(reply[4:])


def near(value: int) -> range:
    return range(value - 1, value + 1)


def test_ttl_set_during_setup_survives_the_answer(rtpproxy):
    proxy = rtpproxy("-T", "60")
    assert proxy.cmd("U k1 127.0.0.1 4000 fa tb && S ttl=2").split()[0].isdigit()
    assert proxy.cmd("L k1 127.0.0.1 4002 fa tb").isdigit()  # completes the session
    assert ttl_of(proxy, "k1") <= 2
    assert proxy.cmd("L k1 127.0.0.1 4002 fa tb").isdigit()  # restarts the timer ...
    assert ttl_of(proxy, "k1") in near(2)  # ... on the session's own TTL, not -T
    assert wait_gone(proxy, "Q k1 fa tb", 5) < 4


def test_ttl_set_with_the_answer_is_kept_by_later_lookups(rtpproxy):
    proxy = rtpproxy("-T", "60")
    assert proxy.cmd("U k2 127.0.0.1 4000 fa tb").isdigit()
    assert proxy.cmd("L k2 127.0.0.1 4002 fa tb && S ttl=4").split()[0].isdigit()
    assert proxy.cmd("U k3 127.0.0.1 4000 fa tb && S ttl=1").split()[0].isdigit()
    assert proxy.cmd("L k3 127.0.0.1 4002 fa tb && S ttl=8").split()[0].isdigit()
    for _ in range(2):
        assert proxy.cmd("L k2 127.0.0.1 4002 fa tb").isdigit()
        assert proxy.cmd("U k3 127.0.0.1 4000 fa tb").isdigit()
        assert ttl_of(proxy, "k2") in near(4) and ttl_of(proxy, "k3") in near(8)
    proxy.cmd("U k4 127.0.0.1 4000 fa tb")
    proxy.cmd("L k4 127.0.0.1 4002 fa tb")
    assert ttl_of(proxy, "k4") in near(60)  # no S: the -T default


def test_independent_timers_q_reports_the_queried_legs_own(rtpproxy):
    proxy = rtpproxy("-T", "60", "-i")
    assert proxy.cmd("U k5 127.0.0.1 4000 fa tb && S ttl=5").split()[0].isdigit()
    assert proxy.cmd("L k5 127.0.0.1 4002 fa tb").isdigit()
    assert ttl_of(proxy, "k5") in near(5)  # the caller's leg, which S acted on
    reply = proxy.cmd("Qv k5 tb fa ttl")
    assert reply in ("ttl=60", "ttl=59")
