"""Unit and transcript tests of the control command parser."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtpp.commands import command as cmds
from rtpp.commands.command import (
    AddrMods,
    Copy,
    Delete,
    DeleteAll,
    Info,
    NoRecord,
    ParseContext,
    Play,
    Query,
    Record,
    RemoteAddr,
    Stats,
    StopPlay,
    SubCopy,
    SubDelete,
    SubLookup,
    SubSet,
    Update,
    Version,
    VersionFeature,
)
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.parse import tokenize, url_unquote
from rtpp.commands.registry import SPECS as COMMANDS
from rtpp.commands.registry import parse_command

DATA = Path(__file__).parent / "data"
PLAIN = ParseContext()
BRIDGED = ParseContext(bridged=True)


def parse(line: bytes | str, ctx: ParseContext = PLAIN):
    if isinstance(line, str):
        line = line.encode("latin-1")
    return parse_command(line, ctx)


def ecode_of(line: bytes | str, ctx: ParseContext = PLAIN) -> int:
    with pytest.raises(CommandError) as info:
        parse(line, ctx)
    return int(info.value.ecode)


# ---------------------------------------------------------------------------
# Transcripts


@dataclass(frozen=True)
class Case:
    source: str
    request: bytes
    expected: str
    ctx: ParseContext

    def __str__(self) -> str:
        return self.source


def unescape(text: str) -> bytes:
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1")


def parse_ctx_line(text: str) -> ParseContext:
    pairs = (item.split("=", 1) for item in text.split())
    return ParseContext(**{key: ast.literal_eval(value) for key, value in pairs})


def load_cases() -> list[Case]:
    cases = []
    for path in sorted(DATA.glob("*.txt")):
        if path.name == "README.txt":
            continue
        ctx = PLAIN
        for lineno, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            if line.startswith("@ctx "):
                ctx = parse_ctx_line(line[5:])
                continue
            request, sep, expected = line.partition(" -> ")
            assert sep, f"{path.name}:{lineno}: no ' -> '"
            cases.append(Case(f"{path.name}:{lineno}", unescape(request), expected.strip(), ctx))
    return cases


def lookup_field(obj: object, dotted: str) -> object:
    for part in dotted.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def check_case(case: Case) -> None:
    if case.expected.startswith("E"):
        assert f"E{ecode_of(case.request, case.ctx)}" == case.expected
        return
    kind, *checks = [part.strip() for part in case.expected.split("; ")]
    result = parse(case.request, case.ctx)
    assert type(result) is getattr(cmds, kind)
    for check in checks:
        name, _, value = check.partition("=")
        assert lookup_field(result, name) == ast.literal_eval(value), check


CASES = load_cases()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_transcript(case: Case) -> None:
    check_case(case)


def test_transcripts_are_loaded() -> None:
    assert len(CASES) > 200
    assert {c.source.split(":")[0] for c in CASES} >= {
        "tokenizer.txt",
        "precedence.txt",
        "update.txt",
        "commands.txt",
        "subcommands.txt",
    }


# ---------------------------------------------------------------------------
# Tokenizer


def test_tokenize_splits_on_runs_of_separators() -> None:
    assert tokenize(b" a\t\tb\r\nc  ") == [["a", "b", "c"]]


def test_tokenize_groups_subcommands() -> None:
    assert tokenize(b"U a && D && S ttl=1") == [["U", "a"], ["D"], ["S", "ttl=1"]]


def test_tokenize_keeps_glued_ampersands() -> None:
    assert tokenize(b"Q a&& &&b") == [["Q", "a&&", "&&b"]]


def test_tokenize_decodes_latin1() -> None:
    assert tokenize(b"D \x80\xff") == [["D", "\x80\xff"]]


@pytest.mark.parametrize(
    "line",
    [b"", b" \t\r\n", b"V\x00", b"\x00V", b"&&", b"V &&", b"V && && D", b"&& V"],
)
def test_tokenize_errors_are_e5(line: bytes) -> None:
    with pytest.raises(CommandError) as info:
        tokenize(line)
    assert info.value.ecode == ECode.PARSE_1


def test_twenty_three_tokens_allowed_in_every_list() -> None:
    words = " ".join(["x"] * 22)
    assert len(tokenize(f"G {words} && S {words}".encode())[1]) == 23


def test_twenty_four_tokens_rejected() -> None:
    words = " ".join(["x"] * 23)
    assert ecode_of(f"G {words}") == 5
    assert ecode_of(f"Q c f && S {words}") == 5


def test_sixteen_subcommands_rejected() -> None:
    assert isinstance(parse("Q c f" + " && D" * 15), Query)
    assert ecode_of("Q c f" + " && D" * 16) == 5


def test_vertical_tab_is_not_a_separator() -> None:
    assert parse(b"D c\x0bx f") == Delete(call_id="c\x0bx", from_tag="f", to_tag=None)


# ---------------------------------------------------------------------------
# Command letters and precedence


@pytest.mark.parametrize("letter", sorted(set("abcdefghijklmnopqrstuvwxyz") - set(COMMANDS)))
def test_unknown_letters_are_e0(letter: str) -> None:
    assert ecode_of(letter) == 0
    assert ecode_of(letter.upper() + " a b c") == 0


@pytest.mark.parametrize(
    "line",
    ["V", "VF 1", "U c - 1 f", "L c - 1 f", "D c f", "P c n 0 f", "S c f", "R c f"]
    + ["C c t f", "N c f", "Q c f", "G", "I", "X"],
)
def test_command_letters_are_case_insensitive(line: str) -> None:
    assert parse(line) == parse(line[0].lower() + line[1:])


def test_precedence_examples_of_spec() -> None:
    assert ecode_of("V x") == 1
    assert ecode_of("Vx") == 2
    assert ecode_of("Vx && D") == 2
    assert ecode_of("X && D") == 3
    assert ecode_of("Dx c f && D") == 3
    assert ecode_of("Dx c f") == 8
    assert ecode_of("U c 1.2.3.4 5 f t && D x") == 3
    assert ecode_of("Ux c 1.2.3.4 5 f t && D x") == 35


def test_update_word_is_u_with_unknown_modifier() -> None:
    assert ecode_of("Update c 192.0.2.1 4000 fA") == ECode.INVLARG_5


def test_errors_are_command_errors_only() -> None:
    for line in [b"", b"Z", b"V x", b"Vx", b"X && D", b"Dx c f"]:
        with pytest.raises(CommandError):
            parse(line)


# ---------------------------------------------------------------------------
# Whole-object results


def test_update_full_result() -> None:
    assert parse("UAWZ20c0,8 cid 192.0.2.10 4000 fA tB sock n%41+1") == Update(
        call_id="cid",
        remote=RemoteAddr(host="192.0.2.10", port=4000),
        from_tag="fA",
        to_tag="tB",
        mods=AddrMods(asymmetric=True, weak=True, resize_ms=20, codecs="0,8"),
        notify_socket="sock",
        notify_tag=b"nA 1",
    )


def test_update_seven_tokens_is_notify_without_to_tag() -> None:
    cmd = parse("U c 192.0.2.1 4000 fA sock tag")
    assert (cmd.to_tag, cmd.notify_socket, cmd.notify_tag) == (None, "sock", b"tag")


def test_lookup_full_result() -> None:
    assert parse("L6N c 2001:db8::5 5000 fA tB") == Update(
        call_id="c",
        remote=RemoteAddr(host="2001:db8::5", port=5000),
        from_tag="fA",
        to_tag="tB",
        mods=AddrMods(ipv6=True, new_port=True),
        lookup=True,
    )


def test_update_with_subcommands_full_result() -> None:
    cmd = parse("U c 192.0.2.1 4000 fA tB && L 192.0.2.2 5000 && C c2 f2 t2 && Sr ttl=60 && Dw")
    assert cmd.subcommands == (
        SubLookup(mods=AddrMods(), remote=RemoteAddr(host="192.0.2.2", port=5000)),
        SubCopy(call_id="c2", from_tag="f2", to_tag="t2"),
        SubSet(reverse=True, ttl=60),
        SubDelete(weak=True),
    )


def test_query_with_subcommands_full_result() -> None:
    assert parse("Qv c f t ttl && D") == Query(
        call_id="c",
        from_tag="f",
        to_tag="t",
        mods="v",
        names=("ttl",),
        subcommands=(SubDelete(),),
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("V", Version()),
        ("VF 20040107", VersionFeature(date="20040107")),
        ("Dw c f t", Delete(call_id="c", from_tag="f", to_tag="t", weak=True)),
        (
            "P-1 c n session f t",
            Play(call_id="c", name="n", codecs="session", from_tag="f", to_tag="t", count=-1),
        ),
        ("S c f", StopPlay(call_id="c", from_tag="f", to_tag=None)),
        ("Rs c f", Record(call_id="c", from_tag="f", to_tag=None, single_file=True)),
        (
            "Csp c udp:1.2.3.4:5 f t",
            Copy(
                call_id="c",
                target="udp:1.2.3.4:5",
                from_tag="f",
                to_tag="t",
                single_file=True,
                want_port=True,
            ),
        ),
        ("Na c f", NoRecord(call_id="c", from_tag="f", to_tag=None, both=True)),
        ("Gv a b", Stats(verbose=True, names=("a", "b"))),
        ("Ibl", Info(brief=True, load=True)),
        ("X", DeleteAll()),
    ],
)
def test_full_results(line: str, expected: object) -> None:
    assert parse(line) == expected


def test_ids_and_tags_keep_every_byte() -> None:
    raw = bytes(b for b in range(1, 256) if b not in b" \t\r\n")
    cmd = parse(b"D " + raw + b" t;1 %41")
    assert cmd.call_id.encode("latin-1") == raw
    assert (cmd.from_tag, cmd.to_tag) == ("t;1", "%41")


# ---------------------------------------------------------------------------
# Modifier details


def test_bridge_letters_need_bridging() -> None:
    assert ecode_of("UE c 1.2.3.4 5 f") == 11
    assert ecode_of("UI c 1.2.3.4 5 f") == 12
    assert parse("UEI c 1.2.3.4 5 f", BRIDGED).mods.bridge == "ei"


def test_third_bridge_letter_reports_its_own_error() -> None:
    assert ecode_of("UEIE c 1.2.3.4 5 f", BRIDGED) == 11
    assert ecode_of("UIEI c 1.2.3.4 5 f", BRIDGED) == 12


def test_bridged_subcommand_lookup() -> None:
    cmd = parse("U c 1.2.3.4 5 f t && LIE 1.2.3.5 6", BRIDGED)
    assert cmd.subcommands[0].mods.bridge == "ie"
    assert ecode_of("U c 1.2.3.4 5 f t && LIEI 1.2.3.5 6", BRIDGED) == 3


@pytest.mark.parametrize(("mods", "ms"), [("Z1", 1), ("Z999", 999), ("z30", 30), ("Z+5", 5)])
def test_resize_values(mods: str, ms: int) -> None:
    assert parse(f"U{mods} c 1.2.3.4 5 f").mods.resize_ms == ms


@pytest.mark.parametrize("mods", ["Z", "Z0", "Z1000", "Z-1", "Zx", "Z+"])
def test_resize_errors(mods: str) -> None:
    assert ecode_of(f"U{mods} c 1.2.3.4 5 f") == 13


def test_ipv4_after_local_swallows_digits_and_dots() -> None:
    mods = parse("UL10.0.0.16 c 1.2.3.4 5 f").mods
    assert (mods.local_addr, mods.ipv6) == ("10.0.0.16", False)
    mods = parse("U6L10.0.0.1 c ::1 5 f").mods
    assert (mods.local_addr, mods.ipv6) == ("10.0.0.1", True)


def test_later_local_modifier_replaces_earlier() -> None:
    mods = parse("UL{ext}L1.2.3.4 c 1.2.3.4 5 f").mods
    assert (mods.local_addr, mods.local_label) == ("1.2.3.4", None)


def test_symmetric_and_asymmetric_last_wins() -> None:
    assert parse("UAS c - 1 f").mods.symmetric
    assert parse("USA c - 1 f").mods.asymmetric


# ---------------------------------------------------------------------------
# Addresses


def test_ignored_address_does_not_look_at_port() -> None:
    assert parse("U c - notaport f").remote == RemoteAddr(host=None, port=0)


def test_address_length_bounds_ipv4() -> None:
    assert parse("U c 1.1.1.1 1 f").remote.host == "1.1.1.1"  # 7
    assert parse("U c 1.1.1. 1 f").remote.host is None  # 6
    assert parse("U c 111.111.111.111 1 f").remote.host == "111.111.111.111"  # 15
    assert parse("U c 0111.111.111.111 1 f").remote.host is None  # 16


def test_address_length_bounds_ipv6() -> None:
    assert parse("U6 c :: 1 f").remote.hold
    assert parse("U6 c : 1 f").remote.host is None
    long_ok = "0000:0000:0000:0000:0000:ffff:192.168.100.228"  # 45
    assert parse(f"U6 c {long_ok} 1 f").remote.host == "::ffff:192.168.100.228"
    assert parse(f"U6 c {long_ok}0 1 f").remote.host is None


def test_hold_addresses() -> None:
    assert parse("U c 0.0.0.0 1 f").remote.hold
    assert parse("U6 c 0:0::0 1 f").remote.hold
    assert not parse("U c 0.0.0.1 1 f").remote.hold


def test_subcommand_address_error_is_e3_not_e37() -> None:
    assert ecode_of("U c 1.2.3.4 5 f t && L 1.2.3.4 x") == 3
    assert ecode_of("U c 1.2.3.4 x f t && L 1.2.3.4 5") == 37


# ---------------------------------------------------------------------------
# Notify tag


@pytest.mark.parametrize(
    ("text", "raw"),
    [("", b""), ("abc", b"abc"), ("a+b", b"a b"), ("%2b", b"+"), ("%00%FF", b"\x00\xff")]
    + [("%41%42c", b"ABc"), ("\xe9", b"\xe9")],
)
def test_url_unquote(text: str, raw: bytes) -> None:
    assert url_unquote(text) == raw


@pytest.mark.parametrize("text", ["%", "%1", "a%", "%g0", "%0g", "%%41"])
def test_url_unquote_errors(text: str) -> None:
    with pytest.raises(CommandError) as info:
        url_unquote(text)
    assert info.value.ecode == ECode.PARSE_10


# ---------------------------------------------------------------------------
# Sub-command placement


@pytest.mark.parametrize("main", ["U c 1.2.3.4 5 f t", "U c 1.2.3.4 5 f", "L c 1.2.3.4 5 f t"])
@pytest.mark.parametrize("sub", ["D", "Dw", "S ttl=5", "Sr tos=8"])
def test_delete_and_set_allowed_after_u_l_q(main: str, sub: str) -> None:
    assert len(parse(f"{main} && {sub}").subcommands) == 1
    assert len(parse(f"Q c f t && {sub}").subcommands) == 1


@pytest.mark.parametrize(
    "main", ["U c 1.2.3.4 5 f", "U c 1.2.3.4 5 f s t", "L c 1.2.3.4 5 f t", "Q c f t"]
)
@pytest.mark.parametrize("sub", ["L 1.2.3.4 5", "C c f t"])
def test_lookup_and_copy_need_update_with_to_tag(main: str, sub: str) -> None:
    assert ecode_of(f"{main} && {sub}") == 3


@pytest.mark.parametrize(
    "main", ["V", "VF 1", "D c f", "P c n 0 f", "S c f", "R c f", "C c t f", "N c f", "G", "I", "X"]
)
def test_subcommands_rejected_elsewhere(main: str) -> None:
    assert ecode_of(f"{main} && D") == 3


@pytest.mark.parametrize(
    ("template", "code"),
    [
        ("UZ{n} c 1.2.3.4 5 f", 13),
        ("P{n} c n 0 f", 17),
        ("U c 1.2.3.4 {n} f", 37),
        ("U c 1.2.3.4 5 f t && S ttl={n}", 3),
    ],
)
def test_huge_numbers_are_range_errors(template: str, code: int) -> None:
    assert ecode_of(template.format(n="9" * 6000)) == code
    assert ecode_of(template.format(n="-" + "9" * 6000)) == code


def test_leading_zeros_do_not_overflow() -> None:
    assert parse("UZ" + "0" * 6000 + "20 c 1.2.3.4 5 f").mods.resize_ms == 20
    assert parse("U c 1.2.3.4 " + "0" * 6000 + "80 f").remote.port == 80
