"""Prometheus metrics: collectors that read the daemon's live figures at scrape time.

Naming scheme (man page, METRICS):

* every `G` counter NAME is `rtpproxy_NAME_total`, a counter, with the value `G`
  gives at the same moment; the two that are not monotonic, `pps_in` (a rate) and
  `rtpa_nlost` (a late packet is no longer lost), are gauges `rtpproxy_NAME`;
* the daemon's state is exported as gauges `rtpproxy_<what>` (units in the name);
* nothing is labelled per call: series grow with addresses, notification targets,
  verbs and error codes, never with calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from rtpp.observe import source
from rtpp.observe.commands import CommandStats
from rtpp.observe.process import ProcessStats

PREFIX = "rtpproxy_"
#: `G` counters exported as gauges: they can go down.
GAUGE_STATS = frozenset({"pps_in", "rtpa_nlost"})
JITTER_BUCKETS_MS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0)
LOSS_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def g_metric_name(stat: str) -> str:
    """The exported name of `G` counter `stat`, as it appears in the exposition."""
    if stat in GAUGE_STATS:
        return PREFIX + stat
    return PREFIX + stat + "_total"


def g_metric_family(stat: str) -> str:
    """The metric family name (a counter's without its `_total` suffix)."""
    return PREFIX + stat


class DaemonCollector:
    """Every `G` counter and the state gauges, from one snapshot per scrape."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snap = source.snapshot(self.app)
        yield from g_families(snap.g)
        yield from state_families(snap.state)


def g_families(values: dict[str, float]) -> Iterator[Metric]:
    for name, description, _ in source.G_TABLE:
        family = g_metric_family(name)
        if name in GAUGE_STATS:
            yield GaugeMetricFamily(family, description, value=values[name])
        else:
            yield CounterMetricFamily(family, description, value=values[name])


def state_families(st: source.LiveState) -> Iterator[Metric]:
    """Sessions, streams, routes, ports, descriptors, overload, notifications, quality."""
    yield _gauge("active_sessions", "Active sessions (as I reports them)", st.sessions)
    yield _gauge("active_streams", "Active streams (as I reports them)", st.streams)
    yield _labelled(
        "streams_by_route",
        "Media streams with ports, by the route their packets take",
        "route",
        st.streams_by_route,
    )
    yield _labelled(
        "port_pairs_in_use",
        "RTP/RTCP port pairs held by session legs, by local address",
        "address",
        st.pairs_in_use,
    )
    yield _labelled(
        "port_pairs_free",
        "Port pairs that can still be allocated for the address "
        "(the range is shared by every address of a family)",
        "address",
        st.pairs_free,
    )
    yield _labelled(
        "port_pairs_range", "Size of the media port range in pairs", "family", st.pairs_range
    )
    yield from _fd_metrics(st)
    yield _gauge("load_ratio", "Share of one core the process used in the last second", st.load)
    yield _gauge("overloaded", "1 while the load is above the overload mark", st.overloaded)
    yield _gauge(
        "overload_protection", "1 when --overload_prot refuses sessions (E98)", st.overload_prot
    )
    yield _gauge("draining", "1 while draining (SIGHUP): new sessions get E99", st.draining)
    yield from _notify_metrics(st)
    yield _gauge_histogram(
        "stream_jitter_ms",
        "Last interarrival jitter of live RTP streams, ms",
        st.jitter_ms,
        JITTER_BUCKETS_MS,
    )
    yield _gauge_histogram(
        "stream_loss_ratio",
        "Loss ratio (lost / expected) of live RTP streams",
        st.loss_ratio,
        LOSS_BUCKETS,
    )


class CommandCollector:
    """Control commands by verb and result, and their handling time."""

    def __init__(self, stats: CommandStats) -> None:
        self.stats = stats

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        counts = CounterMetricFamily(
            PREFIX + "commands",
            "Control commands by verb and result (ok, E<code>, not_found)",
            labels=("verb", "result"),
        )
        for (verb, result), n in sorted(self.stats.results.items()):
            counts.add_metric((verb, result), n)
        yield counts
        times = HistogramMetricFamily(
            PREFIX + "command_duration_seconds",
            "Time from receiving a control command to its reply, by verb",
            labels=("verb",),
        )
        for verb, timings in sorted(self.stats.timings.items()):
            times.add_metric((verb,), timings.cumulative(), timings.total_s)
        yield times


class AcctCollector:
    """Records of the accounting file (--acct)."""

    def __init__(self, acct: Any) -> None:
        self.acct = acct

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            PREFIX + "acct_records_written",
            "Session records written to the accounting file",
            value=self.acct.nwritten,
        )
        yield CounterMetricFamily(
            PREFIX + "acct_records_lost",
            "Session records lost: the disk failed or did not keep up",
            value=self.acct.nlost,
        )


def make_registry(app: Any, commands: CommandStats, acct: Any = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(app))
    registry.register(CommandCollector(commands))
    if acct is not None:
        registry.register(AcctCollector(acct))
    registry.register(ProcessStats(app))
    return registry


def _gauge(name: str, doc: str, value: float | bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=float(value))


def _labelled(name: str, doc: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, doc, labels=(label,))
    for key in sorted(values):
        family.add_metric((key,), values[key])
    return family


def _fd_metrics(st: source.LiveState) -> Iterator[Metric]:
    if st.fd_limit is not None:
        yield _gauge("fds_limit", "RLIMIT_NOFILE of the process (-L)", st.fd_limit)
    if st.fd_in_use is not None:
        yield _gauge("fds_in_use", "File descriptors open", st.fd_in_use)
    yield _gauge(
        "fds_reserve",
        "Descriptors media never takes, kept for control connections",
        st.fd_reserve,
    )
    if st.fd_limit is not None and st.fd_in_use is not None:
        room = max(0, st.fd_limit - st.fd_in_use - st.fd_reserve)
        yield _gauge("fds_media_room", "Descriptors media may still open", room)


def _notify_metrics(st: source.LiveState) -> Iterator[Metric]:
    queued = GaugeMetricFamily(
        PREFIX + "notify_queue_depth",
        "Timeout notifications waiting, by target",
        labels=("target",),
    )
    sent = CounterMetricFamily(
        PREFIX + "notify_sent", "Timeout notifications delivered, by target", labels=("target",)
    )
    failed = CounterMetricFamily(
        PREFIX + "notify_failed",
        "Timeout notifications that could not be delivered, by target",
        labels=("target",),
    )
    dropped = CounterMetricFamily(
        PREFIX + "notify_dropped",
        "Timeout notifications dropped (queue full), by target",
        labels=("target",),
    )
    for target in st.notify:
        queued.add_metric((target.name,), target.queued)
        sent.add_metric((target.name,), target.sent)
        failed.add_metric((target.name,), target.failed)
        dropped.add_metric((target.name,), target.dropped)
    yield from (queued, sent, failed, dropped)


def _gauge_histogram(
    name: str, doc: str, samples: list[float], bounds: tuple[float, ...]
) -> GaugeHistogramMetricFamily:
    counts = [0] * (len(bounds) + 1)
    for value in samples:
        for i, bound in enumerate(bounds):
            if value <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
    buckets = []
    running = 0
    for bound, n in zip((*map(repr, bounds), "+Inf"), counts, strict=True):
        running += n
        buckets.append((bound, running))
    return GaugeHistogramMetricFamily(
        PREFIX + name, doc, buckets=buckets, gsum_value=float(sum(samples))
    )
