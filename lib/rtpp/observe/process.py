"""The usual process_* metrics, read cheaply on every scrape."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from rtpp.observe import source


class ProcessStats:
    """The usual process_* figures, without listing /proc/self/fd on every scrape
    (prometheus_client's ProcessCollector does; with thousands of media sockets that
    costs milliseconds): open descriptors come from the descriptor budget."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.start_time = self._start_time()

    def describe(self) -> list[Metric]:
        return []

    def _start_time(self) -> float | None:
        try:
            with open("/proc/self/stat", "rb") as f:
                start_ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
            with open("/proc/stat", "rb") as f:
                boot = next(int(ln.split()[1]) for ln in f if ln.startswith(b"btime "))
        except (OSError, ValueError, IndexError, StopIteration):
            return None
        return boot + start_ticks / self.ticks

    def collect(self) -> Iterator[Metric]:
        times = os.times()
        yield CounterMetricFamily(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            value=times.user + times.system,
        )
        try:
            with open("/proc/self/statm", "rb") as f:
                pages = f.read().split()
            yield GaugeMetricFamily(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                value=int(pages[0]) * self.page_size,
            )
            yield GaugeMetricFamily(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                value=int(pages[1]) * self.page_size,
            )
        except (OSError, ValueError, IndexError):
            pass
        if self.start_time is not None:
            yield GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                value=self.start_time,
            )
        fds = source.descriptors(self.app)
        if fds[0] is not None:
            yield GaugeMetricFamily(
                "process_open_fds", "Number of open file descriptors.", value=fds[0]
            )
        if fds[1] is not None:
            yield GaugeMetricFamily(
                "process_max_fds", "Maximum number of open file descriptors.", value=fds[1]
            )
