"""Every read of the daemon's internals that observability makes, in one place.

The rest of `rtpp.observe` works on what this module returns: plain numbers, dicts
and small dataclasses. Nothing here changes the daemon's behaviour (the descriptor
budget may be recounted), and nothing here yields to the hub, so each function sees
one consistent moment (as a `G` command does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rtpp.media.route import Route
from rtpp.media.rtp import TS_RATES
from rtpp.media.session import Session, Stream
from rtpp.stats import COUNTERS, STREAM_COUNTERS, Home, fold

#: (name, description, is_float) of every `G` counter, in the order `G` knows them.
G_TABLE: tuple[tuple[str, str, bool], ...] = tuple(
    (c.name, c.description, c.is_float) for c in COUNTERS if c.home is not Home.SESSION
)
RECORDING_NAMES = tuple(c.name for c in COUNTERS if c.home is Home.RECORDING)
#: A stream's route as a metric label: media.route.Route's name in lower case.
ROUTE_LABELS = {route: route.name.lower() for route in Route}

_FAMILY_NAMES = {2: "ipv4", 10: "ipv6"}
#: The descriptor count of a scrape is at most this old.
FD_RECOUNT_S = 10.0


# ---------------------------------------------------------------- G, I and gauges


@dataclass(slots=True)
class NotifyTarget:
    name: str
    queued: int
    sent: int
    failed: int
    dropped: int


@dataclass(slots=True)
class LiveState:
    """Gauges read at one moment."""

    sessions: int = 0  # as `I` reports "active sessions"
    streams: int = 0  # as `I` reports "active streams"
    streams_by_route: dict[str, int] = field(default_factory=dict)
    #: address -> port pairs held by session legs on it
    pairs_in_use: dict[str, int] = field(default_factory=dict)
    #: address -> port pairs that can still be allocated for it
    pairs_free: dict[str, int] = field(default_factory=dict)
    #: family -> size of the port range in pairs
    pairs_range: dict[str, int] = field(default_factory=dict)
    fd_limit: int | None = None
    fd_in_use: int | None = None
    fd_reserve: int = 0
    load: float = 0.0
    overloaded: bool = False
    overload_prot: bool = False
    draining: bool = False
    notify: list[NotifyTarget] = field(default_factory=list)
    #: jitter (ms) and loss ratio of every RTP stream that has received packets
    jitter_ms: list[float] = field(default_factory=list)
    loss_ratio: list[float] = field(default_factory=list)


@dataclass(slots=True)
class Snapshot:
    """Every `G` counter (the value `G` would answer now) and the gauges, from one pass
    over the streams: a scrape costs one walk of the session table, not one per name."""

    g: dict[str, float]
    state: LiveState


def snapshot(app: Any) -> Snapshot:
    media = app.media
    media.sync_kernel()  # what the kernel relayed, read now (as G does)
    values = app.counters.values
    state = LiveState(
        sessions=values["nsess_created"] - values["nsess_destroyed"],
        streams=2 * app.sessions.count,
        load=media.load,
        overloaded=media.overloaded,
        overload_prot=media.config.overload_prot,
        draining=app.draining or media.draining,
    )
    g = dict(values)
    for name, live in _scan(app.sessions, state).items():
        g[name] += live
    rec = media.recording.counters
    for name in RECORDING_NAMES:
        g[name] = getattr(rec, name)
    _ports(media, state)
    _fds(media.fds, state)
    state.notify = [_notify_target(t) for t in app.notifier.targets.values()]
    return Snapshot(g, state)


def g_values(app: Any) -> dict[str, float]:
    return snapshot(app).g


def live_state(app: Any) -> LiveState:
    return snapshot(app).state


def _scan(sessions: Any, state: LiveState) -> dict[str, float]:
    """One pass: the live part of the STREAM counters (each read through its row, as
    `G` reads it), and the per-stream gauges into `state`."""
    live = {c.name: 0 for c in STREAM_COUNTERS}
    routes = dict.fromkeys(ROUTE_LABELS.values(), 0)
    in_use = state.pairs_in_use
    jitters, losses = state.jitter_ms, state.loss_ratio
    for sess in sessions:
        for st in sess.streams():
            fold(live, st)
            if st.sock is None:
                continue
            routes[ROUTE_LABELS[st.route]] += 1
            if not st.is_rtp:
                continue
            host = st.local[0] if st.local else "?"
            in_use[host] = in_use.get(host, 0) + 1
            quality = _rtpa_quality(st)
            if quality is not None:
                jitters.append(quality[0])
                losses.append(quality[1])
    state.streams_by_route = routes
    return live


def _rtpa_quality(st: Stream) -> tuple[float, float] | None:
    """(jitter in ms, loss ratio) of an RTP stream that has analysed packets."""
    an = st.analyzer
    if an is None:
        return None
    an.sync()
    nsent = an.nsent
    if nsent <= 0:
        return None
    return jitter_ms(an.jlast, an.payload_types), max(0, an.nlost) / nsent


def jitter_ms(jitter_ts: float, payload_types: list[int]) -> float:
    """Jitter in RTP timestamp units -> ms, by the clock of the first static payload type
    seen (8 kHz when none is known: the clock of every common voice codec)."""
    rate = next((TS_RATES[pt] for pt in payload_types if TS_RATES[pt]), 8000)
    return jitter_ts * 1000.0 / rate


def _ports(media: Any, state: LiveState) -> None:
    free_by_family: dict[int, int] = {}
    for family, alloc in media.allocators.items():
        name = _FAMILY_NAMES.get(family, str(family))
        state.pairs_range[name] = alloc.size
        free_by_family[family] = alloc.size - len(alloc.in_use)
    hosts = {laddr.host: laddr.family for laddr in media.config.listen}
    for host in state.pairs_in_use:
        hosts.setdefault(host, 10 if ":" in host else 2)
    for host, family in hosts.items():
        state.pairs_in_use.setdefault(host, 0)
        state.pairs_free[host] = free_by_family.get(family, 0)


def descriptors(app: Any) -> tuple[int | None, int | None]:
    """(descriptors open, RLIMIT_NOFILE) as the descriptor budget counts them."""
    fds = app.media.fds
    _refresh(fds)
    return fds.in_use, fds.limit


def _refresh(fds: Any) -> None:
    """Count the descriptors again when the budget's count is older than FD_RECOUNT_S
    (counting lists /proc/self/fd: milliseconds with thousands of media sockets)."""
    now = time.monotonic()
    if fds.in_use is None or now - fds.counted_at >= FD_RECOUNT_S:
        fds.recount(now)


def _fds(fds: Any, state: LiveState) -> None:
    _refresh(fds)
    state.fd_limit = fds.limit
    state.fd_reserve = fds.reserve
    state.fd_in_use = fds.in_use


def _notify_target(target: Any) -> NotifyTarget:
    address = target.address
    if isinstance(address, tuple):
        name = f"tcp:{address[0]}:{address[1]}"
    else:
        name = f"unix:{address}"
    return NotifyTarget(name, target.queue.qsize(), target.nsent, target.nfailed, target.ndropped)


# ---------------------------------------------------------------- sessions


def sessions(app: Any) -> list[Session]:
    app.media.sync_kernel()
    return list(app.sessions)


def busiest_key(sess: Session) -> int:
    """Packets received from both parties on RTP and RTCP."""
    return sum(st.npkts_in for st in sess.streams())


def worst_key(sess: Session) -> tuple[float, float]:
    """(worst loss ratio, worst jitter in ms) over the session's RTP streams."""
    loss = jitter = 0.0
    for st in sess.rtp.streams:
        quality = _rtpa_quality(st)
        if quality is not None:
            jitter = max(jitter, quality[0])
            loss = max(loss, quality[1])
    return loss, jitter


