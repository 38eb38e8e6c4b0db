"""``rtpproxy top``: a live terminal view of the busiest or worst calls.

It reads the daemon's ``/sessions`` and ``/health`` (``--metrics``) once per interval
and shows the call count, the daemon's health (``OK``, ``draining``, ``overloaded``)
and one line per call: age, both parties' addresses (``*`` once latched), packets per
second each way (from the change since the last refresh), loss, jitter, and whether
the call is recorded, copied or has a prompt playing. Keys: ``b`` busiest first, ``w``
worst first, ``o`` oldest first, ``q`` quit. ``-b`` prints one screen and exits.
"""

from __future__ import annotations

import curses
import getopt
import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from rtpp.netutil import split_host_port

PROG = "rtpproxy top"
USAGE = (
    "usage: rtpproxy top [-s busiest|worst|oldest] [-i seconds] [-n count] [-b] [ADDR:PORT]\n"
    "  ADDR:PORT  the daemon's --metrics address (default 127.0.0.1:9950)\n"
    "  -s KEY     order of the calls (default busiest)\n"
    "  -i SEC     refresh interval (default 1)\n"
    "  -n COUNT   calls to fetch (default: as many as the screen shows, at most 200)\n"
    "  -b         print one screen to standard output and exit\n"
)
DEFAULT_ADDR = "127.0.0.1:9950"
SORTS = ("busiest", "worst", "oldest")
KEYS = {ord("b"): "busiest", ord("w"): "worst", ord("o"): "oldest"}
MAX_FETCH = 200
FETCH_TIMEOUT_S = 3.0
HEADER_LINES = 3


class UsageError(Exception):
    pass


@dataclass(slots=True)
class Options:
    base: str
    sort: str = "busiest"
    interval: float = 1.0
    count: int | None = None
    batch: bool = False


def parse_args(argv: list[str]) -> Options:
    try:
        opts, args = getopt.gnu_getopt(argv, "s:i:n:bh")
    except getopt.GetoptError as exc:
        raise UsageError(exc.msg) from None
    if len(args) > 1:
        raise UsageError("one address at most")
    addr = split_host_port(args[0] if args else DEFAULT_ADDR)
    if addr is None:
        raise UsageError(f"{args[0]}: expected ADDR:PORT")
    host, port = addr
    options = Options(f"http://{f'[{host}]' if ':' in host else host}:{port}")
    for flag, value in opts:
        if flag == "-h":
            raise UsageError("")
        if flag == "-s":
            if value not in SORTS:
                raise UsageError(f"{value}: sort by one of {', '.join(SORTS)}")
            options.sort = value
        elif flag == "-i":
            options.interval = _number(value, "interval", 0.1, 3600.0)
        elif flag == "-n":
            options.count = int(_number(value, "count", 1, MAX_FETCH))
        elif flag == "-b":
            options.batch = True
    return options


def _number(text: str, what: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{text}: {what} must be a number") from None
    if not low <= value <= high:
        raise UsageError(f"{text}: {what} must be {low:g}..{high:g}")
    return value


def fetch(base: str, sort: str, limit: int) -> dict:
    """One page of /sessions; OSError or ValueError when the daemon cannot be read."""
    url = f"{base}/sessions?sort={sort}&limit={max(1, min(limit, MAX_FETCH))}"
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as reply:
        return json.loads(reply.read())


def fetch_health(base: str) -> str:
    """/health's one line: `OK`, or why new sessions are not welcome."""
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=FETCH_TIMEOUT_S) as reply:
            return reply.read().decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as exc:
        return exc.read().decode("utf-8", "replace").strip()


# ---------------------------------------------------------------- what is shown


@dataclass
class Rates:
    """Packets per second each way, from the change of each call's counters."""

    seen: dict[tuple, tuple[float, int, int]] = field(default_factory=dict)

    def update(self, sessions: list[dict], now: float) -> dict[tuple, tuple[float, float] | None]:
        rates: dict[tuple, tuple[float, float] | None] = {}
        seen = {}
        for sess in sessions:
            key = (sess["call_id"], sess["from_tag"])
            fwd, back = (leg["rtp"]["packets_in"] for leg in sess["legs"])
            before = self.seen.get(key)
            if before is not None and now > before[0]:
                span = now - before[0]
                rates[key] = (max(0, fwd - before[1]) / span, max(0, back - before[2]) / span)
            else:
                rates[key] = None
            seen[key] = (now, fwd, back)
        self.seen = seen
        return rates


