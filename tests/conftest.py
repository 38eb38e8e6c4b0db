"""Shared fixtures: the `rtpproxy` daemon factory (see tests/helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from helpers import Proxy, start_proxy


@pytest.fixture
def rtpproxy() -> Iterator[Callable[..., Proxy]]:
    """Factory: `start(*flags, ctrl="udp", ports=None, foreground=True, wait=True) -> Proxy`.

    Adds `-f -F -p <tmp>/pid -d INFO`, a control socket and a distinct -m/-M range
    unless the flags already say otherwise; every daemon is stopped at teardown.
    """
    started: list[Proxy] = []

    def start(
        *flags: str,
        ctrl: str = "udp",
        ports: tuple[int, int] | None = None,
        foreground: bool = True,
        wait: bool = True,
        extra_env: dict | None = None,
    ) -> Proxy:
        proxy = start_proxy(
            *flags, ctrl=ctrl, ports=ports, foreground=foreground, wait=wait, extra_env=extra_env
        )
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.cleanup()
