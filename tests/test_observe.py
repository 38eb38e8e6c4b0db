"""Observability without a daemon process: the naming scheme, the collectors against an
in-process App (values equal to what `G` and `I` answer), /sessions parsing and
paging, /health, command statistics and the accounting writer."""

from __future__ import annotations

import json
import logging
import os
import socket
import struct

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rtpp.control.peer import Peer
from rtpp.observe import Observability
from rtpp.observe.acct import AcctLog
from rtpp.observe.commands import BUCKETS_S, Timings, result_of, verb_of
from rtpp.observe.http import health_of
from rtpp.observe.metrics import GAUGE_STATS, _gauge_histogram, g_metric_name, make_registry
from rtpp.observe.sessions import MAX_LIMIT, QueryError, SessionsQuery, page, parse_query
from rtpp.stats import COUNTERS, Home

PEER = Peer("udp", ("127.0.0.1", 5060), overhead=5)
ALL_G = [c.name for c in COUNTERS if c.home is not Home.SESSION]


# ---------------------------------------------------------------- naming


@pytest.mark.parametrize("name", ALL_G)
def test_every_g_counter_has_one_exported_name(name):
    exported = g_metric_name(name)
    if name in GAUGE_STATS:
        assert exported == f"rtpproxy_{name}"
    else:
        assert exported == f"rtpproxy_{name}_total"


def test_only_the_non_monotonic_counters_are_gauges():
    assert GAUGE_STATS == {"pps_in", "rtpa_nlost"}


# ---------------------------------------------------------------- commands


@pytest.mark.parametrize(
    "line, verb",
    [
        (b"U call 1.2.3.4 5 tag", "U"),
        (b"Uc0,8 call 1.2.3.4 5 tag", "U"),
        (b"u call", "U"),
        (b"VF 20081224", "V"),
        (b"  G x", "G"),
        (b"", "other"),
        (b"\xff", "other"),
        (b"Z", "other"),
        (b"7", "other"),
    ],
)
def test_the_verb_is_the_command_letter(line, verb):
    assert verb_of(line) == verb


def test_results_are_ok_error_codes_or_not_found():
    assert result_of("20068 127.0.0.1", False) == "ok"
    assert result_of("E8", True) == "E8"
    assert result_of("0", True) == "not_found"


def test_timings_are_cumulative_with_an_inf_bucket():
    t = Timings()
    for seconds in (0.00005, 0.0001, 0.0003, 5.0):
        t.observe(seconds)
    buckets = dict(t.cumulative())
    assert buckets[repr(BUCKETS_S[0])] == 2  # a value on a bound is counted in it
    assert buckets[repr(0.0005)] == 3
    assert buckets["+Inf"] == 4
    assert t.total_s == pytest.approx(5.00045)


def test_gauge_histogram_buckets_and_sum():
    family = _gauge_histogram("x", "doc", [0.5, 1.0, 3.0, 500.0], (1.0, 2.0, 5.0))
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("rtpproxy_x_bucket", "1.0")] == 2
    assert samples[("rtpproxy_x_bucket", "2.0")] == 2
    assert samples[("rtpproxy_x_bucket", "5.0")] == 3
    assert samples[("rtpproxy_x_bucket", "+Inf")] == 4
    assert samples[("rtpproxy_x_gsum", None)] == pytest.approx(504.5)


# ---------------------------------------------------------------- /sessions query


@pytest.mark.parametrize(
    "text, query",
    [
        ("", SessionsQuery()),
        ("limit=5", SessionsQuery(limit=5)),
        ("offset=10&sort=worst", SessionsQuery(offset=10, sort="worst")),
        (f"limit={MAX_LIMIT}&sort=busiest", SessionsQuery(limit=MAX_LIMIT, sort="busiest")),
    ],
)
def test_sessions_queries(text, query):
    assert parse_query(text) == query


@pytest.mark.parametrize(
    "text",
    [
        "limit=0",
        f"limit={MAX_LIMIT + 1}",
        "limit=-1",
        "limit=1e3",
        "limit=",
        "offset=x",
        "offset=99999999999999",
        "sort=random",
        "limit=1&limit=2",
        "cursor=abc",
        "limit=%00",
        "&&&",
        "limit=²",
    ],
)
def test_malformed_sessions_queries_are_refused(text):
    with pytest.raises(QueryError):
        parse_query(text)


# ---------------------------------------------------------------- /health


def test_health():
    assert health_of(False, False, 0.2) == (200, "OK")
    code, text = health_of(True, False, 0.2)
    assert code == 503 and text.startswith("draining")
    code, text = health_of(False, True, 0.934)
    assert code == 503 and text == "overloaded: 93% of a core in the last second"
    assert "\n" not in text


# ---------------------------------------------------------------- in-process App


