"""Timeout notification targets: `-n` parsing, matching a U's socket, resolving (§9.2),
and the fault counters of delivery."""

from __future__ import annotations

import os
import socket
import tempfile

import gevent
import pytest
from gevent.queue import Queue

from rtpp.control.peer import Peer
from rtpp.media.notify import CC_SELF, Notifier, NotifyConfigError, Target, TargetSpec, parse_target
from rtpp.stats import Counters

WILDCARD = f"tcp:{CC_SELF}:9999"


# parse_target


def test_unix_target():
    spec = parse_target("unix:/run/b2bua.sock")
    assert spec == TargetSpec("unix:/run/b2bua.sock", socket.AF_UNIX, "/run/b2bua.sock")
    assert not spec.wildcard


def test_bare_path_is_a_unix_target_named_with_the_prefix():
    spec = parse_target("/var/run/opensips.sock")
    assert spec.name == "unix:/var/run/opensips.sock"
    assert spec.family == socket.AF_UNIX
    assert spec.address == "/var/run/opensips.sock"


def test_tcp_target_with_a_numeric_host():
    spec = parse_target("tcp:127.0.0.1:9999")
    assert spec == TargetSpec("tcp:127.0.0.1:9999", socket.AF_INET, "127.0.0.1", 9999)
    assert not spec.wildcard


def test_tcp_target_host_is_resolved_but_the_name_kept():
    spec = parse_target("tcp:localhost:9999")
    assert spec.name == "tcp:localhost:9999"
    assert spec.family == socket.AF_INET
    assert spec.address == socket.gethostbyname("localhost")
    assert spec.port == 9999


def test_cc_self_target_is_a_wildcard():
    spec = parse_target(WILDCARD)
    assert spec == TargetSpec(WILDCARD, socket.AF_INET, None, 9999)
    assert spec.wildcard


@pytest.mark.parametrize("port", ["1", "65535"])
def test_tcp_port_bounds_are_accepted(port):
    assert parse_target(f"tcp:127.0.0.1:{port}").port == int(port)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tcp:127.0.0.1",
        "tcp:127.0.0.1:",
        "tcp:127.0.0.1:0",
        "tcp:127.0.0.1:65536",
        "tcp:127.0.0.1:099999",
        "tcp:127.0.0.1:-1",
        "tcp:127.0.0.1:+80",
        "tcp:127.0.0.1:8o",
        "tcp:127.0.0.1:\u00b2",
        "tcp:127.0.0.1:\u0662\u0660",
        f"tcp:{CC_SELF}:0",
        f"tcp:{CC_SELF}:x",
    ],
)
def test_invalid_targets_are_rejected(text):
    with pytest.raises(NotifyConfigError):
        parse_target(text)


def test_no_resolve_takes_only_a_numeric_tcp_host(monkeypatch):
    def no_dns(*args):
        raise AssertionError("DNS asked")

    monkeypatch.setattr(socket, "gethostbyname", no_dns)
    assert parse_target("tcp:127.0.0.1:9999", no_resolve=True).address == "127.0.0.1"
    assert parse_target(WILDCARD, no_resolve=True).wildcard
    assert parse_target("udp:somehost:1", no_resolve=True).family == socket.AF_UNIX
    for host in ("localhost", "somehost.example", "::1"):
        with pytest.raises(NotifyConfigError, match=host):
            parse_target(f"tcp:{host}:9999", no_resolve=True)
    with pytest.raises(NotifyConfigError):
        Notifier(("tcp:localhost:9999",), no_resolve=True)


def test_config_error_is_a_value_error():
    assert issubclass(NotifyConfigError, ValueError)


# Notifier.match


def notifier(*specs: str) -> Notifier:
    return Notifier(specs)


def test_notifier_without_targets_is_not_configured():
    assert not notifier().configured
    assert notifier("/tmp/n.sock").configured


UNIX = "unix:/tmp/n.sock"
TCP = "tcp:127.0.0.1:9999"


@pytest.mark.parametrize(
    "targets,name,index",
    [
        pytest.param((UNIX,), UNIX, 0, id="exact unix name"),
        pytest.param((TCP, UNIX), "/tmp/n.sock", 1, id="bare path against unix target"),
        pytest.param(("/tmp/n.sock",), UNIX, 0, id="unix name for a bare-path target"),
        pytest.param(("/tmp/n.sock",), "/tmp/n.sock", 0, id="bare path for a bare-path target"),
        pytest.param((TCP, "tcp:127.0.0.1:8888"), "tcp:127.0.0.1:8888", 1, id="exact tcp name"),
        pytest.param(("tcp:localhost:9999",), TCP, None, id="tcp names compare as strings"),
        pytest.param(("tcp:localhost:9999",), "tcp:localhost:9999", 0, id="tcp same string"),
        pytest.param((UNIX, WILDCARD), WILDCARD, 1, id="wildcard by exact name"),
        pytest.param((UNIX, WILDCARD), f"tcp:{CC_SELF}:9998", None, id="other wildcard port"),
        pytest.param((WILDCARD, TCP), TCP, 1, id="exact target preferred over wildcard"),
        pytest.param((WILDCARD,), TCP, None, id="concrete address vs wildcard"),
        pytest.param((UNIX,), "/tmp/other.sock", None, id="bare path, different path"),
        pytest.param((UNIX,), "n.sock", None, id="bare file name, no directory"),
        pytest.param((TCP, WILDCARD), "9999", None, id="bare name never compared with tcp"),
        pytest.param((UNIX,), "unix:/tmp/n.sock2", None, id="unix name, longer path"),
        pytest.param((UNIX,), "unix:tmp/n.sock", None, id="unix name, relative path"),
    ],
)
def test_match(targets, name, index):
    n = notifier(*targets)
    assert n.match(name) is (None if index is None else n.specs[index])


