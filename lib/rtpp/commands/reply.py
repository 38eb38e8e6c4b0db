"""Reply text builders (PROTOCOL.md §1.5, §4.3, §4.15, §5).

Builders return the reply body without the trailing LF; the dispatcher adds the LF
(and, on UDP, the `<cookie> ` prefix).

Size limit: the reference formats every reply into one 1024-byte buffer that also holds
the UDP cookie prefix, the final LF and a terminating NUL. `overhead` below is the
number of bytes in front of the body (`len(cookie) + 1` on UDP, 0 on stream sockets).
"""

from __future__ import annotations

from collections.abc import Sequence

from rtpp.commands.errors import CommandError, ECode

REPLY_BUF_BYTES = 1024
TAIL_BYTES = 2  # final LF + NUL
SUBC_SEP = " && "
SUBC_FAILED = " && -1"
SUBC_SKIPPED = " && 0"
# Room kept free while sub-command results are appended: the failure marker + tail.
SUBC_RESERVE = len(SUBC_FAILED) + TAIL_BYTES

SubResult = str | int | None
#: What a handler returns: the reply body without the LF.
Reply = str


class FailedReply(str):
    """A reply body that is not an `E<n>` but counts in `ncmds_errs` (L on a missing
    session answers `0`)."""


def ok() -> str:
    return "0"


def number(value: int) -> str:
    return str(value)


def error(code: ECode | int) -> str:
    return f"E{int(code)}"


def port_reply(port: int, addr_text: str | None, ipv6: bool) -> str:
    """`<port>` for a wildcard local address, else `<port> <addr>` (+ ` 6` for IPv6)."""
    if addr_text is None:
        return str(port)
    return f"{port} {addr_text} 6" if ipv6 else f"{port} {addr_text}"


def body_len(text: str) -> int:
    return len(text.encode("latin-1", "replace"))


def fits(body: str, overhead: int = 0) -> bool:
    """True if `body` plus its LF fits the reply buffer after `overhead` bytes."""
    return overhead + body_len(body) + TAIL_BYTES <= REPLY_BUF_BYTES


def limited(body: str, code: ECode, overhead: int = 0) -> str:
    """`body`, or the error `code` when it does not fit the reply buffer."""
    return body if fits(body, overhead) else error(code)


def require_fit(body: str, code: ECode, overhead: int = 0) -> str:
    """`body`, or raise `CommandError(code)` when it does not fit the reply buffer."""
    if not fits(body, overhead):
        raise CommandError(code)
    return body


def limited_stats(body: str, overhead: int = 0) -> str:
    return limited(body, ECode.RTOOBIG_1, overhead)  # G -> E25


def limited_query(body: str, overhead: int = 0) -> str:
    return limited(body, ECode.RTOOBIG_2, overhead)  # Q -> E26


def limited_info(body: str, overhead: int = 0) -> str:
    return limited(body, ECode.NOMEM_6, overhead)  # I -> E86


def compose_subreplies(main: str, results: Sequence[SubResult], overhead: int = 0) -> str:
    """Append sub-command results to the main reply (§4.15).

    Each result is a failure code (int, normally -1), output text (non-empty str) or
    None / "" for a success without output. A failure is written and ends the chain;
    output-less successes show as ` && 0` only when something is written after them.
    When a piece does not fit the reply buffer the reply ends with ` && -1`.
    """
    out = [main]
    used = overhead + body_len(main)
    skipped = 0
    for result in results:
        if result is None or result == "" or result == 0:
            skipped += 1
            continue
        # Markers are copied verbatim; results are formatted and also need a NUL byte.
        pieces = [(SUBC_SKIPPED, 0)] * skipped + [(f"{SUBC_SEP}{result}", 1)]
        skipped = 0
        for piece, nul in pieces:
            if used + body_len(piece) + nul + SUBC_RESERVE > REPLY_BUF_BYTES:
                return "".join(out) + SUBC_FAILED
            out.append(piece)
            used += body_len(piece)
        if isinstance(result, int):
            break
    return "".join(out)
