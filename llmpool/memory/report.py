"""Immutable values the memory manager publishes: samples, GC runs, reports.

Every class here is a frozen attrs value: safe to share between threads,
to keep, and to pass to callbacks. ``to_dict()`` gives plain JSON-ready
dicts; ``MemoryReport.to_text()`` a few human-readable lines.
"""

from __future__ import annotations

import os
import statistics
import types
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from llmpool.memory.state import MemoryState

__all__ = [
    "GCRun",
    "GCStats",
    "MemoryReport",
    "MemorySample",
    "OperationStats",
    "format_bytes",
    "least_squares_slope",
]

MiB = 1024 * 1024


def format_bytes(value: float | None) -> str:
    """Render a byte count as ``12.3 MiB`` (``-`` for None)."""
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    size = float(abs(value))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{sign}{size:.0f} {unit}" if unit == "B" else f"{sign}{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of ``(time, value)`` points, in value per second.

    Zero with fewer than two points or when every point has the same time
    (where :func:`statistics.linear_regression` has no answer).
    """
    if len(points) < 2:
        return 0.0
    times = [t for t, _ in points]
    if min(times) == max(times):  # the stdlib may see rounding noise as variance here
        return 0.0
    values = [v for _, v in points]
    try:
        return statistics.linear_regression(times, values).slope
    except statistics.StatisticsError:  # every point has the same time
        return 0.0


@attrs.frozen(kw_only=True)
class MemorySample:
    """One measurement of the process. Immutable; share freely between threads.

    ``rss`` and ``vms`` are bytes. ``cgroup_usage`` is the cgroup's working
    set (usage minus inactive file cache), read only when the budget comes
    from the cgroup. ``threads`` counts native threads, ``open_fds`` open
    file descriptors (None where the platform cannot tell). ``time`` is the
    manager's clock (monotonic seconds).
    """

    rss: int
    vms: int = 0
    cgroup_usage: int | None = None
    threads: int | None = None
    open_fds: int | None = None
    pid: int = attrs.field(factory=os.getpid)
    time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The sample as a plain dict."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class OperationStats:
    """Accounting for one operation key. Immutable; share freely between threads.

    ``bytes_max`` is the largest ``bytes_in + bytes_out`` of one call;
    durations are seconds.
    """

    count: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bytes_max: int = 0
    duration_total: float = 0.0
    duration_max: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The counters as a plain dict."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class GCRun:
    """One garbage collection the manager ran. Immutable; share freely.

    ``rss_after`` is None when the sample after the collection failed;
    ``trimmed`` is None when ``malloc_trim`` was not attempted (off, or not
    glibc), else whether it reported memory given back to the system.
    """

    at: float
    duration: float
    rss_before: int
    rss_after: int | None
    collected: int
    trimmed: bool | None = None

    @property
    def end(self) -> float:
        """When the collection finished (the manager's clock)."""
        return self.at + self.duration

    def to_dict(self) -> dict[str, Any]:
        """The run as a plain dict."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class GCStats:
    """What the manager's collections did so far. Immutable; share freely.

    ``skipped_cooldown`` counts samples in the GC state (or above) that
    found the cooldown not yet over; ``skipped_cost`` those where the last
    collection cost more than 5% of the time since it.
    """

    runs: int = 0
    total_duration: float = 0.0
    collected: int = 0
    skipped_cooldown: int = 0
    skipped_cost: int = 0
    last: GCRun | None = None

    def to_dict(self) -> dict[str, Any]:
        """The statistics as a plain dict."""
        return attrs.asdict(self)


def _readonly(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class MemoryReport:
    """Everything the manager knows, at one moment. Immutable; share freely.

    Sizes are bytes, times seconds (the manager's monotonic clock), ``usage``
    a fraction of ``limit``. ``usage_bytes`` is the cgroup working set when
    the limit comes from the cgroup, else RSS. ``growth`` is RSS now minus
    RSS at the first sample; ``slope`` the least-squares RSS trend over the
    last ``history`` samples (bytes/s, over ``window`` seconds).
    """

    time: float
    pid: int
    running: bool
    state: MemoryState
    time_in_state: float
    usage: float
    usage_bytes: int
    limit: int
    limit_source: str
    cgroup_limit: int | None
    host_total: int | None
    rss: int
    vms: int
    peak_rss: int
    cgroup_usage: int | None
    growth: int
    slope: float
    window: float
    samples: int
    threads: int | None
    open_fds: int | None
    inflight_bytes: int
    gc: GCStats
    operations: Mapping[str, OperationStats] = attrs.field(converter=_readonly)
    operations_folded: int
    gauges: Mapping[str, Mapping[str, float]] = attrs.field(converter=_readonly)
    gc_counts: tuple[int, ...]
    gc_collections: tuple[int, ...]
    tracemalloc_current: int | None
    sample_errors: int
    callback_errors: int
    gauge_errors: int
    rejected: int

    def to_dict(self) -> dict[str, Any]:
        """The report as plain, JSON-serialisable data."""
        data = {a.name: getattr(self, a.name) for a in attrs.fields(MemoryReport)}
        data["state"] = self.state.value
        data["gc"] = self.gc.to_dict()
        data["operations"] = {key: op.to_dict() for key, op in self.operations.items()}
        data["gauges"] = {name: dict(values) for name, values in self.gauges.items()}
        data["gc_counts"] = list(self.gc_counts)
        data["gc_collections"] = list(self.gc_collections)
        return data

    def summary(self) -> dict[str, Any]:
        """A compact plain dict (what ``client.stats()["memory"]`` shows)."""
        return {
            "state": self.state.value,
            "usage": round(self.usage, 4),
            "rss_mb": round(self.rss / MiB, 1),
            "peak_mb": round(self.peak_rss / MiB, 1),
            "limit_mb": round(self.limit / MiB, 1),
            "limit_source": self.limit_source,
            "growth_mb": round(self.growth / MiB, 1),
            "slope_bytes_per_s": round(self.slope, 1),
            "time_in_state": round(self.time_in_state, 1),
            "samples": self.samples,
            "gc_runs": self.gc.runs,
            "gc_skipped": self.gc.skipped_cooldown + self.gc.skipped_cost,
            "threads": self.threads,
            "open_fds": self.open_fds,
            "inflight_bytes": self.inflight_bytes,
            "rejected": self.rejected,
            "sample_errors": self.sample_errors,
            "callback_errors": self.callback_errors,
            "running": self.running,
        }

    def to_text(self) -> str:
        """A few human-readable lines (for logs and the command line)."""
        lines = [
            f"memory: state {self.state.value} for {self.time_in_state:.0f} s, usage "
            f"{self.usage:.1%} of {format_bytes(self.limit)} ({self.limit_source})",
            f"rss {format_bytes(self.rss)} (peak {format_bytes(self.peak_rss)}), vms "
            f"{format_bytes(self.vms)}, cgroup working set {format_bytes(self.cgroup_usage)}, "
            f"host {format_bytes(self.host_total)}",
            f"growth {format_bytes(self.growth)} since start, trend "
            f"{format_bytes(self.slope)}/s over {self.window:.0f} s ({self.samples} samples)",
            self._gc_line(),
            f"threads {self.threads if self.threads is not None else '-'}, open fds "
            f"{self.open_fds if self.open_fds is not None else '-'}, in flight "
            f"{format_bytes(self.inflight_bytes)}",
            f"python gc counts {'/'.join(map(str, self.gc_counts))}, tracemalloc "
            + (
                format_bytes(self.tracemalloc_current)
                if self.tracemalloc_current is not None
                else "off"
            ),
        ]
        for name, values in sorted(self.gauges.items()):
            shown = " ".join(f"{key}={value}" for key, value in sorted(values.items()))
            lines.append(f"gauge {name}: {shown}")
        for key, op in sorted(self.operations.items()):
            lines.append(
                f"op {key}: {op.count} calls, in {format_bytes(op.bytes_in)}, out "
                f"{format_bytes(op.bytes_out)}, max {format_bytes(op.bytes_max)}, "
                f"{op.duration_total:.3f} s (max {op.duration_max:.3f} s)"
            )
        lines.append(
            f"errors: samples {self.sample_errors}, callbacks {self.callback_errors}, gauges "
            f"{self.gauge_errors}; rejected calls {self.rejected}"
        )
        return "\n".join(lines)

    def _gc_line(self) -> str:
        gc = self.gc
        text = (
            f"gc: {gc.runs} runs, {gc.total_duration:.3f} s, {gc.collected} objects; skipped "
            f"{gc.skipped_cooldown} (cooldown) {gc.skipped_cost} (cost)"
        )
        if gc.last is not None:
            text += (
                f"; last freed {gc.last.collected} objects in {gc.last.duration:.3f} s, rss "
                f"{format_bytes(gc.last.rss_before)} -> {format_bytes(gc.last.rss_after)}"
            )
        return text