def _call(app, call_id: str) -> tuple[int, int]:
    a = app.execute(f"U {call_id} 127.0.0.1 4000 ftag;1".encode(), PEER).split()[0]
    b = app.execute(f"L {call_id} 127.0.0.1 4002 ftag;1 ttag;1".encode(), PEER).split()[0]
    return int(a), int(b)


def _scrape(registry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(f",{k}={v}" for k, v in sorted(sample.labels.items()))
            out[key] = sample.value
    return out


def test_collectors_export_every_g_counter_with_gs_value(app_factory):
    app = app_factory()
    obs = Observability(app, None, None)
    app.on_command = obs.on_command
    _call(app, "one")
    _call(app, "two")
    app.execute(b"D one ftag;1 ttag;1", PEER)
    app.execute(b"Q nosuch a b", PEER)
    registry = make_registry(app, obs.commands)
    scraped = _scrape(registry)
    reply = []
    for i in range(0, len(ALL_G), 8):  # a reply fits one datagram
        reply += app.execute(("G " + " ".join(ALL_G[i : i + 8])).encode(), PEER).split()
    for name, value in zip(ALL_G, reply, strict=True):
        if name.startswith("ncmds_") or name == "pps_in":
            continue
        assert scraped[g_metric_name(name)] == pytest.approx(float(value), abs=1e-6), name
    # G itself: received before it answered, succeeded after.
    assert scraped["rtpproxy_ncmds_rcvd_total"] == 6  # before the Gs
    assert scraped["rtpproxy_ncmds_errs_total"] == 1
    info = app.execute(b"I", PEER)
    assert f"active sessions: {int(scraped['rtpproxy_active_sessions'])}" in info
    assert f"active streams: {int(scraped['rtpproxy_active_streams'])}" in info
    assert scraped["rtpproxy_commands_total,result=ok,verb=U"] == 2
    assert scraped["rtpproxy_commands_total,result=E50,verb=Q"] == 1
    assert scraped["rtpproxy_command_duration_seconds_count,verb=L"] == 2
    assert scraped["rtpproxy_port_pairs_in_use,address=127.0.0.1"] == 2
    in_use = scraped["rtpproxy_port_pairs_in_use,address=127.0.0.1"]
    free = scraped["rtpproxy_port_pairs_free,address=127.0.0.1"]
    assert in_use + free == scraped["rtpproxy_port_pairs_range,family=ipv4"]
    assert scraped["rtpproxy_fds_reserve"] == 16


def test_series_do_not_grow_with_calls(app_factory):
    app = app_factory()
    obs = Observability(app, None, None)
    app.on_command = obs.on_command
    registry = make_registry(app, obs.commands)
    _call(app, "first")
    before = set(_scrape(registry))
    for i in range(20):
        _call(app, f"more{i}")
    assert set(_scrape(registry)) == before


def test_sessions_pages_and_sorts(app_factory):
    app = app_factory()
    for i in range(5):
        _call(app, f"call{i}")
    # Make call3 the busiest: packets counted on its streams.
    sess, _ = app.sessions.find_exact("call3", "ftag;1", None)
    sess.rtcp.streams[1].slow_in = 500
    first = page(app, SessionsQuery(limit=2))
    assert first["total"] == 5
    assert [s["call_id"] for s in first["sessions"]] == ["call0", "call1"]
    rest = page(app, SessionsQuery(limit=2, offset=4))
    assert [s["call_id"] for s in rest["sessions"]] == ["call4"]
    assert page(app, SessionsQuery(offset=9))["sessions"] == []
    busiest = page(app, SessionsQuery(limit=1, sort="busiest"))
    assert busiest["sessions"][0]["call_id"] == "call3"
    record = first["sessions"][0]
    assert record["from_tag"] == "ftag;1" and record["to_tag"] == "ttag;1"
    caller, callee = record["legs"]
    assert caller["remote"] == "127.0.0.1:4000" and callee["remote"] == "127.0.0.1:4002"
    json.dumps(first)  # plain JSON types only


# ---------------------------------------------------------------- accounting


def _ended(app, call_id: str):
    _call(app, call_id)
    sess, _ = app.sessions.find_exact(call_id, "ftag;1", None)
    return sess


def test_acct_writes_one_line_per_session_and_reopens_after_rotation(app_factory, tmp_path):
    app = app_factory()
    path = tmp_path / "acct.json"
    acct = AcctLog(str(path))
    acct.open()
    acct.session_ended(_ended(app, "a"), "delete")
    os.rename(path, tmp_path / "acct.json.1")
    acct.reopen()
    acct.session_ended(_ended(app, "b"), "timeout")
    acct.close()
    old = [json.loads(line) for line in (tmp_path / "acct.json.1").read_text().splitlines()]
    new = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["call_id"], r["ended"]) for r in old] == [("a", "delete")]
    assert [(r["call_id"], r["ended"]) for r in new] == [("b", "timeout")]
    assert acct.nwritten == 2 and acct.nlost == 0