def test_unmatched_name_is_none():
    n = notifier("unix:/tmp/n.sock", "tcp:127.0.0.1:9999", WILDCARD)
    assert n.match("r 12") is None  # a Kamailio-style tag in the socket position
    assert n.match("") is None


def test_first_of_several_equal_targets_wins():
    n = notifier("/tmp/n.sock", "unix:/tmp/n.sock")
    assert n.match("/tmp/n.sock") is n.specs[0]
    assert n.match("unix:/tmp/n.sock") is n.specs[0]


# Notifier.resolve


def test_resolve_unix_target_to_its_path():
    n = notifier("unix:/tmp/n.sock")
    assert n.resolve(n.specs[0], Peer("udp", ("192.0.2.1", 5060))) == (
        socket.AF_UNIX,
        "/tmp/n.sock",
    )


def test_resolve_fixed_tcp_target_ignores_the_sender():
    n = notifier("tcp:127.0.0.1:9999")
    assert n.resolve(n.specs[0], Peer("udp", ("192.0.2.1", 5060))) == (
        socket.AF_INET,
        ("127.0.0.1", 9999),
    )


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_resolve_cc_self_uses_the_ipv4_sender(kind):
    n = notifier(WILDCARD)
    assert n.resolve(n.specs[0], Peer(kind, ("192.0.2.44", 40000))) == (
        socket.AF_INET,
        ("192.0.2.44", 9999),
    )


@pytest.mark.parametrize(
    "peer",
    [
        Peer("udp6", ("2001:db8::1", 40000, 0, 0)),
        Peer("tcp6", ("::ffff:192.0.2.44", 40000, 0, 0)),
        Peer("unix", "/run/rtpproxy.sock"),
        Peer("cunix", None),
        Peer("stdio"),
        Peer("systemd"),
    ],
)
def test_resolve_cc_self_uses_loopback_for_non_ipv4_senders(peer):
    n = notifier(WILDCARD)
    assert n.resolve(n.specs[0], peer) == (socket.AF_INET, ("127.0.0.1", 9999))


def test_resolve_cc_self_gives_one_destination_per_sender_address():
    n = notifier(WILDCARD)
    spec = n.specs[0]
    a1 = n.resolve(spec, Peer("udp", ("192.0.2.1", 1000)))
    a2 = n.resolve(spec, Peer("udp", ("192.0.2.1", 2000)))
    b = n.resolve(spec, Peer("udp", ("192.0.2.2", 1000)))
    assert a1 == a2
    assert a1 != b


# Delivery faults: a clear log line and a counter


def nowhere() -> str:
    return os.path.join(tempfile.mkdtemp(prefix="rpn"), "down.sock")  # nobody listens


def test_target_down_counts_every_notification_it_could_not_deliver(caplog):
    counters = Counters()
    n = Notifier((nowhere(),), counters)
    dest = n.resolve(n.specs[0], Peer("udp", ("127.0.0.1", 1)))
    for i in range(3):
        n.send(dest, b"tag%d" % i)
    gevent.sleep(0.1)
    n.close()
    assert counters["nnotify_failed"] == 3
    assert counters["nnotify_dropped"] == 0
    assert "unable to send timeout notification to" in caplog.text


def test_full_queue_drops_and_counts_with_one_log_line(caplog):
    counters = Counters()
    target = Target(socket.AF_UNIX, nowhere(), queue=Queue(2), counters=counters)
    for i in range(5):  # no switch in between: the sender has not run yet
        target.submit(b"tag%d\n" % i)
    assert counters["nnotify_dropped"] == 3
    assert target.ndropped == 3
    assert caplog.text.count("is full") == 1  # rate-limited
    gevent.sleep(0.1)
    target.close()
    assert counters["nnotify_failed"] == 2


def test_a_target_that_restarted_gets_the_next_notification_on_a_new_connection():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(2)
    target = Target(socket.AF_INET, listener.getsockname())
    try:
        target.submit(b"one\n")
        gevent.sleep(0.05)
        conn, _ = listener.accept()
        assert conn.recv(64) == b"one\n"
        conn.sendall(b"OK\n")  # some targets answer; the answer is read and dropped
        conn.close()  # the target restarts: its end of the kept connection is gone
        gevent.sleep(0.05)
        target.submit(b"two\n")
        gevent.sleep(0.05)
        conn, _ = listener.accept()
        assert conn.recv(64) == b"two\n"
        conn.close()
        assert (target.nsent, target.nfailed) == (2, 0)
    finally:
        target.close()
        listener.close()
