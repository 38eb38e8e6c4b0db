"""Which stream connection makes room when a listener is full (control/server.py)."""

from __future__ import annotations

from rtpp.control.server import StreamClient, pick_victim

STALL_S = 5.0
NOW = 1000.0


def clients(*states: StreamClient) -> dict[str, StreamClient]:
    return {f"c{i}": st for i, st in enumerate(states)}


def working() -> StreamClient:
    return StreamClient(conn=None, proven=True)  # type: ignore[arg-type]


def idle_newcomer() -> StreamClient:
    return StreamClient(conn=None)  # type: ignore[arg-type]


def stuck(since: float) -> StreamClient:
    return StreamClient(conn=None, proven=True, stalled_since=since)  # type: ignore[arg-type]


def test_the_oldest_connection_that_never_completed_a_command_goes_first():
    table = clients(working(), idle_newcomer(), idle_newcomer(), stuck(NOW - 60))
    assert pick_victim(table, NOW, STALL_S) == "c1"


def test_working_clients_are_never_picked():
    assert pick_victim(clients(working(), working()), NOW, STALL_S) is None


def test_a_client_stuck_mid_line_longest_goes_when_no_idle_newcomer_is_left():
    table = clients(working(), stuck(NOW - 6), stuck(NOW - 30), stuck(NOW - 1))
    assert pick_victim(table, NOW, STALL_S) == "c2"


def test_a_partial_line_younger_than_the_stall_limit_is_spared():
    assert pick_victim(clients(working(), stuck(NOW - 1)), NOW, STALL_S) is None
