"""The sweeper's per-session step: inactivity timers and expiry (PROTOCOL.md §9.1)."""

from __future__ import annotations

import logging
import socket
import time
from types import SimpleNamespace

import gevent
import pytest
from gevent import socket as gsocket

from rtpp.app import App
from rtpp.control.peer import Peer
from rtpp.media import housekeeping
from rtpp.media.housekeeping import (
    OVERLOAD_HIGH,
    OVERLOAD_LOW,
    leg_active,
    overload_state,
    tick,
    update_overload,
)
from rtpp.media.session import Session


def session(ttl: int, complete: bool = True) -> Session:
    sess = Session("call", "tag", 0.0, 0.0)
    sess.set_ttl_max(ttl)
    sess.complete = complete
    return sess


def packet(sess: Session, index: int, rtcp: bool = False, fast: bool = False) -> None:
    """Account one accepted packet on leg `index` the way the relay does."""
    pipe = sess.rtcp if rtcp else sess.rtp
    st = pipe.streams[index]
    if fast:
        st.nfast_rtcp += 1  # a stream without an analyzer, as in Session() here
    else:
        st.slow_rcvd += 1
        st.slow_in += 1


def ticks_until_expiry(sess: Session, independent: bool, limit: int = 100, each=None) -> int:
    for n in range(1, limit + 1):
        if each is not None:
            each(sess)
        if tick(sess, independent):
            return n
    raise AssertionError("session never expired")


# leg_active


def test_leg_is_idle_without_packets():
    sess = session(5)
    assert not leg_active(sess, 0)
    assert not leg_active(sess, 1)


def test_leg_is_active_once_per_batch_of_packets():
    sess = session(5)
    packet(sess, 1)
    packet(sess, 1)
    assert leg_active(sess, 1)
    assert not leg_active(sess, 1)
    assert not leg_active(sess, 0)


@pytest.mark.parametrize("rtcp", [False, True])
@pytest.mark.parametrize("fast", [False, True])
def test_rtp_and_rtcp_packets_on_either_path_make_the_leg_active(rtcp, fast):
    sess = session(5)
    packet(sess, 0, rtcp=rtcp, fast=fast)
    assert leg_active(sess, 0)
    assert not leg_active(sess, 1)


@pytest.mark.parametrize(
    "leg,counters,active",
    [
        pytest.param(0, ["slow_rcvd", "nignored"], False, id="read but ignored"),
        pytest.param(
            1,
            ["slow_rcvd", "slow_in", "ndropped", "nplayer_drop"],
            False,
            id="dropped for a player",
        ),
        pytest.param(
            1, ["slow_rcvd", "slow_in", "ndropped"], True, id="dropped for lack of a destination"
        ),
    ],
)
def test_counted_but_not_relayed_packets_and_leg_activity(leg, counters, active):
    sess = session(5)
    st = sess.rtp.streams[leg]
    for name in counters:
        setattr(st, name, getattr(st, name) + 1)
    assert leg_active(sess, leg) is active


# tick


def test_idle_session_counts_down_and_expires_when_the_minimum_reaches_zero():
    sess = session(3)
    for expected in (2, 1, 0):
        assert not tick(sess, False)
        assert sess.ttl == [expected, expected]
    assert tick(sess, False)


def test_idle_session_lives_ttl_plus_one_sweeps():
    assert ticks_until_expiry(session(5), False) == 6
    assert ticks_until_expiry(session(5), True) == 6


def test_zero_ttl_expires_at_the_first_sweep():
    assert tick(session(0), False)


@pytest.mark.parametrize("independent", [False, True])
def test_activity_resets_the_leg_timer_to_its_maximum(independent):
    sess = session(10)
    for _ in range(3):
        tick(sess, independent)
    assert sess.ttl == [7, 7]
    packet(sess, 0)
    assert not tick(sess, independent)
    assert sess.ttl[0] == 9


@pytest.mark.parametrize(
    "independent,ttl",
    [
        pytest.param(False, [9, 9], id="unified timer resets both legs"),
        pytest.param(True, [6, 9], id="independent timer resets only that leg"),
    ],
)
def test_activity_on_one_leg(independent, ttl):
    sess = session(10)
    for _ in range(3):
        tick(sess, independent)
    packet(sess, 1)
    tick(sess, independent)
    assert sess.ttl == ttl


