"""Session._reroute: every change a stream's route depends on reaches the driver, and the
driver sees the route route.decide gave."""

from __future__ import annotations

import socket

import pytest

from rtpp.media.analyzer import RtpAnalyzer
from rtpp.media.drivers import UserSpaceDriver
from rtpp.media.latch import Verdict
from rtpp.media.playback.resizer import Resizer
from rtpp.media.ports import open_media_socket
from rtpp.media.route import Route
from rtpp.media.session import Session

HOST = "127.0.0.1"
A = ("192.0.2.1", 4000)
B = ("192.0.2.2", 5000)


class RecordingDriver(UserSpaceDriver):
    """The user-space driver, noting the RTP leg-1 route at each apply_routes."""

    def __init__(self) -> None:
        self.seen: list[Route] = []
        self.watched: list[int] = []

    def watch(self, st) -> None:
        self.watched.append(st.port)

    def unwatch(self, st) -> None:
        self.watched.remove(st.port)

    def apply_routes(self, sess) -> None:
        super().apply_routes(sess)
        self.seen.append(sess.rtp.streams[1].route)


class Sink:
    released = False

    def write(self, data, src, dst, arrival_wall_s) -> None:
        pass

    def release(self) -> None:
        self.released = True


@pytest.fixture
def sess():
    """A complete session with ports on both legs; leg 0 knows B, nothing is latched."""
    s = Session("call", "tag", 0.0, 0.0)
    s.driver = RecordingDriver()
    s.rtp.streams[1].analyzer = RtpAnalyzer()
    for st in s.streams():
        st.open(open_media_socket(socket.AF_INET, HOST, 0, 0), None)  # type: ignore[arg-type]
    s.update_leg(0, B, socket.AF_INET, False, False, None)
    s.mark_complete()
    yield s
    for st in s.streams():
        st.close()


def test_latching_makes_the_stream_plain_and_the_driver_serves_it(sess):
    st = sess.rtp.streams[1]
    assert st.route is Route.FULL and st.fast_src is None
    st.take_source(A, Verdict.LATCH)
    assert sess.driver.seen[-1] is Route.PLAIN
    assert (st.fast_src, st.fwd_dst) == (A, B)


@pytest.mark.parametrize(
    "change",
    [
        lambda st: st.attach_recorder(Sink()),
        lambda st: st.attach_copier(Sink()),
        lambda st: st.attach_resizer(Resizer(40)),
        lambda st: st.peer.set_player(object()),  # the other party hears a prompt
        lambda st: st.session.update_leg(1, A, socket.AF_INET, False, True, None),  # asymmetric
        lambda st: st.session.mark_deleted(),
        lambda st: st.peer.close(),
    ],
)
def test_each_change_the_route_depends_on_reaches_the_driver(sess, change):
    st = sess.rtp.streams[1]
    st.take_source(A, Verdict.LATCH)
    calls = len(sess.driver.seen)
    change(st)
    assert len(sess.driver.seen) > calls
    assert sess.driver.seen[-1] is Route.FULL
    assert st.fast_src is None and st.fwd is None


def test_detaching_brings_the_plain_route_back_and_releases_the_sink(sess):
    st = sess.rtp.streams[1]
    st.take_source(A, Verdict.LATCH)
    sink = Sink()
    st.attach_recorder(sink)
    assert st.route is Route.FULL
    assert st.detach_recorder() and sink.released
    assert st.route is Route.PLAIN and st.fast_src == A


def test_the_driver_reads_every_open_socket_until_it_is_closed(sess):
    assert sorted(sess.driver.watched) == sorted(st.port for st in sess.streams())
    sess.rtp.streams[0].close()
    assert sess.rtp.streams[0].port not in sess.driver.watched
