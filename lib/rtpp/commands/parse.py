"""Control command parser: one command line (UDP cookie removed) -> a typed `Command`.

Follows PROTOCOL.md §3 (tokenizer, error precedence), §4 (per-command syntax) and §4.15
(sub-commands). Every failure raises `CommandError`; nothing else escapes.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from rtpp.commands.command import (
    AddrMods,
    Command,
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
    SubCommand,
    SubCopy,
    SubDelete,
    SubLookup,
    SubSet,
    Update,
    Version,
    VersionFeature,
)
from rtpp.commands.errors import CommandError, ECode

MAX_TOKENS = 23  # per token list (main command or one sub-command), command word included
MAX_SUBCOMMANDS = 15
SUBC_SEPARATOR = "&&"

INT_MAX = 2**31 - 1
PTIME_MAX_MS = 999

_SEPARATORS = re.compile(rb"[ \t\r\n]+")
_SIGNED_INT = re.compile(r"[+-]?[0-9]+\Z")
_DIGITS = re.compile(r"[0-9]+\Z")
# strtol(): optional C white space other than the separators, optional sign, digits.
_STRTOL_PREFIX = re.compile(r"[\x0b\x0c]*([+-]?)([0-9]*)")
_IPV4_CHARS = re.compile(r"[0-9.]*")
_IPV6_CHARS = re.compile(r"[0-9a-fA-F:]*")
_CODEC_CHARS = re.compile(r"[0-9,]*")
_C_SPACE = frozenset(" \t\n\x0b\x0c\r")

# Longer digit strings are out of every range here (and int() refuses huge ones).
MAX_INT_DIGITS = 20

IPV4_TEXT_LEN = (7, 15)
IPV6_TEXT_LEN = (2, 45)


def fail(code: ECode) -> CommandError:
    return CommandError(code)


def ascii_lower(ch: str) -> str:
    """Case-folded ASCII letter, "" for anything outside ASCII."""
    return ch.lower() if ch.isascii() else ""


# ---------------------------------------------------------------------------
# Tokenizer (§3.1)


def tokenize(line: bytes) -> list[list[str]]:
    """Split into the main token list followed by one list per sub-command."""
    if b"\0" in line:
        raise fail(ECode.PARSE_1)
    lists: list[list[str]] = [[]]
    for raw in _SEPARATORS.split(line):
        if not raw:
            continue
        token = raw.decode("latin-1")
        if token == SUBC_SEPARATOR:
            if len(lists) > MAX_SUBCOMMANDS:
                raise fail(ECode.PARSE_1)
            lists.append([])
            continue
        if len(lists[-1]) == MAX_TOKENS:
            raise fail(ECode.PARSE_1)
        lists[-1].append(token)
    if any(not tokens for tokens in lists):
        raise fail(ECode.PARSE_1)
    return lists


# ---------------------------------------------------------------------------
# Small value parsers


def digits_value(digits: str) -> int:
    """Value of an ASCII digit string; saturates instead of converting huge strings."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= MAX_INT_DIGITS else 10**MAX_INT_DIGITS


def parse_c_int(text: str, low: int, high: int) -> int | None:
    """atoi-style strict integer (whole text, optional sign) within [low, high]."""
    if not _SIGNED_INT.match(text):
        return None
    value = digits_value(text.lstrip("+-"))
    value = -value if text.startswith("-") else value
    return value if low <= value <= high else None


def parse_strtol(text: str, pos: int) -> tuple[int, int]:
    """strtol(text + pos, &end, 10): (value, end). No digits -> (0, pos)."""
    m = _STRTOL_PREFIX.match(text, pos)
    assert m is not None
    sign, digits = m.group(1), m.group(2)
    if not digits:
        return 0, pos
    value = digits_value(digits)
    return (-value if sign == "-" else value), m.end()


