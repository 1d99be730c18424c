"""Pool statistics: counters, gauges and bounded histograms.

:class:`HostStats` holds the live numbers of one host and is updated by the
transport on every checkout, connection, exchange and release. Every update
takes the pool's one lock (shared by all hosts) for a few microseconds; no I/O
and no logging happens under it. :meth:`HostStats.snapshot` returns a plain
dict, a consistent copy taken under the same lock.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llmpool.stats_math import percentiles

__all__ = ["COUNTERS", "HISTOGRAMS", "HostStats", "Histogram", "merge_snapshots"]

#: Counter names, in the order they appear in a snapshot.
COUNTERS = (
    "total_requests",
    "successful_requests",
    "failed_requests",
    "connections_created",
    "connection_reuses",
    "stale_retries",
    "expired_closed",
    "dropped_closed",
    "discarded",
    "idle_closed",
    "pool_timeouts",
)

#: Histogram names (HostStats attributes), in the order they appear in a snapshot.
HISTOGRAMS = ("acquire_wait", "latency")

_GAUGES = ("in_use", "waiting", "peak_in_use", "idle", "leaked_connections")


class Histogram:
    """Count, sum and max of every value, percentiles over the last *window* values.

    Not thread-safe on its own: callers hold the pool's lock.
    """

    __slots__ = ("_next", "_values", "count", "max", "total", "window")

    def __init__(self, window: int = 2048) -> None:
        self.window = window
        self._values = array("d", bytes(8 * window))
        self._next = 0
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, value: float) -> None:
        """Record one value."""
        self._values[self._next] = value
        self._next = (self._next + 1) % self.window
        self.count += 1
        self.total += value
        self.max = max(self.max, value)

    def recent(self) -> list[float]:
        """The values in the window (unordered)."""
        n = min(self.count, self.window)
        return list(self._values[:n])


def summarize(
    values: Iterable[float], count: int, total: float, maximum: float
) -> dict[str, float]:
    """Summarise *values* (a window) with all-time *count*, *total* and *maximum*."""
    p50, p95, p99 = percentiles(values, (0.50, 0.95, 0.99))
    return {
        "count": count,
        "mean": total / count if count else 0.0,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "max": maximum,
    }


class HostStats:
    """The live statistics of one host's connection pool.

    Thread-safe: every method takes *lock*, the pool's one ``RLock``, for a
    few microseconds. Nothing else happens under it.
    """

    def __init__(self, host: str, lock: threading.RLock) -> None:
        self.host = host
        self._lock = lock
        self.counters = dict.fromkeys(COUNTERS, 0)
        #: Checked-out connections and when each left the pool (leak tracking).
        self.out: dict[object, float] = {}
        self.in_use = 0
        self.waiting = 0
        self.peak_in_use = 0
        self.acquire_wait = Histogram()
        self.latency = Histogram()

    # -- updates from the transport -------------------------------------------------

    def wait_started(self) -> None:
        """A caller starts waiting for a connection."""
        with self._lock:
            self.waiting += 1

    def checked_out(self, waited: float, conn: object, now: float, *, queued: bool = True) -> None:
        """A caller got *conn* after *waited* seconds (*queued*: it had been
        counted waiting by :meth:`wait_started`)."""
        with self._lock:
            if queued:
                self.waiting -= 1
            self.out[conn] = now
            self.in_use = len(self.out)
            self.peak_in_use = max(self.peak_in_use, self.in_use)
            self.acquire_wait.add(waited)

    def checkout_failed(self) -> None:
        """A caller gave up waiting (PoolTimeout) or the pool was closed."""
        with self._lock:
            self.waiting -= 1
            self.counters["pool_timeouts"] += 1

    def returned(self, conn: object) -> None:
        """*conn* came back to the pool (a second return of the same one is ignored)."""
        with self._lock:
            self.out.pop(conn, None)
            self.in_use = len(self.out)

    def held_longer_than(self, seconds: float, now: float) -> list[object]:
        """Connections checked out for more than *seconds*."""
        with self._lock:
            return [conn for conn, since in self.out.items() if now - since > seconds]

    def count(self, name: str, n: int = 1) -> None:
        """Add *n* to counter *name*."""
        with self._lock:
            self.counters[name] += n

    def exchange_done(self, *, ok: bool, reused: bool, latency: float | None) -> None:
        """One request ended: *ok* when a response arrived, *reused* when it
        went over a connection that had served a request before."""
        with self._lock:
            c = self.counters
            c["total_requests"] += 1
            c["successful_requests" if ok else "failed_requests"] += 1
            if reused:
                c["connection_reuses"] += 1
            if latency is not None:
                self.latency.add(latency)

    def reset_after_fork(self, lock: threading.RLock) -> None:
        """In a forked child: a fresh lock, and nothing in use or waiting."""
        self._lock = lock
        self.out.clear()
        self.in_use = 0
        self.waiting = 0

    # -- reading --------------------------------------------------------------------

    def snapshot(self, idle: int, leaked: int) -> dict[str, Any]:
        """A consistent plain-dict copy (the caller supplies the *idle* and
        *leaked* gauges, which it reads from the connections themselves)."""
        return self.snapshot_with_windows(idle, leaked)[0]

    def snapshot_with_windows(
        self, idle: int, leaked: int
    ) -> tuple[dict[str, Any], dict[str, list[float]]]:
        """:meth:`snapshot`, plus each histogram's window of recent values
        (taken under the same lock), which :func:`merge_snapshots` needs to
        compute real percentiles across hosts."""
        with self._lock:
            counters = dict(self.counters)
            gauges = {
                "in_use": self.in_use,
                "waiting": self.waiting,
                "peak_in_use": self.peak_in_use,
            }
            hists = {name: getattr(self, name) for name in HISTOGRAMS}
            windows = {name: hist.recent() for name, hist in hists.items()}
            figures = {name: (hist.count, hist.total, hist.max) for name, hist in hists.items()}
        total = counters["total_requests"]
        out: dict[str, Any] = dict(counters)
        out["reuse_rate"] = counters["connection_reuses"] / total if total else 0.0
        out.update(gauges)
        out["idle"] = idle
        out["leaked_connections"] = leaked
        for name in HISTOGRAMS:
            out[name] = summarize(windows[name], *figures[name])
        return out, windows


def merge_snapshots(
    hosts: dict[str, dict[str, Any]],
    retired: dict[str, int],
    windows: Mapping[str, Sequence[float]],
) -> dict[str, Any]:
    """Add per-host snapshots (and the counters of retired hosts) into totals.

    Counters and gauges add up. Each histogram's total has the hosts' summed
    count, their count-weighted mean and the largest max; its percentiles are
    computed afresh over *windows* (histogram name -> every live host's recent
    values together, from :meth:`HostStats.snapshot_with_windows`), so the
    total's p99 is the p99 of all hosts' recent values, not the worst host's.
    """
    out: dict[str, Any] = dict(retired)
    for name in COUNTERS:
        out.setdefault(name, 0)
    for key in _GAUGES:
        out[key] = 0
    for snap in hosts.values():
        for name in COUNTERS:
            out[name] += snap[name]
        for key in _GAUGES:
            out[key] += snap[key]
    total = out["total_requests"]
    out["reuse_rate"] = out["connection_reuses"] / total if total else 0.0
    for hist in HISTOGRAMS:
        parts = [snap[hist] for snap in hosts.values()]
        count = sum(p["count"] for p in parts)
        weighted = sum(p["mean"] * p["count"] for p in parts)
        out[hist] = summarize(
            windows.get(hist, ()),
            count,
            weighted,
            max((p["max"] for p in parts), default=0.0),
        )
    out["hosts"] = hosts
    return out
