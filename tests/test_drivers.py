"""The epoll dispatcher: poll pacing (a busy relay lets packets gather between two polls
of its sockets) and the deferred analysis of the RTP packets it forwards."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

import gevent
import pytest

from rtpp.app import App
from rtpp.control.peer import Peer
from rtpp.media.drivers import POLL_PAUSE_MAX_S, poll_pause

PEER = Peer("udp", ("127.0.0.1", 5060))


@pytest.mark.parametrize(
    ("load", "pause"),
    [(0.0, 0.0), (-0.1, 0.0), (0.01, 0.00002), (0.25, 0.0005), (0.5, 0.001), (1.3, 0.001)],
)
def test_the_pause_grows_with_the_load_up_to_a_millisecond(load, pause):
    assert poll_pause(load) == pytest.approx(pause)
    assert poll_pause(load) <= POLL_PAUSE_MAX_S


@pytest.fixture
def app(app_factory) -> App:
    return app_factory()


def test_the_sweeper_sets_the_pause_from_the_last_seconds_load(app):
    sweeper = app.sweeper
    now = time.monotonic()
    sweeper.last_time = now - 1.0
    sweeper.last_cpu = time.process_time() - 0.3  # 30 % of a core in that second
    sweeper.sweep(now)
    assert app.media.load == pytest.approx(0.3, abs=0.05)
    assert app.media.ctx.poll_pause == pytest.approx(0.0006, abs=0.0001)
    sweeper.last_time = now
    sweeper.last_cpu = time.process_time()
    sweeper.sweep(now + 1.0)  # an idle second
    assert app.media.ctx.poll_pause < 0.00005


def test_a_poll_soon_after_the_previous_one_waits_out_the_pause(app):
    disp = app.media.driver
    app.media.ctx.poll_pause = 0.2
    started = time.monotonic()
    disp.dispatch()  # the first after an idle spell: no wait
    first = time.monotonic() - started
    disp.dispatch()  # right after it: waits until 0.2 s after the first returned
    second = time.monotonic() - started - first
    assert first < 0.1
    assert second >= 0.19


def test_no_pause_without_load(app):
    disp = app.media.driver
    app.media.ctx.poll_pause = 0.0
    started = time.monotonic()
    for _ in range(5):
        disp.dispatch()
    assert time.monotonic() - started < 0.1


#: Sends 40 RTP packets, one every 10 ms, from an inherited socket to a local port.
SENDER = """
import socket, struct, sys, time
sock = socket.socket(fileno=int(sys.argv[1]))
dst = ("127.0.0.1", int(sys.argv[2]))
for seq in range(40):
    sock.sendto(struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x5EED) + bytes(160), dst)
    time.sleep(0.01)
"""


class Call:
    """A call set up through the App, with the caller's and the callee's real sockets."""

    def __init__(self, app: App) -> None:
        self.caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (self.caller, self.callee):
            sock.bind(("127.0.0.1", 0))
        app.execute(f"U c 127.0.0.1 {self.caller.getsockname()[1]} f".encode(), PEER)
        answer = app.execute(f"L c 127.0.0.1 {self.callee.getsockname()[1]} f t".encode(), PEER)
        self.port_for_caller = int(answer.split()[0])
        sess = next(iter(app.media.sessions))
        self.from_caller = next(st for st in sess.rtp.streams if st.port == self.port_for_caller)

    def received(self) -> list[int]:
        """Sequence numbers of what reached the callee (after the relay had its turn); -1
        for a packet too short to have one."""
        gevent.sleep(0.1)
        self.callee.setblocking(False)
        got = []
        while True:
            try:
                data = self.callee.recv(2048)
            except BlockingIOError:
                return got
            got.append(struct.unpack_from("!H", data, 2)[0] if len(data) >= 4 else -1)

    def close(self) -> None:
        self.caller.close()
        self.callee.close()


def test_a_paced_relay_forwards_every_packet_in_order_with_few_polls(app):
    call = Call(app)
    disp = app.media.driver
    polls = []
    real_dispatch = disp.dispatch
    disp.watcher.stop()
    disp.watcher.start(lambda: polls.append(1) or real_dispatch())
    app.media.ctx.poll_pause = 0.05
    # The pause blocks this whole process: the packets come from another one.
    fd = call.caller.fileno()
    sender = subprocess.Popen(
        [sys.executable, "-c", SENDER, str(fd), str(call.port_for_caller)], pass_fds=[fd]
    )
    while sender.poll() is None:
        gevent.sleep(0.01)
    got = call.received()
    call.close()
    assert got == list(range(40))
    assert len(polls) <= 0.5 / 0.05 + 2  # unpaced, it would poll once per packet
    an = call.from_caller.analyzer
    assert (an.nsent, an.nrcvd, an.nlost, an.last_seq) == (40, 40, 0, 39)


def rtp(seq: int, ts: int, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, ts, 0x5EED) + b"\xd5" * 160


def test_forwarded_packets_are_analysed_in_order_when_results_are_read(app):
    call = Call(app)
    dst = ("127.0.0.1", call.port_for_caller)
    sent = [rtp(seq, seq * 160) for seq in range(100)]
    sent[50], sent[51] = sent[51], sent[50]  # one reordered pair
    sent.insert(70, sent[69])  # one duplicate
    sent.insert(80, b"\x80\x00\x01")  # too short to be RTP
    for data in sent:
        call.caller.sendto(data, dst)
        gevent.sleep(0.001)
    got = call.received()
    call.close()
    assert len(got) == len(sent) and got[80] == -1  # garbage is relayed, and counted
    st = call.from_caller
    an = st.analyzer
    assert st.npkts_in == len(sent) and an.nfed == len(sent)
    assert (an.nsent, an.nrcvd, an.ndups, an.nlost, an.perrs) == (100, 100, 1, 0, 1)
    assert not an.pending  # reading a result analysed what was deferred