def url_unquote(text: str) -> bytes:
    """Notify tag decoding: `%XX` -> byte, `+` -> space; a malformed escape -> E10."""
    raw = text.encode("latin-1")
    out = bytearray()
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == 0x25:  # '%'
            hexpart = raw[i + 1 : i + 3]
            if len(hexpart) != 2 or not all(c in b"0123456789abcdefABCDEF" for c in hexpart):
                raise fail(ECode.PARSE_10)
            out.append(int(hexpart, 16))
            i += 3
            continue
        out.append(0x20 if ch == 0x2B else ch)  # '+' -> ' '
        i += 1
    return bytes(out)


# ---------------------------------------------------------------------------
# Remote address of U/L (§4.3)


def _ipv4_packed(host: str) -> bytes | None:
    # glibc's numeric IPv4 parser (inet_aton) also takes octal/hex/short forms.
    if not host.isascii() or any(c in _C_SPACE for c in host):
        return None
    try:
        return socket.inet_aton(host)
    except OSError:
        return None


def _ipv6_packed(host: str) -> tuple[bytes, str] | None:
    if not host.isascii():
        return None
    addr, sep, scope = host.partition("%")
    try:
        packed = socket.inet_pton(socket.AF_INET6, addr)
    except OSError:
        return None
    text = socket.inet_ntop(socket.AF_INET6, packed)
    if not sep:
        return packed, text
    if not scope or not _scope_exists(scope):
        return None
    return packed, f"{text}%{scope}"


def _scope_exists(scope: str) -> bool:
    if _DIGITS.match(scope):
        return True
    try:
        socket.if_nametoindex(scope)
    except OSError:
        return False
    return True


def parse_remote(addr: str, port: str, ipv6: bool, bad: ECode) -> RemoteAddr:
    """`<addr> <port>`; out-of-range length -> ignored, else numeric or `bad`."""
    low, high = IPV6_TEXT_LEN if ipv6 else IPV4_TEXT_LEN
    if not low <= len(addr) <= high:
        return RemoteAddr(host=None, port=0)
    port_num = parse_port(port)
    if ipv6:
        parsed = _ipv6_packed(addr)
        packed, host = parsed if parsed is not None else (None, "")
    else:
        packed = _ipv4_packed(addr)
        host = socket.inet_ntoa(packed) if packed is not None else ""
    if packed is None or port_num is None:
        raise fail(bad)
    return RemoteAddr(host=host, port=port_num, hold=not any(packed))


def parse_port(text: str) -> int | None:
    if not _DIGITS.match(text):
        return None
    value = digits_value(text)
    return value if value <= 0xFFFF else None


# ---------------------------------------------------------------------------
# U/L modifiers (§4.3)


@dataclass(slots=True)
class _ModState:
    asymmetric: bool = False
    symmetric: bool = False
    weak: bool = False
    ipv6: bool = False
    bridge: str = ""
    resize_ms: int = 0
    codecs: str | None = None
    local_addr: str | None = None
    local_label: str | None = None
    route_to: str | None = None
    new_port: bool = False

    def freeze(self) -> AddrMods:
        return AddrMods(
            asymmetric=self.asymmetric,
            symmetric=self.symmetric,
            weak=self.weak,
            ipv6=self.ipv6,
            bridge=self.bridge,
            resize_ms=self.resize_ms,
            codecs=self.codecs,
            local_addr=self.local_addr,
            local_label=self.local_label,
            route_to=self.route_to,
            new_port=self.new_port,
        )


def extract_addr(text: str, pos: int) -> tuple[str, int] | None:
    """An IPv4 literal (digits and dots) or `[ipv6]` at `pos`: (address, end) or None."""
    if text.startswith("[", pos):
        m = _IPV6_CHARS.match(text, pos + 1)
        assert m is not None
        if not m.group() or not text.startswith("]", m.end()):
            return None
        return m.group(), m.end() + 1
    m = _IPV4_CHARS.match(text, pos)
    assert m is not None
    if not m.group():
        return None
    return m.group(), m.end()


def _mod_local(st: _ModState, text: str, pos: int) -> int:
    if text.startswith("{", pos):
        close = text.find("}", pos + 1)
        if close <= pos + 1:
            raise fail(ECode.PARSE_15)
        st.local_label = text[pos + 1 : close]
        st.local_addr = None
        return close + 1
    found = extract_addr(text, pos)
    if found is None:
        raise fail(ECode.PARSE_15)
    st.local_addr, end = found
    st.local_label = None
    return end


