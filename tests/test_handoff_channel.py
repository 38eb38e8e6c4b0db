"""The handoff channel and state document: framing, descriptors, formats, values."""

from __future__ import annotations

import array
import os
import socket
import threading

import pytest

from rtpp.handoff import state
from rtpp.handoff.channel import FDS_PER_PACKET, Channel, ChannelError, socket_pair


@pytest.fixture
def pair():
    a, b = socket_pair()
    yield Channel(a), Channel(b)
    a.close()
    b.close()


def test_message_with_a_large_body_and_many_descriptors(pair):
    ours, theirs = pair
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(FDS_PER_PACKET + 7)]
    body = {"blob": "x" * 300_000, "n": 7}
    try:
        sender = threading.Thread(
            target=ours.send, args=("STATE", body, [s.fileno() for s in socks])
        )
        sender.start()  # the body is larger than the socket buffer
        msg = theirs.recv(5)
        sender.join()
        assert msg.kind == "STATE" and msg.json() == body
        assert len(msg.fds) == len(socks)
        for sock, fd in zip(socks, msg.fds, strict=True):
            assert os.fstat(fd).st_ino == os.fstat(sock.fileno()).st_ino
            assert not os.get_inheritable(fd)
        msg.close_fds()
    finally:
        for s in socks:
            s.close()


def test_recv_times_out_and_reports_eof(pair):
    ours, theirs = pair
    with pytest.raises(ChannelError, match="in time"):
        theirs.recv(0.05)
    ours.close()
    with pytest.raises(ChannelError, match="closed"):
        theirs.recv(1)


def test_a_channel_must_be_a_seqpacket_socket():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        fd = os.dup(s.fileno())
        with pytest.raises(ChannelError):
            Channel.from_fd(fd)
        os.close(fd)


def test_values_round_trip_through_json():
    import json

    value = {
        "addr": ("127.0.0.1", 4000),
        "v6": ("::1", 5, 0, 0),
        "tag": b"\x00\xffgone",
        "seen": bytearray(b"\x01\x02"),
        "ring": array.array("q", [1, -1, 7]),
        "none": None,
        "nested": [("a", 1), {"k": (1, 2)}],
        (2, "x"): 1.5,
    }
    back = state.decode(json.loads(json.dumps(state.encode(value))))
    assert back == value
    assert type(back["seen"]) is bytearray and type(back["addr"]) is tuple


def test_newer_and_older_formats_are_refused():
    state.sections_of(state.document({"a": 1}))
    for fmt in (state.FORMAT + 1, state.OLDEST_READABLE - 1, "1", None):
        with pytest.raises(state.StateError, match="format"):
            state.sections_of({"format": fmt, "sections": {}})


def test_each_descriptor_is_taken_once():
    fds = state.FdSource([10, 11])
    assert fds.take(1) == 11
    with pytest.raises(state.StateError):
        fds.take(1)
    with pytest.raises(state.StateError):
        fds.take(2)
    assert fds.untaken() == [10]