def test_unified_timer_one_active_leg_keeps_the_session_alive():
    sess = session(3)
    for _ in range(20):
        packet(sess, 0)
        assert not tick(sess, False)


def test_independent_timer_session_expires_when_either_leg_runs_out():
    sess = session(3)
    assert ticks_until_expiry(sess, True, each=lambda s: packet(s, 0)) == 4
    assert sess.ttl[0] > 0


def test_rtcp_activity_refreshes_the_timer():
    sess = session(3)
    for _ in range(20):
        packet(sess, 1, rtcp=True)
        assert not tick(sess, False)


def test_incomplete_session_is_not_refreshed_by_packets():
    sess = session(3, complete=False)
    assert ticks_until_expiry(sess, False, each=lambda s: packet(s, 0)) == 4
    sess = session(3, complete=False)
    assert ticks_until_expiry(sess, True, each=lambda s: packet(s, 1)) == 4


def test_packets_dropped_for_a_player_do_not_refresh_the_timer():
    def played_over(sess: Session) -> None:
        st = sess.rtp.streams[0]
        st.slow_rcvd += 1
        st.slow_in += 1
        st.ndropped += 1
        st.nplayer_drop += 1

    assert ticks_until_expiry(session(3), False, each=played_over) == 4


def test_activity_uses_each_legs_own_maximum():
    sess = session(10)
    sess.set_ttl_max(4, legs=(1,))
    assert sess.ttl == [10, 4]
    for _ in range(3):
        tick(sess, True)
    packet(sess, 0)
    packet(sess, 1)
    tick(sess, True)
    assert sess.ttl == [9, 3]


def test_activity_before_the_last_sweep_is_not_counted_again():
    sess = session(5)
    packet(sess, 0)
    tick(sess, False)
    assert sess.ttl == [4, 4]
    tick(sess, False)
    assert sess.ttl == [3, 3]


# overload_state


def test_overload_starts_only_above_the_high_mark():
    assert not overload_state(False, OVERLOAD_HIGH)
    assert overload_state(False, OVERLOAD_HIGH + 0.001)
    assert not overload_state(False, OVERLOAD_LOW)


def test_overload_persists_down_to_the_low_mark():
    assert overload_state(True, OVERLOAD_HIGH)
    assert overload_state(True, (OVERLOAD_HIGH + OVERLOAD_LOW) / 2)
    assert overload_state(True, OVERLOAD_LOW)


def test_overload_ends_below_the_low_mark():
    assert not overload_state(True, OVERLOAD_LOW - 0.001)
    assert not overload_state(True, 0.0)


def test_overload_hysteresis_sequence():
    state = False
    seen = []
    for load in (0.5, 0.88, 0.95, 0.88, 0.86, 0.80, 0.88, 0.91):
        state = overload_state(state, load)
        seen.append(state)
    assert seen == [False, False, True, True, True, False, False, True]


# Overload protection (--overload_prot): E98 for new sessions only, logged, counted


def overload_log(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "overloaded" in r.getMessage()]


@pytest.mark.parametrize("prot", [True, False])
def test_entering_and_leaving_overload_is_logged_once_each(caplog, prot):
    media = SimpleNamespace(overloaded=False, config=SimpleNamespace(overload_prot=prot))
    caplog.set_level(logging.INFO)
    for load in (0.5, 0.95, 0.97, OVERLOAD_LOW + 0.01, 0.5, 0.4):
        update_overload(media, load)
    assert not media.overloaded
    if not prot:
        assert overload_log(caplog) == []
        return
    assert overload_log(caplog) == [
        "overloaded: 95% of a core in the last second, refusing new sessions (E98)",
        "no longer overloaded: 50% of a core in the last second, accepting new sessions",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "overloaded" in r.msg)


PEER = Peer("udp", ("127.0.0.1", 5060))


def run(app: App, line: str) -> str:
    return app.execute(line.encode(), PEER).rstrip("\n")


