"""The descriptor reserve kept for the control plane (-L)."""

from __future__ import annotations

import os

from rtpp.media.fdbudget import RECOUNT_INTERVAL_S, RECOUNT_MARGIN, FdBudget, count_open_fds


class FakeProcess:
    def __init__(self, open_fds: int) -> None:
        self.open_fds = open_fds
        self.counts = 0
        self.now = 0.0

    def count(self) -> int:
        self.counts += 1
        return self.open_fds

    def clock(self) -> float:
        return self.now


def budget(limit: int | None, open_fds: int, reserve: int = 16) -> tuple[FdBudget, FakeProcess]:
    proc = FakeProcess(open_fds)
    return FdBudget(limit, reserve, proc.count, proc.clock), proc


def test_room_while_the_reserve_stays_free():
    b, proc = budget(48, 30)
    assert b.room_for(2)  # 32 in use leaves 16
    b.opened(2)
    proc.open_fds += 2
    assert not b.room_for(2)  # 34 would leave 14


def test_closed_descriptors_give_room_back():
    b, proc = budget(48, 32)
    assert not b.room_for(2)
    b.closed(2)
    proc.open_fds -= 2
    assert b.room_for(2)


def test_no_limit_never_counts():
    b, proc = budget(None, 10**6)
    assert b.room_for(2)
    assert proc.counts == 0


def test_far_from_the_limit_counts_once_a_second():
    b, proc = budget(100_000, 100)
    for _ in range(1000):
        assert b.room_for(2)
        b.opened(2)
    assert proc.counts == 1
    assert b.in_use == 2100
    proc.open_fds = 2100
    proc.now += RECOUNT_INTERVAL_S
    assert b.room_for(2)
    assert proc.counts == 2
    assert b.in_use == 2100


def test_near_the_limit_every_check_counts():
    b, proc = budget(1000, 1000 - 16 - RECOUNT_MARGIN)
    b.room_for(2)
    b.room_for(2)
    assert proc.counts == 2


def test_other_descriptors_are_noticed_by_the_next_count():
    b, proc = budget(64, 20)
    assert b.room_for(2)
    proc.open_fds = 47  # control connections, recordings, ...
    assert not b.room_for(2)


def test_without_proc_the_kernel_is_the_only_limit():
    b = FdBudget(64, 16, lambda: None)
    assert b.room_for(2)


def test_count_open_fds_sees_a_new_descriptor():
    before = count_open_fds()
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        assert count_open_fds() == before + 1
    finally:
        os.close(fd)
