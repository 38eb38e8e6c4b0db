"""`-s` control socket syntax (PROTOCOL.md 1.1)."""

from __future__ import annotations

import pytest

from rtpp.control.spec import ControlSpec, SpecError, parse_spec


@pytest.mark.parametrize(
    "text,expected",
    [
        ("unix:/run/r.sock", ControlSpec("unix", "unix:/run/r.sock", path="/run/r.sock")),
        ("/run/rtpp.sock", ControlSpec("unix", "/run/rtpp.sock", path="/run/rtpp.sock")),
        ("cunix:/tmp/c", ControlSpec("cunix", "cunix:/tmp/c", path="/tmp/c")),
        ("udp:127.0.0.1", ControlSpec("udp", "udp:127.0.0.1", host="127.0.0.1", port=22222)),
        ("udp:127.0.0.2:7", ControlSpec("udp", "udp:127.0.0.2:7", host="127.0.0.2", port=7)),
        ("udp:127.0.0.1:", ControlSpec("udp", "udp:127.0.0.1:", host="127.0.0.1", port=22222)),
        ("udp:*:9", ControlSpec("udp", "udp:*:9", host="", port=9)),
        ("udp6:::1:9000", ControlSpec("udp6", "udp6:::1:9000", host="::1", port=9000)),
        ("tcp:localhost:5", ControlSpec("tcp", "tcp:localhost:5", host="localhost", port=5)),
        ("tcp6:*:5", ControlSpec("tcp6", "tcp6:*:5", host="", port=5)),
        ("stdio:", ControlSpec("stdio", "stdio:")),
        ("stdioc:", ControlSpec("stdioc", "stdioc:")),
        ("systemd:", ControlSpec("systemd", "systemd:")),
        ("UDP:1.2.3.4:5", ControlSpec("unix", "UDP:1.2.3.4:5", path="UDP:1.2.3.4:5")),
        ("relative.sock", ControlSpec("unix", "relative.sock", path="relative.sock")),
    ],
)  # fmt: skip
def test_parse_spec(text, expected):
    assert parse_spec(text) == expected


def test_udp6_without_port_takes_the_last_group_as_port():
    assert parse_spec("udp6:::1").port == 1  # quirk: always give a port for IPv6


def test_properties():
    assert parse_spec("udp6:::1:5").ipv6 and parse_spec("udp6:::1:5").datagram
    assert parse_spec("unix:/x").one_shot and not parse_spec("cunix:/x").one_shot
    assert parse_spec("stdioc:").stdio and not parse_spec("tcp:1.2.3.4:5").datagram


@pytest.mark.parametrize("text", ["udp:127.0.0.1:x", "udp:127.0.0.1:0", "tcp:h:65536", "unix:"])
def test_bad_specs(text):
    with pytest.raises(SpecError):
        parse_spec(text)
