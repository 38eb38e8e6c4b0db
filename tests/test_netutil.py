"""Address helpers: IPv4 look-ups at start-up and --no_resolve."""

from __future__ import annotations

import socket

import pytest

from rtpp.netutil import ipv4_of


def test_ipv4_of_resolves_a_name_without_no_resolve():
    assert ipv4_of("localhost", no_resolve=False) == socket.gethostbyname("localhost")
    assert ipv4_of("127.0.0.1", no_resolve=False) == "127.0.0.1"


@pytest.mark.parametrize("host", ["127.0.0.1", "192.0.2.7"])
def test_ipv4_of_takes_a_numeric_host_with_no_resolve(host):
    assert ipv4_of(host, no_resolve=True) == host


@pytest.mark.parametrize("host", ["localhost", "somehost.example", "::1", "1.2.3.4.5", ""])
def test_ipv4_of_refuses_anything_else_with_no_resolve_and_never_asks_dns(monkeypatch, host):
    def no_dns(*args):
        raise AssertionError("DNS asked")

    monkeypatch.setattr(socket, "gethostbyname", no_dns)
    with pytest.raises(OSError):
        ipv4_of(host, no_resolve=True)