def session_record(sess: Session, now: float | None = None) -> dict:
    """A live session as /sessions shows it."""
    now = time.monotonic() if now is None else now
    return {
        "call_id": sess.call_id,
        "from_tag": sess.from_tag,
        "to_tag": sess.to_tag,
        "started": iso_time(sess.created_wall),
        "age_s": round(now - sess.created, 3),
        "complete": sess.complete,
        "ttl_s": max(0, min(sess.ttl)),
        "legs": [leg_record(sess, 1, live=True), leg_record(sess, 0, live=True)],
    }


def ended_record(sess: Session, reason: str, end_wall: float, end_mono: float) -> dict:
    """An ended session as the accounting file holds it."""
    return {
        "call_id": sess.call_id,
        "from_tag": sess.from_tag,
        "to_tag": sess.to_tag,
        "start": iso_time(sess.created_wall),
        "end": iso_time(end_wall),
        "duration_s": round(end_mono - sess.created, 3),
        "ended": reason,
        "complete": sess.complete,
        "legs": [leg_record(sess, 1, live=False), leg_record(sess, 0, live=False)],
    }


def leg_record(sess: Session, index: int, live: bool) -> dict:
    """Leg `index`: the party it faces (1: the from-tag's), its addresses and figures."""
    rtp, rtcp = sess.leg(index)
    record = {
        "party": "caller" if index == 1 else "callee",
        "tag": sess.from_tag if index == 1 else sess.to_tag,
        "local": addr_text(rtp.local),
        "remote": addr_text(rtp.remote),
        "rtcp_remote": addr_text(rtcp.remote),
        "latched": rtp.latched,
        "learned": rtp.learned,
        "asymmetric": rtp.asymmetric,
        "rtp": stream_counts(rtp),
        "rtcp": stream_counts(rtcp),
        "payload_types": rtp.analyzer.payload_types if rtp.analyzer is not None else [],
        "rtpa": rtpa_figures(rtp),
    }
    if live:
        record["recorders"] = [describe_sink(s) for s in (rtp.recorder, rtcp.recorder) if s]
        record["copies"] = [describe_sink(s) for s in (rtp.copier, rtcp.copier) if s]
        record["player"] = rtp.player is not None
    return record