def _mod_route(st: _ModState, text: str, pos: int) -> int:
    found = extract_addr(text, pos)
    if found is None:
        raise fail(ECode.PARSE_16)
    st.route_to, end = found
    return end


def _mod_resize(st: _ModState, text: str, pos: int) -> int:
    value, end = parse_strtol(text, pos)
    if not 0 < value <= PTIME_MAX_MS:
        raise fail(ECode.PARSE_13)
    st.resize_ms = value
    return end


def _mod_codecs(st: _ModState, text: str, pos: int) -> int:
    m = _CODEC_CHARS.match(text, pos)
    assert m is not None
    if not m.group() or st.codecs is not None:
        raise fail(ECode.PARSE_14)
    st.codecs = m.group()
    return m.end()


def _mod_bridge(st: _ModState, letter: str, bridged: bool) -> None:
    if not bridged or len(st.bridge) >= 2:
        raise fail(ECode.PARSE_11 if letter == "e" else ECode.PARSE_12)
    st.bridge += letter


def _mod_flag(st: _ModState, letter: str) -> None:
    if letter == "a":
        st.asymmetric, st.symmetric = True, False
    elif letter == "s":
        st.asymmetric, st.symmetric = False, True
    elif letter == "w":
        st.weak = True
    elif letter == "n":
        st.new_port = True
    else:  # "6"
        st.ipv6 = True


_ARG_MODS: dict[str, Callable[[_ModState, str, int], int]] = {
    "l": _mod_local,
    "r": _mod_route,
    "z": _mod_resize,
    "c": _mod_codecs,
}
_FLAG_MODS = frozenset("aswn6")


def parse_addr_mods(text: str, ctx: ParseContext) -> AddrMods:
    """U/L modifier letters, left to right (the first bad one decides the error)."""
    st = _ModState()
    pos = 0
    while pos < len(text):
        letter = ascii_lower(text[pos])
        pos += 1
        if letter in _ARG_MODS:
            pos = _ARG_MODS[letter](st, text, pos)
        elif letter in ("e", "i"):
            _mod_bridge(st, letter, ctx.bridged)
        elif letter and letter in _FLAG_MODS:
            _mod_flag(st, letter)
        else:
            raise fail(ECode.INVLARG_5)
    return st.freeze()


# ---------------------------------------------------------------------------
# Command table and per-command builders


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """Static properties of one command letter (token counts include the command word)."""

    name: str
    min_tokens: int
    max_tokens: int
    has_mods: bool
    has_subc: bool
    build: Callable[[str, list[str], ParseContext], Command]


def opt_token(tokens: list[str], index: int) -> str | None:
    return tokens[index] if index < len(tokens) else None


def build_update(mods: str, tokens: list[str], ctx: ParseContext) -> Update:
    return _build_ul(mods, tokens, ctx, lookup=False)


def build_lookup(mods: str, tokens: list[str], ctx: ParseContext) -> Update:
    return _build_ul(mods, tokens, ctx, lookup=True)


def _build_ul(mods: str, tokens: list[str], ctx: ParseContext, lookup: bool) -> Update:
    to_tag = opt_token(tokens, 5)
    notify_socket: str | None = None
    notify_tag: bytes | None = None
    if not lookup and len(tokens) > 6:
        if len(tokens) == 7:  # positional: 7 tokens = notify pair without to_tag
            to_tag = None
        notify_socket = tokens[-2]
        notify_tag = url_unquote(tokens[-1])
    amods = parse_addr_mods(mods, ctx)
    remote = parse_remote(tokens[2], tokens[3], amods.ipv6, ECode.INVLARG_7)
    return Update(
        call_id=tokens[1],
        remote=remote,
        from_tag=tokens[4],
        to_tag=to_tag,
        mods=amods,
        lookup=lookup,
        notify_socket=notify_socket,
        notify_tag=notify_tag,
    )