def test_a_full_disk_costs_records_counted_and_logged_once(app_factory, caplog):
    app = app_factory()
    acct = AcctLog("/dev/full")
    acct.open()
    with caplog.at_level(logging.ERROR, logger="rtpp.observe.acct"):
        for i in range(3):
            acct.session_ended(_ended(app, f"c{i}"), "delete")
        acct.close()
    assert acct.nlost == 3 and acct.nwritten == 0
    lines = [r for r in caplog.records if "accounting records are being lost" in r.message]
    assert len(lines) == 1 and "No space left on device" in lines[0].message


def test_a_vanished_directory_costs_records_not_the_caller(app_factory, tmp_path, caplog):
    app = app_factory()
    folder = tmp_path / "logs"
    folder.mkdir()
    acct = AcctLog(str(folder / "acct.json"))
    acct.open()
    (folder / "acct.json").unlink()
    folder.rmdir()
    with caplog.at_level(logging.ERROR, logger="rtpp.observe.acct"):
        acct.reopen()
        acct.session_ended(_ended(app, "gone"), "delete")
        acct.close()
    assert acct.nlost == 1
    assert any("can't reopen the accounting file" in r.message for r in caplog.records)


def test_an_unopenable_path_fails_at_start(app_factory, tmp_path):
    with pytest.raises(OSError):
        AcctLog(str(tmp_path / "no" / "such" / "dir.json")).open()


def test_the_endpoint_socket_binds_loopback_only_when_asked():
    from rtpp.observe.http import bind_listener

    sock = bind_listener("127.0.0.1", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
        assert sock.type == socket.SOCK_STREAM
    finally:
        sock.close()


def test_the_analyzer_keeps_the_payload_types_it_has_seen():
    from rtpp.media.analyzer import RtpAnalyzer
    from rtpp.media.rtp import RECORD

    def header(seq: int, pt: int, marker: bool = False) -> tuple:
        return (0x80, pt | (0x80 if marker else 0), seq, seq, 7)

    deferred = RtpAnalyzer()  # as the relay's fast path defers plain packets
    for seq in range(40):
        deferred.pending += RECORD.pack(seq * 0.02, *header(seq, 0))
    deferred.pending += RECORD.pack(0.8, *header(40, 101, marker=True))
    deferred.pending += RECORD.pack(0.82, *header(41, 8))
    assert deferred.payload_types == [0, 8, 101]
    fed = RtpAnalyzer()
    fed.feed(struct.pack("!BBHII", *header(1, 18)), 0.0)
    fed.feed(struct.pack("!BBHII", *header(2, 18)), 0.02)
    fed.feed(b"\x80", 0.04)  # too short: a parse error, no payload type
    assert fed.payload_types == [18]


def test_notification_failures_are_exported_per_target(app_factory):
    import gevent

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    app = app_factory(notify_targets=(f"tcp:127.0.0.1:{port}",))
    obs = Observability(app, None, None)
    app.on_command = obs.on_command
    registry = make_registry(app, obs.commands)
    app.notifier.send((socket.AF_INET, ("127.0.0.1", port)), b"tag")
    assert _scrape(registry)[f"rtpproxy_notify_queue_depth,target=tcp:127.0.0.1:{port}"] == 1
    gevent.sleep(0.2)
    scraped = _scrape(registry)
    assert scraped[f"rtpproxy_notify_failed_total,target=tcp:127.0.0.1:{port}"] == 1
    assert scraped[f"rtpproxy_notify_queue_depth,target=tcp:127.0.0.1:{port}"] == 0
    assert scraped["rtpproxy_nnotify_failed_total"] == 1


def test_the_endpoint_answers_health_methods_and_unknown_paths(app_factory):
    from rtpp.observe.commands import CommandStats
    from rtpp.observe.http import Endpoint

    app = app_factory()
    endpoint = Endpoint(app, make_registry(app, CommandStats()))

    def get(path: str, method: str = "GET", query: str = "") -> tuple[str, bytes]:
        status, _, body = endpoint.respond(
            {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
        )
        return status, body

    assert get("/health") == ("200 OK", b"OK\n")
    app.media.overloaded, app.media.load = True, 0.95
    assert get("/health") == (
        "503 Service Unavailable",
        b"overloaded: 95% of a core in the last second\n",
    )
    app.drain()
    assert get("/health")[1].startswith(b"draining")
    assert get("/metrics", method="POST")[0] == "405 Method Not Allowed"
    assert get("/nothing")[0] == "404 Not Found"
    assert get("/sessions", query="limit=0")[0] == "400 Bad Request"
    assert get("/metrics")[0] == "200 OK"
    assert b"rtpproxy_overloaded 1.0" in get("/metrics")[1]
    assert b"rtpproxy_draining 1.0" in get("/metrics")[1]
