"""C to a remote UDP listener: --no_resolve and the descriptor budget of the copy sockets
(PROTOCOL.md §4.8, OPERATIONS.md §3.9)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from helpers import next_port_range
from rtpp.app import App
from rtpp.commands.copy import parse_udp_target
from rtpp.config import Config, ListenAddr
from rtpp.control.peer import Peer

PEER = Peer("udp", ("127.0.0.1", 5060))
#: descriptors the fake /proc count reports; far below the limits used here
OPEN_FDS = 100


def no_dns(*args):
    raise AssertionError("DNS asked")


# parse_udp_target


def test_numeric_udp_target_is_taken_with_or_without_no_resolve():
    assert parse_udp_target("udp:127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert parse_udp_target("udp:127.0.0.1:5000", no_resolve=True) == ("127.0.0.1", 5000)


def test_udp_target_host_name_is_resolved_without_no_resolve():
    assert parse_udp_target("udp:localhost:5000") == (socket.gethostbyname("localhost"), 5000)


@pytest.mark.parametrize("host", ["localhost", "somehost.example"])
def test_no_resolve_refuses_a_udp_target_host_name_without_asking_dns(monkeypatch, host):
    monkeypatch.setattr(socket, "gethostbyname", no_dns)
    assert parse_udp_target(f"udp:{host}:5000", no_resolve=True) is None


# C through the command dispatcher


@pytest.fixture
def make_app() -> Iterator:
    apps: list[App] = []

    def make(port_pairs: int = 64, **options) -> App:
        low, _ = next_port_range()
        config = Config(
            listen=(ListenAddr(socket.AF_INET, "127.0.0.1"),),
            port_min=low,
            port_max=low + 2 * (port_pairs - 1),
            **options,
        )
        app = App(config)
        apps.append(app)
        fds = app.media.fds  # a fake process: OPEN_FDS open, the clock standing still
        fds.limit, fds.count, fds.clock, fds.counted = 10_000, lambda: OPEN_FDS, lambda: 0.0, None
        return app

    yield make
    for app in apps:
        app.close()


def run(app: App, line: str) -> str:
    return app.execute(line.encode(), PEER).rstrip("\n")


def call(app: App, call_id: str = "call") -> None:
    assert run(app, f"U {call_id} 127.0.0.1 4000 ftag").split()[0].isdigit()
    assert run(app, f"L {call_id} 127.0.0.1 4002 ftag ttag").split()[0].isdigit()


def copy_ports(app: App) -> set[int]:
    return app.media.allocators[socket.AF_INET].in_use


def test_copy_sockets_are_charged_to_the_budget_and_released_by_n(make_app):
    app = make_app()
    call(app)
    fds, before = app.media.fds, app.media.fds.in_use
    assert run(app, "C call udp:127.0.0.1:5000 ftag ttag") == "0"
    assert fds.in_use == before + 2 and len(copy_ports(app)) == 3
    assert run(app, "C call udp:127.0.0.1:5002 ftag ttag") == "0"  # replaces the first copy
    assert fds.in_use == before + 2 and len(copy_ports(app)) == 3
    assert run(app, "N call ftag ttag") == "0"
    assert fds.in_use == before and len(copy_ports(app)) == 2


def test_copy_sockets_are_released_when_the_session_is_deleted(make_app):
    app = make_app()
    call(app)
    assert run(app, "C call udp:127.0.0.1:5000 ftag ttag") == "0"
    assert run(app, "C call udp:127.0.0.1:5002 ttag ftag") == "0"
    assert app.media.fds.in_use == OPEN_FDS + 8
    assert run(app, "D call ftag ttag") == "0"
    assert app.media.fds.in_use == OPEN_FDS and not copy_ports(app)


def test_without_rtcp_recording_only_the_rtp_copy_socket_stays_charged(make_app):
    app = make_app(no_rtcp_record=True)
    call(app)
    before = app.media.fds.in_use
    assert run(app, "C call udp:127.0.0.1:5000 ftag ttag") == "0"
    assert app.media.fds.in_use == before + 1
    assert run(app, "D call ftag ttag") == "0"
    assert app.media.fds.in_use == OPEN_FDS


def test_copy_is_refused_with_e65_and_counted_when_the_reserve_is_reached(make_app):
    app = make_app()
    call(app)
    fds = app.media.fds
    ports = set(copy_ports(app))
    # The fake count now says the two legs are open; one pair more would eat the reserve.
    fds.count = lambda: OPEN_FDS + 4
    fds.limit = OPEN_FDS + 4 + 2 + fds.reserve - 1
    assert run(app, "C call udp:127.0.0.1:5000 ftag ttag") == "E65"
    assert run(app, "Cp call udp:127.0.0.1:5000 ftag ttag") == "E65"
    assert run(app, "G nsess_refused_fds nsess_refused_ports") == "2 0"
    assert copy_ports(app) == ports
    assert all(
        st.copier is None for st in app.sessions.find_exact("call", "ftag", "ttag")[0].streams()
    )
    fds.limit += 1
    assert run(app, "C call udp:127.0.0.1:5000 ftag ttag") == "0"
    assert run(app, "G nsess_refused_fds") == "2"


def test_copy_failing_for_ports_leaves_the_budget_alone(make_app):
    app = make_app(port_pairs=2)
    call(app)
    before = app.media.fds.in_use
    assert run(app, "C call udp:127.0.0.1:5000 ftag ttag") == "E65"
    assert app.media.fds.in_use == before
    assert run(app, "G nsess_refused_fds") == "0"


def test_no_resolve_refuses_a_copy_target_host_name_with_e65(make_app, monkeypatch):
    app = make_app(no_resolve=True)
    call(app)
    monkeypatch.setattr(socket, "gethostbyname", no_dns)
    assert run(app, "C call udp:localhost:5000 ftag ttag") == "E65"
    assert run(app, "C call udp:127.0.0.1:5000 ftag ttag") == "0"


def test_copy_target_host_name_is_resolved_without_no_resolve(make_app):
    app = make_app()
    call(app)
    assert run(app, "C call udp:localhost:5000 ftag ttag") == "0"
