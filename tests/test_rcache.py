"""UDP reply cache: 35 s lifetime, 3 s sweeps, key = cookie only."""

from __future__ import annotations

import sys

from rtpp.control.rcache import ReplyCache


def test_hit_returns_the_cached_bytes():
    cache = ReplyCache()
    cache.insert(b"c1", b"c1 20040107\n", now=100.0)
    assert cache.lookup(b"c1", now=101.0) == b"c1 20040107\n"
    assert cache.lookup(b"c2", now=101.0) is None


def test_entry_lives_between_35_and_38_seconds():
    cache = ReplyCache()
    cache.insert(b"a", b"a 0\n", now=0.0)
    assert cache.lookup(b"a", now=34.9) is not None
    for t in range(35, 50):
        if cache.lookup(b"a", now=float(t)) is None:
            break
    assert 35 <= t <= 38
    assert len(cache) == 0


def test_sweep_removes_only_expired_entries():
    cache = ReplyCache()
    cache.insert(b"old", b"old 1\n", now=0.0)
    cache.insert(b"new", b"new 1\n", now=20.0)
    cache.sweep(now=36.0)
    assert cache.lookup(b"old", now=36.0) is None
    assert cache.lookup(b"new", now=36.0) == b"new 1\n"
    cache.sweep(now=56.0)
    assert len(cache) == 0


def test_reinsert_refreshes_the_lifetime():
    cache = ReplyCache()
    cache.insert(b"k", b"k 1\n", now=0.0)
    cache.insert(b"k", b"k 2\n", now=30.0)
    assert cache.lookup(b"k", now=45.0) == b"k 2\n"


def test_sweep_on_access_drops_expired_entries():
    cache = ReplyCache()
    cache.insert(b"k", b"k\n", now=1.0)
    cache.maybe_sweep(now=36.5)  # a sweep is due (first at 4.0); k expired at 36.0
    assert len(cache) == 0


def test_table_memory_is_given_back_once_a_burst_has_expired():
    cache = ReplyCache()
    for i in range(20000):
        cache.insert(b"c%d" % i, b"c%d 0\n" % i, now=0.0)
    burst = sys.getsizeof(cache._entries)
    cache.insert(b"late", b"late 0\n", now=30.0)
    cache.sweep(now=36.0)
    assert len(cache) == 1
    assert sys.getsizeof(cache._entries) * 100 < burst
    assert cache.lookup(b"late", now=36.0) == b"late 0\n"
