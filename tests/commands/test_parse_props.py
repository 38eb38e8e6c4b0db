"""Property tests of the parser: total on any input, and faithful on valid input."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from rtpp.commands.command import Command, ParseContext, RemoteAddr, Update
from rtpp.commands.errors import CommandError, ECode
from rtpp.commands.registry import parse_command

BOUNDED = settings(max_examples=300, deadline=None)
CTXS = st.sampled_from([ParseContext(), ParseContext(bridged=True)])
SEPARATORS = st.text(alphabet=" \t\r\n", min_size=1, max_size=3)

# Tokens: any bytes but separators and NUL; never the sub-command marker.
token_bytes = st.binary(min_size=1, max_size=12).map(
    lambda raw: bytes(b for b in raw if b not in b" \t\r\n\x00") or b"x"
)
tokens = token_bytes.filter(lambda t: t != b"&&").map(lambda t: t.decode("latin-1"))


def outcome(line: bytes, ctx: ParseContext) -> Command | ECode:
    try:
        return parse_command(line, ctx)
    except CommandError as exc:
        return exc.ecode


@BOUNDED
@given(st.binary(max_size=300), CTXS)
def test_any_bytes_give_command_or_command_error(line: bytes, ctx: ParseContext) -> None:
    assert isinstance(outcome(line, ctx), Command | ECode)


# Lines made of protocol-looking pieces reach much deeper than random bytes.
pieces = st.one_of(
    st.sampled_from(
        ["U", "L", "D", "P", "S", "R", "C", "N", "Q", "G", "I", "X", "V", "VF", "&&"]
        + ["Uc0,8", "UZ20", "UL10.0.0.1", "UR[::1]", "UL{x}", "UEI", "U6", "UAW", "Sr"]
        + ["ttl=5", "tos=0", "1.2.3.4", "0.0.0.0", "::", "::1", "-", "4000", "99999"]
        + ["%41", "%4", "a+b", "Dw", "P-1", "Qv", "Gv", "Ib", "Na", "Cp", "M3:1", "\x00"]
    ),
    tokens,
)


@BOUNDED
@given(st.lists(st.tuples(pieces, SEPARATORS), max_size=30), CTXS)
def test_protocol_shaped_lines_never_crash(parts: list, ctx: ParseContext) -> None:
    line = "".join(p + s for p, s in parts).encode("latin-1")
    assert isinstance(outcome(line, ctx), Command | ECode)


@BOUNDED
@given(st.lists(tokens, min_size=1, max_size=10), st.lists(SEPARATORS, min_size=11, max_size=11))
def test_separator_choice_does_not_matter(words: list, seps: list) -> None:
    plain = " ".join(words).encode("latin-1")
    mixed = "".join(s + w for s, w in zip(seps, words, strict=False)) + seps[-1]
    assert outcome(plain, ParseContext()) == outcome(mixed.encode("latin-1"), ParseContext())


@BOUNDED
@given(st.lists(tokens, min_size=1, max_size=8))
def test_command_letter_case_does_not_matter(words: list) -> None:
    first = words[0]
    if not first[0].isascii():
        return
    swapped = [first[0].swapcase() + first[1:], *words[1:]]
    line, other = (" ".join(w).encode("latin-1") for w in (words, swapped))
    assert outcome(line, ParseContext()) == outcome(other, ParseContext())


# Valid U commands round-trip to the generated fields.

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(min_value=0, max_value=65535)
codecs = st.lists(st.integers(0, 127).map(str), min_size=1, max_size=4).map(",".join)


@st.composite
def update_commands(draw: st.DrawFn) -> tuple[str, dict]:
    v6 = draw(st.booleans())
    host = draw(ipv6 if v6 else ipv4)
    fields = {
        "call_id": draw(tokens),
        "from_tag": draw(tokens),
        "to_tag": draw(st.none() | tokens),
        "host": host,
        "port": draw(ports),
        "weak": draw(st.booleans()),
        "ipv6": v6,
        "resize_ms": draw(st.sampled_from([0, 1, 20, 30, 999])),
        "codecs": draw(st.none() | codecs),
        "notify": draw(st.none() | st.tuples(tokens, st.binary(max_size=10))),
    }
    mods = ("6" if v6 else "") + ("W" if fields["weak"] else "")
    mods += f"Z{fields['resize_ms']}" if fields["resize_ms"] else ""
    mods += f"c{fields['codecs']}" if fields["codecs"] else ""
    words = ["U" + mods, fields["call_id"], host, str(fields["port"]), fields["from_tag"]]
    if fields["to_tag"] is not None:
        words.append(fields["to_tag"])
    if fields["notify"] is not None:
        sock, tag = fields["notify"]
        words += [sock, "".join(f"%{b:02x}" for b in tag) or "+"]
    return " ".join(words), fields


@BOUNDED
@given(update_commands())
def test_valid_update_round_trips(case: tuple[str, dict]) -> None:
    line, f = case
    cmd = parse_command(line.encode("latin-1"), ParseContext())
    assert isinstance(cmd, Update) and not cmd.lookup
    assert (cmd.call_id, cmd.from_tag, cmd.to_tag) == (f["call_id"], f["from_tag"], f["to_tag"])
    assert cmd.mods.weak == f["weak"] and cmd.mods.ipv6 == f["ipv6"]
    assert cmd.mods.resize_ms == f["resize_ms"] and cmd.mods.codecs == f["codecs"]
    low, high = (2, 45) if f["ipv6"] else (7, 15)
    if low <= len(f["host"]) <= high:
        packed = ipaddress.ip_address(f["host"]).packed
        assert ipaddress.ip_address(cmd.remote.host).packed == packed
        assert cmd.remote == RemoteAddr(cmd.remote.host, f["port"], hold=not any(packed))
    else:
        assert cmd.remote.host is None
    if f["notify"] is None:
        assert cmd.notify_socket is None and cmd.notify_tag is None
    else:
        assert cmd.notify_socket == f["notify"][0]
        assert cmd.notify_tag == (f["notify"][1] or b" ")


@BOUNDED
@given(st.sampled_from("DRSN"), tokens, tokens, st.none() | tokens)
def test_tag_commands_round_trip(letter: str, call_id: str, ftag: str, ttag: str | None) -> None:
    words = [letter, call_id, ftag] + ([ttag] if ttag is not None else [])
    cmd = parse_command(" ".join(words).encode("latin-1"), ParseContext())
    assert (cmd.call_id, cmd.from_tag, cmd.to_tag) == (call_id, ftag, ttag)
