"""P's codec list and error codes (PROTOCOL.md §4.5, OPERATIONS.md §4.1, §4.8)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rtpp.commands import play
from rtpp.commands.command import Play
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.play import parse_codecs
from rtpp.media.session import Session


@pytest.mark.parametrize(
    ("text", "codecs"),
    [
        ("0", [0]),
        ("18,8,0", [18, 8, 0]),
        ("0,8,", [0, 8]),
        # Exactly one separator character is skipped, whatever it is.
        ("0;8", [0, 8]),
        ("0x8", [0, 8]),
        ("08", [8]),
        # Where no number can be read the list ends.
        ("0,,8", [0]),
        ("8,0,,18", [8, 0]),
        ("0,x8", [0]),
        (",0", []),
        ("x0", []),
        ("", []),
        ("+", []),
        # strtol takes a sign.
        ("+8", [8]),
        ("0,+8", [0, 8]),
        ("-1,0", [-1, 0]),
    ],
)
def test_codec_list_is_read_as_strtol_reads_it(text, codecs):
    assert parse_codecs(text) == codecs


class FakePlayers:
    def __init__(self) -> None:
        self.started: list[tuple[int, bytes]] = []

    def stop(self, st) -> bool:
        return False

    def start(self, st, schedule) -> None:
        self.started.append((schedule.payload_type, schedule.prompt))


@pytest.fixture
def app():
    sess = Session("cid", "ftag", 0.0, 0.0)
    sessions = SimpleNamespace(
        find_exact=lambda call_id, ftag, ttag: (sess, 0) if call_id == "cid" else None
    )
    return SimpleNamespace(
        sessions=sessions, media=SimpleNamespace(players=FakePlayers()), sess=sess
    )


@pytest.fixture
def prompt(tmp_path) -> str:
    name = str(tmp_path / "t.raw")
    (tmp_path / "t.raw.0").write_bytes(b"\xff" * 160)
    (tmp_path / "t.raw.8").write_bytes(b"\xd5" * 160)
    return name


def run(app, name: str, codecs: str, call_id: str = "cid", count: int = 1) -> str:
    return play.handle(Play(call_id, name, codecs, "ftag", "ttag", count), app)


@pytest.mark.parametrize(("codecs", "pt"), [("0,,8", 0), ("+8", 8), ("18,0,,8", 0)])
def test_list_with_an_empty_entry_plays_what_comes_before_it(app, prompt, codecs, pt):
    assert run(app, prompt, codecs) == "0"
    assert app.media.players.started == [(pt, (b"\xff" if pt == 0 else b"\xd5") * 160)]


@pytest.mark.parametrize("codecs", ["x0", ",0", "18", "-8", "18,,0"])
def test_nothing_to_play_is_e60(app, prompt, codecs):
    with pytest.raises(CommandError) as err:
        run(app, prompt, codecs)
    assert err.value.ecode == ECode.PLRFAIL
    assert app.media.players.started == []


def test_session_codecs_use_the_same_reading(app, prompt):
    with pytest.raises(CommandError) as err:
        run(app, prompt, "session")
    assert err.value.ecode == ECode.INVLARG_5
    app.sess.rtp.streams[0].codecs = "8,,0"
    assert run(app, prompt, "session") == "0"
    assert [p for p, _ in app.media.players.started] == [8]


def test_unknown_session_is_e50(app, prompt):
    with pytest.raises(CommandError) as err:
        run(app, prompt, "0", call_id="other")
    assert err.value.ecode == ECode.SESUNKN


def test_count_zero_only_stops(app, prompt):
    assert run(app, prompt, "x", count=0) == "0"
    assert app.media.players.started == []


def test_start_logs_the_chosen_ssrc_and_sequence_number(app, prompt, caplog):
    schedules = []
    app.media.players.start = lambda st, schedule: schedules.append(schedule)
    with caplog.at_level("INFO", logger="rtpp.commands.play"):
        assert run(app, prompt, "8") == "0"
    (schedule,) = schedules
    message = caplog.records[-1].getMessage()
    assert message.startswith(f"playing {prompt}.8 to port ")
    assert message.endswith(f", ssrc={schedule.ssrc:08x} seq={schedule.seq0}")