def _letters(mods: str, allowed: str, bad: ECode) -> set[str]:
    """Modifier letters, case-insensitive, each in `allowed` (else `bad`)."""
    seen = set()
    for ch in mods:
        letter = ascii_lower(ch)
        if not letter or letter not in allowed:
            raise fail(bad)
        seen.add(letter)
    return seen


def build_delete(mods: str, tokens: list[str], ctx: ParseContext) -> Delete:
    weak = "w" in _letters(mods, "w", ECode.PARSE_4)
    return Delete(call_id=tokens[1], from_tag=tokens[2], to_tag=opt_token(tokens, 3), weak=weak)


def build_play(mods: str, tokens: list[str], ctx: ParseContext) -> Play:
    count = 1
    if mods:
        parsed = parse_c_int(mods, -INT_MAX - 1, INT_MAX)
        if parsed is None:
            raise fail(ECode.PARSE_6)
        count = parsed
    return Play(
        call_id=tokens[1],
        name=tokens[2],
        codecs=tokens[3],
        from_tag=tokens[4],
        to_tag=opt_token(tokens, 5),
        count=count,
    )


def build_stop_play(mods: str, tokens: list[str], ctx: ParseContext) -> StopPlay:
    return StopPlay(call_id=tokens[1], from_tag=tokens[2], to_tag=opt_token(tokens, 3))


def build_record(mods: str, tokens: list[str], ctx: ParseContext) -> Record:
    single = False
    for ch in mods:
        letter = ascii_lower(ch)
        if letter == "p":
            raise fail(ECode.PARSE_2)
        if letter != "s":
            raise fail(ECode.PARSE_3)
        single = True
    return Record(
        call_id=tokens[1], from_tag=tokens[2], to_tag=opt_token(tokens, 3), single_file=single
    )


def build_copy(mods: str, tokens: list[str], ctx: ParseContext) -> Copy:
    seen = _letters(mods, "sp", ECode.PARSE_3)
    return Copy(
        call_id=tokens[1],
        target=tokens[2],
        from_tag=tokens[3],
        to_tag=opt_token(tokens, 4),
        single_file="s" in seen,
        want_port="p" in seen,
    )


def build_norecord(mods: str, tokens: list[str], ctx: ParseContext) -> NoRecord:
    if mods and mods[0] in "aA":
        if len(mods) > 1:
            raise fail(ECode.PARSE_2)
    elif mods:
        raise fail(ECode.PARSE_3)
    return NoRecord(
        call_id=tokens[1], from_tag=tokens[2], to_tag=opt_token(tokens, 3), both=bool(mods)
    )


def build_query(mods: str, tokens: list[str], ctx: ParseContext) -> Query:
    return Query(
        call_id=tokens[1],
        from_tag=tokens[2],
        to_tag=opt_token(tokens, 3),
        mods=mods,
        names=tuple(tokens[4:]),
    )


def build_stats(mods: str, tokens: list[str], ctx: ParseContext) -> Stats:
    verbose = "v" in _letters(mods, "v", ECode.PARSE_5)
    return Stats(verbose=verbose, names=tuple(tokens[1:]))


def build_info(mods: str, tokens: list[str], ctx: ParseContext) -> Info:
    seen = _letters(mods, "bl", ECode.PARSE_7)
    return Info(brief="b" in seen, load="l" in seen)


def build_version(mods: str, tokens: list[str], ctx: ParseContext) -> Version:
    return Version()


def build_version_feature(mods: str, tokens: list[str], ctx: ParseContext) -> VersionFeature:
    return VersionFeature(date=tokens[1])


def build_delete_all(mods: str, tokens: list[str], ctx: ParseContext) -> DeleteAll:
    return DeleteAll()


#: The key of V's feature-check form (`VF <date>`) in a command table.
FEATURE_CHECK = "vf"


