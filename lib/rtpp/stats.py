"""Every counter in one table: its name (copied verbatim from the classic where it has
one), its description, where it lives and how it is read.

Where a counter lives (`Home`):

* PROCESS: a process-wide value in `Counters.values`, incremented where it happens;
* STREAM: kept on each live stream (no global increment per packet), read with
  `of_stream`; the media plane folds a stream's value into `Counters.values` when
  its session ends (a resizer's, when the resizer goes), and `G`/`I` add the live
  streams' part;
* RECORDING: the recording writer's own counters (media/recording/record.py);
* SESSION: a per-session figure that only `Q` reports, read with `of_session`.

`G` reports PROCESS, STREAM and RECORDING counters; `Q` those marked `in_q`, from the
RTP stream facing the tag's party (`a`), the other one (`o`) and the session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Home(Enum):
    PROCESS = "process"
    STREAM = "stream"
    RECORDING = "recording"
    SESSION = "session"


@dataclass(frozen=True, slots=True)
class Counter:
    name: str
    description: str
    home: Home
    is_float: bool = False
    #: STREAM: the value on one live stream (media.session.Stream).
    of_stream: Callable[[Any], float] | None = None
    #: Reported by Q; SESSION counters are read with of_session(a, o, session).
    in_q: bool = False
    of_session: Callable[[Any, Any, Any], float] | None = None

    def query(self, a: Any, o: Any, sess: Any) -> float:
        """The Q value: a STREAM counter is read on `a`, the stream facing the tag's party."""
        if self.of_session is not None:
            return self.of_session(a, o, sess)
        assert self.of_stream is not None
        return self.of_stream(a)

    def text(self, value: float) -> str:
        return f"{value:f}" if self.is_float else str(int(value))


def process(name: str, description: str, is_float: bool = False) -> Counter:
    return Counter(name, description, Home.PROCESS, is_float)


def stream(name: str, description: str, of_stream: Callable, in_q: bool = False) -> Counter:
    return Counter(name, description, Home.STREAM, of_stream=of_stream, in_q=in_q)


def recording(name: str, description: str) -> Counter:
    return Counter(name, description, Home.RECORDING)


def session(name: str, description: str, of_session: Callable, is_float: bool = False) -> Counter:
    return Counter(name, description, Home.SESSION, is_float, in_q=True, of_session=of_session)


def _rtpa(attr: str) -> Callable[[Any], int]:
    return lambda st: getattr(st.analyzer, attr) if st.analyzer is not None else 0


def _rtpa_float(attr: str) -> Callable[[Any, Any, Any], float]:
    """Jitter in RTP timestamp units, as the classic analyser reports it."""
    return lambda a, o, s: getattr(a.analyzer, attr) if a.analyzer is not None else 0.0


def _resizer(attr: str) -> Callable[[Any], int]:
    return lambda st: getattr(st.resizer, attr) if st.resizer is not None else 0


