"""Reply builders: errors, U/L port replies, sub-command composition, size limits."""

from __future__ import annotations

import pytest

from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.reply import (
    REPLY_BUF_BYTES,
    compose_subreplies,
    error,
    fits,
    limited_info,
    limited_query,
    limited_stats,
    number,
    ok,
    port_reply,
    require_fit,
)
from rtpp.control.peer import cookie_overhead


def test_error_is_e_and_number() -> None:
    assert error(ECode.CMDUNKN) == "E0"
    assert error(ECode.SESUNKN) == "E50"
    assert error(37) == "E37"


def test_ok_and_number() -> None:
    assert ok() == "0"
    assert number(20040107) == "20040107"


@pytest.mark.parametrize(
    ("args", "text"),
    [
        ((35502, None, False), "35502"),
        ((35502, None, True), "35502"),  # wildcard: no address, no " 6"
        ((35502, "198.51.100.5", False), "35502 198.51.100.5"),
        ((37114, "2001:db8::5", True), "37114 2001:db8::5 6"),
        ((37114, "adv.example.org", True), "37114 adv.example.org 6"),
    ],
)
def test_port_reply(args: tuple, text: str) -> None:
    assert port_reply(*args) == text


@pytest.mark.parametrize(
    ("results", "text"),
    [
        ([], "35400"),
        (["35402"], "35400 && 35402"),
        ([None], "35400"),
        ([""], "35400"),
        ([None, None], "35400"),
        ([None, "35402"], "35400 && 0 && 35402"),
        (["35402", None], "35400 && 35402"),
        ([None, None, "x"], "35400 && 0 && 0 && x"),
        ([-1], "35400 && -1"),
        ([None, -1], "35400 && 0 && -1"),
        ([-1, "35402"], "35400 && -1"),
        (["35402", -1, None], "35400 && 35402 && -1"),
        ([0, "x"], "35400 && 0 && x"),
    ],
)
def test_compose_subreplies(results: list, text: str) -> None:
    assert compose_subreplies("35400", results) == text


def test_compose_subreplies_overflow_ends_with_failure() -> None:
    main = "1" * 1000
    assert compose_subreplies(main, ["2" * 20]) == main + " && -1"
    assert compose_subreplies(main, ["2"]) == main + " && 2"


def test_compose_subreplies_boundary() -> None:
    # A formatted result needs room for itself, its NUL and the reserved " && -1\n\0".
    piece = " && 22"
    main = "1" * (REPLY_BUF_BYTES - len(piece) - 1 - 8)
    assert compose_subreplies(main, ["22"]) == main + piece
    assert compose_subreplies(main + "1", ["22"]) == main + "1 && -1"


def test_compose_subreplies_counts_cookie() -> None:
    main = "1" * 1000
    assert compose_subreplies(main, ["2"], overhead=20) == main + " && -1"


def test_cookie_overhead() -> None:
    assert cookie_overhead(None) == 0
    assert cookie_overhead(b"") == 0
    assert cookie_overhead(b"1234_5") == 7


def test_fits_counts_cookie_lf_and_nul() -> None:
    assert fits("x" * (REPLY_BUF_BYTES - 2))
    assert not fits("x" * (REPLY_BUF_BYTES - 1))
    assert not fits("x" * (REPLY_BUF_BYTES - 2), overhead=1)


@pytest.mark.parametrize(
    ("limit", "code"),
    [(limited_stats, "E25"), (limited_query, "E26"), (limited_info, "E86")],
)
def test_size_limited_replies(limit, code: str) -> None:
    assert limit("short") == "short"
    assert limit("x" * REPLY_BUF_BYTES) == code
    assert limit("x" * 1000, overhead=30) == code


def test_require_fit_raises_the_given_code() -> None:
    assert require_fit("short", ECode.RTOOBIG_1) == "short"
    with pytest.raises(CommandError) as info:
        require_fit("x" * REPLY_BUF_BYTES, ECode.RTOOBIG_1)
    assert info.value.ecode == ECode.RTOOBIG_1