def lookup_spec(word: str, specs: Mapping[str, CommandSpec]) -> tuple[CommandSpec, str]:
    """(spec, modifier text) for a command word; unknown letter -> E0."""
    spec = specs.get(ascii_lower(word[0]))
    if spec is None:
        raise fail(ECode.CMDUNKN)
    mods = word[1:]
    if spec.name == "get_version" and mods[:1] in ("f", "F"):
        return specs[FEATURE_CHECK], mods[1:]
    return spec, mods


# ---------------------------------------------------------------------------
# Sub-commands (§4.15); any problem here is E3


def parse_subcommand(tokens: list[str], main: Command, ctx: ParseContext) -> SubCommand:
    word = tokens[0]
    mods = word[1:]
    builder = _SUBCOMMANDS.get(ascii_lower(word[0]))
    if builder is None:
        raise fail(ECode.PARSE_SUBC)
    try:
        return builder(mods, tokens, main, ctx)
    except CommandError as exc:
        raise fail(ECode.PARSE_SUBC) from exc


def _update_with_to_tag(main: Command) -> bool:
    return isinstance(main, Update) and not main.lookup and main.to_tag is not None


def _sub_lookup(mods: str, tokens: list[str], main: Command, ctx: ParseContext) -> SubLookup:
    if not _update_with_to_tag(main) or len(tokens) != 3:
        raise fail(ECode.PARSE_SUBC)
    amods = parse_addr_mods(mods, ctx)
    return SubLookup(
        mods=amods, remote=parse_remote(tokens[1], tokens[2], amods.ipv6, ECode.PARSE_SUBC)
    )


def _sub_delete(mods: str, tokens: list[str], main: Command, ctx: ParseContext) -> SubDelete:
    if len(tokens) != 1:
        raise fail(ECode.PARSE_SUBC)
    return SubDelete(weak="w" in _letters(mods, "w", ECode.PARSE_SUBC))


def _sub_set(mods: str, tokens: list[str], main: Command, ctx: ParseContext) -> SubSet:
    if len(tokens) != 2 or len(mods) > 1:
        raise fail(ECode.PARSE_SUBC)
    reverse = mods in ("r", "R")
    param, value = tokens[1][:4], parse_c_int(tokens[1][4:], 1, INT_MAX)
    if value is None or param not in ("ttl=", "tos="):
        raise fail(ECode.PARSE_SUBC)
    if param == "ttl=":
        return SubSet(reverse=reverse, ttl=value)
    return SubSet(reverse=reverse, tos=value)


def _sub_copy(mods: str, tokens: list[str], main: Command, ctx: ParseContext) -> SubCopy:
    if not _update_with_to_tag(main) or len(tokens) != 4 or mods:
        raise fail(ECode.PARSE_SUBC)
    return SubCopy(call_id=tokens[1], from_tag=tokens[2], to_tag=tokens[3])


_SUBCOMMANDS: dict[str, Callable[[str, list[str], Command, ParseContext], SubCommand]] = {
    "l": _sub_lookup,
    "d": _sub_delete,
    "s": _sub_set,
    "c": _sub_copy,
}


def attach_subcommands(main: Command, subcs: tuple[SubCommand, ...]) -> Command:
    if not subcs:
        return main
    assert isinstance(main, Update | Query)
    return replace(main, subcommands=subcs)


# ---------------------------------------------------------------------------
# Entry point


def parse_with(line: bytes, ctx: ParseContext, specs: Mapping[str, CommandSpec]) -> Command:
    """Parse one control command (without the UDP cookie) by the command table `specs`
    (registry.SPECS: letter -> CommandSpec); raises CommandError."""
    lists = tokenize(line)
    tokens, sub_lists = lists[0], lists[1:]
    spec, mods = lookup_spec(tokens[0], specs)
    if not spec.min_tokens <= len(tokens) <= spec.max_tokens:
        raise fail(ECode.PARSE_NARGS)
    if not spec.has_mods and mods:
        raise fail(ECode.PARSE_MODS)
    if not spec.has_subc and sub_lists:
        raise fail(ECode.PARSE_SUBC)
    main = spec.build(mods, tokens, ctx)
    subcs = tuple(parse_subcommand(sub, main, ctx) for sub in sub_lists)
    return attach_subcommands(main, subcs)