# fmt: off
COUNTERS: tuple[Counter, ...] = (
    # G, in the classic order.
    process("nsess_created", "Number of RTP sessions created"),
    process("nsess_destroyed", "Number of RTP sessions destroyed"),
    process("nsess_timeout", "Number of RTP sessions ended due to media timeout"),
    process("nsess_complete", "Number of RTP sessions fully setup"),
    process("nsess_nortp", "Number of sessions that had no RTP neither in nor out"),
    process("nsess_owrtp", "Number of sessions that had one-way RTP only"),
    process("nsess_nortcp", "Number of sessions that had no RTCP neither in nor out"),
    process("nsess_owrtcp", "Number of sessions that had one-way RTCP only"),
    process("nplrs_created", "Number of RTP players created"),
    process("nplrs_destroyed", "Number of RTP players destroyed"),
    stream("npkts_rcvd", "Total number of RTP/RTPC packets received", lambda st: st.nrcvd),
    process("npkts_played", "Total number of RTP packets originated by players"),
    stream("npkts_relayed", "Total number of RTP/RTPC packets relayed", lambda st: st.nrelayed),
    stream("npkts_resizer_in", "Total number of RTP packets entering resizer",
           _resizer("npkts_in")),
    stream("npkts_resizer_out", "Total number of RTP packets leaving resizer",
           _resizer("npkts_out")),
    stream("npkts_resizer_discard", "Total number of RTP packets dropped by the resizer",
           _resizer("npkts_discard")),
    process("npkts_discard", "Total number of RTP/RTPC packets discarded"),
    process("total_duration", "Cumulative duration of all sessions", is_float=True),
    process("ncmds_rcvd", "Total number of control commands received"),
    process("ncmds_rcvd_ndups", "Total number of duplicate control commands received"),
    process("ncmds_succd", "Total number of control commands successfully processed"),
    process("ncmds_errs", "Total number of control commands ended up with an error"),
    process("ncmds_repld", "Total number of control commands that have a reply generated"),
    stream("rtpa_nsent", "Total number of uniqie RTP packets sent to us based on SEQ tracking",
           _rtpa("nsent"), in_q=True),
    stream("rtpa_nrcvd", "Total number of unique RTP packets received by us",
           _rtpa("nrcvd"), in_q=True),
    stream("rtpa_ndups", "Total number of duplicate RTP packets received by us",
           _rtpa("ndups"), in_q=True),
    stream("rtpa_nlost", "Total number of lost RTP packets based on SEQ tracking",
           _rtpa("nlost"), in_q=True),
    stream("rtpa_perrs", "Total number of RTP packets that failed to parse",
           _rtpa("perrs"), in_q=True),
    process("pps_in", "Rate at which RTP/RTCP packets are received (packets per second)",
            is_float=True),
    # Faults: this implementation's additions.
    process("nsess_refused_ports", "Number of port pair requests refused: port range exhausted"),
    process("nsess_refused_fds", "Number of port pair requests refused: too few descriptors"),
    process("nsess_refused_overload", "Number of new sessions refused by overload protection"),
    process("nnotify_failed", "Number of timeout notifications that could not be delivered"),
    process("nnotify_dropped", "Number of timeout notifications dropped: target queue full"),
    # Recording health: this implementation's additions.
    recording("nrec_errors", "Number of recording files that failed (open, write, move)"),
    recording("nrec_spool_copies", "Number of recordings copied out of a spool on another FS"),
    recording("nrec_pkts_dropped", "Number of packets not recorded: the disk did not keep up"),
    # Q only: a = the RTP stream facing the tag's party, o = the other one.
    session("ttl", "Seconds left before the session times out (with -i: the tag's leg)",
            lambda a, o, s: max(0, s.ttl[a.index])),
    session("npkts_ina", "RTP packets accepted from the tag's party", lambda a, o, s: a.npkts_in),
    session("npkts_ino", "RTP packets accepted from the other party", lambda a, o, s: o.npkts_in),
    session("longest_ipi", "Longest interval between two packets from the tag's party, s",
            lambda a, o, s: a.analyzer.longest_ipi if a.analyzer else 0.0, is_float=True),
    session("rtpa_jlast", "Last jitter estimate (RTP timestamp units)", _rtpa_float("jlast"),
            is_float=True),
    session("rtpa_jmax", "Largest jitter estimate (RTP timestamp units)", _rtpa_float("jmax"),
            is_float=True),
    session("rtpa_javg", "Average jitter estimate (RTP timestamp units)", _rtpa_float("javg"),
            is_float=True),
    session("nrelayed", "RTP packets relayed, both directions",
            lambda a, o, s: a.nrelayed + o.nrelayed),
    session("ndropped", "RTP packets dropped, both directions",
            lambda a, o, s: a.ndropped + o.ndropped),
)
# fmt: on

BY_NAME: dict[str, Counter] = {c.name: c for c in COUNTERS}
#: The names `G` knows.
STAT_NAMES = frozenset(c.name for c in COUNTERS if c.home is not Home.SESSION)
#: What `Q` reports without names.
QUERY_DEFAULT = ("ttl", "npkts_ina", "npkts_ino", "nrelayed", "ndropped")
STREAM_COUNTERS = tuple(c for c in COUNTERS if c.home is Home.STREAM)
RESIZER_COUNTERS = tuple(c for c in STREAM_COUNTERS if c.name.startswith("npkts_resizer_"))


def fold(values: dict, st: Any, counters: tuple[Counter, ...] = STREAM_COUNTERS) -> None:
    """Add a stream's part of `counters` to the process-wide values (the stream ends)."""
    for c in counters:
        values[c.name] += c.of_stream(st)  # type: ignore[misc]


@dataclass(slots=True)
class Counters:
    """Process-wide values of the PROCESS and STREAM counters (STREAM: the folded part)."""

    values: dict

    def __init__(self) -> None:
        self.values = {
            c.name: (0.0 if c.is_float else 0)
            for c in COUNTERS
            if c.home in (Home.PROCESS, Home.STREAM)
        }

    def incr(self, name: str, n: int = 1) -> None:
        self.values[name] += n

    def __getitem__(self, name: str):
        return self.values[name]

    def __setitem__(self, name: str, value) -> None:
        self.values[name] = value