def stream_counts(st: Stream) -> dict:
    """`in`: from the party the stream faces; `out`: sent to it (the peer's relayed)."""
    peer = st.peer
    return {
        "packets_in": st.npkts_in,
        "bytes_in": st.nbytes_in,
        "packets_out": peer.nrelayed,
        "bytes_out": peer.nbytes_relayed,
        "relayed": st.nrelayed,
        "dropped": st.ndropped,
        "ignored": st.nignored,
    }


def rtpa_figures(st: Stream) -> dict:
    an = st.analyzer
    if an is None:
        return {}
    an.sync()
    nsent = an.nsent
    pts = an.payload_types
    return {
        "sent": nsent,
        "received": an.nrcvd,
        "lost": an.nlost,
        "duplicates": an.ndups,
        "perrs": an.perrs,
        "loss_ratio": round(max(0, an.nlost) / nsent, 6) if nsent > 0 else 0.0,
        "jitter_last": an.jlast,
        "jitter_max": an.jmax,
        "jitter_avg": an.javg,
        "jitter_ms": round(jitter_ms(an.jlast, pts), 3),
    }


def describe_sink(sink: Any) -> str:
    """A recorder or copy in a few words: `file:NAME` or `udp:HOST:PORT`."""
    inner = getattr(sink, "recorder", sink)
    name = getattr(inner, "name", None)
    if name:
        return f"file:{name}"
    dest = getattr(inner, "dest", None)
    if dest:
        return f"udp:{addr_text(dest)}"
    return type(inner).__name__


def addr_text(addr: tuple | None) -> str | None:
    if not addr:
        return None
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def iso_time(wall: float) -> str:
    ms = int(round(wall * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def admission(app: Any) -> tuple[bool, bool, float]:
    """(draining, overloaded, load): whether new sessions are welcome."""
    media = app.media
    return app.draining or media.draining, media.overloaded, media.load