def test_overloaded_refuses_new_calls_with_e98_and_serves_everything_else(app_factory):
    app = app_factory(overload_prot=True)
    port = run(app, "U old 127.0.0.1 4000 f")
    assert port.split()[0].isdigit()
    app.media.overloaded = True
    assert run(app, "U new 127.0.0.1 4000 f") == "E98"
    assert run(app, "U new2 127.0.0.1 4000 f") == "E98"
    assert run(app, "U old 127.0.0.1 4002 f") == port  # an existing call is updated
    assert run(app, "L old 127.0.0.1 4004 f t").split()[0].isdigit()
    assert run(app, "V") == "20040107"
    assert run(app, "G nsess_created nsess_refused_overload") == "1 2"
    assert run(app, "D old f") == "0"
    app.media.overloaded = False
    assert run(app, "U new 127.0.0.1 4000 f").split()[0].isdigit()


def test_overload_state_without_protection_refuses_nothing(app_factory):
    app = app_factory()
    app.media.overloaded = True
    assert run(app, "U new 127.0.0.1 4000 f").split()[0].isdigit()
    assert run(app, "G nsess_refused_overload") == "0"


# The sweep pass


def app_with_calls(app_factory, calls: int) -> App:
    app = app_factory()
    for i in range(calls):
        run(app, f"U c{i} 127.0.0.1 4000 f{i}")
    return app


def on_tick(monkeypatch, note) -> None:
    """Call `note(session)` each time the sweeper ticks a session."""
    real_tick = housekeeping.tick
    monkeypatch.setattr(housekeeping, "tick", lambda sess, ind: note(sess) or real_tick(sess, ind))


def test_a_sweep_hands_the_hub_back_between_chunks_of_sessions(app_factory, monkeypatch):
    # A whole pass is several ms at a few thousand sessions: the relay must run in between.
    app = app_with_calls(app_factory, 10)
    order: list[str] = []
    on_tick(monkeypatch, lambda sess: order.append("tick"))
    gevent.spawn(order.append, "relay")
    app.sweeper.sweep(time.monotonic(), pause_every=4)
    assert order.count("tick") == 10
    assert order.index("relay") == 3  # after the first chunk, not after the pass


def test_the_relay_reads_its_sockets_while_a_sweep_is_paused(app_factory, monkeypatch):
    # Not just other greenlets: the hub polls for I/O during a pause.
    app = app_with_calls(app_factory, 10)
    rx = gsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    reader = gevent.spawn(rx.recv, 100)
    gevent.sleep(0)  # the reader now waits on its socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(b"rtp", rx.getsockname())
    seen: list[bool] = []
    on_tick(monkeypatch, lambda sess: seen.append(reader.ready()))
    app.sweeper.sweep(time.monotonic(), pause_every=4)
    rx.close()
    assert seen == [False] * 3 + [True] * 7
    assert reader.value == b"rtp"


def test_a_sweep_without_pauses_does_not_yield(app_factory):
    app = app_with_calls(app_factory, 10)
    order: list[str] = []
    gevent.spawn(order.append, "relay")
    app.sweeper.sweep(time.monotonic())
    assert order == []


def test_a_session_deleted_while_the_sweep_is_paused_is_skipped(app_factory, monkeypatch):
    app = app_with_calls(app_factory, 6)
    ticked: list[str] = []
    on_tick(monkeypatch, lambda sess: ticked.append(sess.call_id))
    gevent.spawn(run, app, "D c5 f5")
    app.sweeper.sweep(time.monotonic(), pause_every=2)
    assert ticked == ["c0", "c1", "c2", "c3", "c4"]


def test_pps_in_counts_each_packet_once_including_those_of_ended_sessions(app_factory):
    app = app_with_calls(app_factory, 3)
    sweeper = app.sweeper
    streams = [sess.rtcp.streams[0] for sess in app.media.sessions]  # no analyzer: plain count
    now = sweeper.last_time = 100.0
    for st in streams:
        st.slow_rcvd += 50
    sweeper.sweep(now + 1.0)
    assert app.media.counters.values["pps_in"] == 150
    for st in streams:
        st.slow_rcvd += 20
    run(app, "D c0 f0")  # its last 20 packets are folded, not lost
    sweeper.sweep(now + 2.0)
    assert app.media.counters.values["pps_in"] == 60
    sweeper.sweep(now + 3.0)
    assert app.media.counters.values["pps_in"] == 0
