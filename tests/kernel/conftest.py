"""Fixtures of the kernel fast-path tests: a private network (netns_lab) per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import netns_lab

_reason: list[str | None] = []


def kernel_skip_reason() -> str | None:
    if not _reason:
        _reason.append(netns_lab.skip_reason())
    return _reason[0]


@pytest.fixture
def lab() -> Iterator[netns_lab.Lab]:
    reason = kernel_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with netns_lab.lab() as made:
        yield made