COLUMNS = (
    ("CALL-ID", 24),
    ("AGE", 8),
    ("CALLER", 23),
    ("CALLEE", 23),
    ("PPS>", 6),
    ("PPS<", 6),
    ("LOSS%", 6),
    ("JIT-MS", 7),
    ("", 5),
)


def render(
    page: dict | None,
    rates: dict,
    sort: str,
    base: str,
    width: int,
    height: int,
    error: str | None = None,
    health: str = "",
) -> list[str]:
    """The screen as lines of at most `width` characters."""
    clock = time.strftime("%H:%M:%S")
    total = page["total"] if page else 0
    state = f" - {health.split(':', 1)[0]}" if health else ""
    lines = [
        f"rtpproxy top - {base} - {total} sessions{state} - {sort} first - {clock}",
        error or "keys: b busiest  w worst  o oldest  q quit",
        "".join(_cell(name, w) for name, w in COLUMNS).rstrip(),
    ]
    for sess in (page or {}).get("sessions", [])[: max(0, height - HEADER_LINES)]:
        lines.append(_row(sess, rates.get((sess["call_id"], sess["from_tag"]))))
    return [line[:width] for line in lines]


def _row(sess: dict, rate: tuple[float, float] | None) -> str:
    caller, callee = sess["legs"]
    loss = max(leg["rtpa"].get("loss_ratio", 0.0) for leg in sess["legs"]) * 100
    jitter = max(leg["rtpa"].get("jitter_ms", 0.0) for leg in sess["legs"])
    flags = "".join(
        mark
        for mark, on in (
            ("R", any(leg["recorders"] for leg in sess["legs"])),
            ("C", any(leg["copies"] for leg in sess["legs"])),
            ("P", any(leg["player"] for leg in sess["legs"])),
        )
        if on
    )
    cells = (
        sess["call_id"],
        _age(sess["age_s"]),
        _party(caller),
        _party(callee),
        "-" if rate is None else f"{rate[0]:.0f}",
        "-" if rate is None else f"{rate[1]:.0f}",
        f"{loss:.1f}",
        f"{jitter:.1f}",
        flags,
    )
    return "".join(_cell(text, w) for text, (_, w) in zip(cells, COLUMNS, strict=True)).rstrip()


def _party(leg: dict) -> str:
    remote = leg["remote"] or "-"
    return remote + ("*" if leg["latched"] else "")


def _age(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _cell(text: str, width: int) -> str:
    text = text if len(text) < width else text[: width - 2] + "~"
    return text.ljust(width)


# ---------------------------------------------------------------- running


def snapshot(options: Options, rates: Rates, width: int, height: int) -> list[str]:
    limit = options.count or max(1, height - HEADER_LINES)
    try:
        page = fetch(options.base, options.sort, limit)
        health = fetch_health(options.base)
    except (OSError, ValueError) as exc:
        return render(None, {}, options.sort, options.base, width, height, f"error: {exc}")
    found = rates.update(page["sessions"], time.monotonic())
    return render(page, found, options.sort, options.base, width, height, health=health)


def run_batch(options: Options) -> int:
    lines = snapshot(options, Rates(), 200, (options.count or 50) + HEADER_LINES)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if not lines[1].startswith("error:") else 1


def run_curses(options: Options) -> int:
    def loop(screen) -> None:
        curses.curs_set(0)
        screen.timeout(int(options.interval * 1000))
        rates = Rates()
        while True:
            height, width = screen.getmaxyx()
            lines = snapshot(options, rates, width - 1, height)
            screen.erase()
            for y, line in enumerate(lines[:height]):
                screen.addstr(y, 0, line, curses.A_REVERSE if y == 2 else curses.A_NORMAL)
            screen.refresh()
            key = screen.getch()
            if key in (ord("q"), ord("Q"), 27):
                return
            if key in KEYS:
                options.sort = KEYS[key]

    curses.wrapper(loop)
    return 0


def main(argv: list[str]) -> int:
    try:
        options = parse_args(argv)
    except UsageError as exc:
        if exc.args[0]:
            sys.stderr.write(f"{PROG}: {exc.args[0]}\n")
        sys.stderr.write(USAGE)
        return 1
    if options.batch or not sys.stdout.isatty():
        return run_batch(options)
    try:
        return run_curses(options)
    except KeyboardInterrupt:
        return 0
