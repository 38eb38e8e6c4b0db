"""Shared fixtures: the `rtpproxy` daemon factory (see tests/helpers.py), the
in-process `app_factory` and the private network `lab` of the kernel tests."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

import netns_lab
from helpers import Proxy, next_port_range, start_proxy
from rtpp.app import App
from rtpp.config import Config, ListenAddr


@pytest.fixture
def rtpproxy() -> Iterator[Callable[..., Proxy]]:
    """Factory: `start(*flags, ctrl="udp", ports=None, foreground=True, wait=True,
    extra_env=None, command=None, wrap=(), terminal=None) -> Proxy`, the arguments of `start_proxy`.

    Adds `-f -F -p <tmp>/pid -d INFO`, a control socket and a distinct -m/-M range
    unless the flags already say otherwise; every daemon is stopped at teardown.
    """
    started: list[Proxy] = []

    def start(*flags: str, **options) -> Proxy:
        proxy = start_proxy(*flags, **options)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.cleanup()


@pytest.fixture
def app_factory() -> Iterator[Callable[..., App]]:
    """Factory: an in-process `App` on 127.0.0.1 with its own port range; closed at teardown."""
    apps: list[App] = []

    def make(**options) -> App:
        low, high = next_port_range()
        config = Config(
            listen=(ListenAddr(socket.AF_INET, "127.0.0.1"),),
            port_min=low,
            port_max=high - 1,
            **options,
        )
        app = App(config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


_lab_skip: list[str | None] = []


@pytest.fixture
def lab() -> Iterator[netns_lab.Lab]:
    """A relay namespace between two phone subnets (tests/netns_lab.py); skipped, with
    the reason, where namespaces or nftables NAT are not available."""
    if not _lab_skip:
        _lab_skip.append(netns_lab.skip_reason())
    if _lab_skip[0] is not None:
        pytest.skip(_lab_skip[0])
    with netns_lab.lab() as made:
        yield made
