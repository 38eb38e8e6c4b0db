"""spawn_logged: a greenlet's crash is logged with its name and traceback."""

from __future__ import annotations

import logging

import gevent

from rtpp.spawn import spawn_logged


def boom(word: str) -> None:
    raise ValueError(word)


def test_a_crash_is_logged_with_name_and_traceback(caplog):
    with caplog.at_level(logging.ERROR, logger="rtpp.spawn"):
        greenlet = spawn_logged(boom, "bad packet", name="recv_loop")
        gevent.joinall([greenlet])
        gevent.sleep(0)  # links run in the hub's next turn
    (record,) = [r for r in caplog.records if r.name == "rtpp.spawn"]
    assert record.getMessage() == "greenlet recv_loop crashed"
    assert record.exc_info is not None and record.exc_info[0] is ValueError


def test_a_clean_exit_logs_nothing(caplog):
    with caplog.at_level(logging.DEBUG, logger="rtpp.spawn"):
        gevent.joinall([spawn_logged(lambda: None, name="quiet")])
        gevent.sleep(0)
    assert not [r for r in caplog.records if r.name == "rtpp.spawn"]
