"""Pool statistics as values: histograms, host counters and snapshot merging."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from llmpool import PoolConfig
from llmpool.pool import ConnectionPool
from llmpool.pool.stats import COUNTERS, Histogram, HostStats, merge_snapshots
from llmpool.stats_math import percentiles


def _host(name: str, latencies: list[float], lock: threading.RLock) -> HostStats:
    stats = HostStats(name, lock)
    for value in latencies:
        stats.exchange_done(ok=True, reused=False, latency=value)
    return stats


def _merge(*hosts: HostStats, retired: dict[str, int] | None = None) -> dict[str, Any]:
    snaps: dict[str, dict[str, Any]] = {}
    windows: dict[str, list[float]] = {"acquire_wait": [], "latency": []}
    for stats in hosts:
        snaps[stats.host], recent = stats.snapshot_with_windows(idle=1, leaked=0)
        for name, values in recent.items():
            windows[name].extend(values)
    return merge_snapshots(snaps, retired or dict.fromkeys(COUNTERS, 0), windows)


def test_histogram_keeps_all_time_figures_and_a_window_of_recent_values() -> None:
    """count, total and max cover every value; recent() holds only the last *window*."""
    hist = Histogram(window=4)
    for value in (9.0, 1.0, 2.0, 3.0, 4.0, 5.0):
        hist.add(value)
    assert (hist.count, hist.total, hist.max) == (6, 24.0, 9.0)
    assert sorted(hist.recent()) == [2.0, 3.0, 4.0, 5.0]


def test_host_stats_count_checkouts_returns_and_timeouts() -> None:
    """wait_started/checked_out/returned/checkout_failed keep in_use, waiting and peaks right."""
    stats = HostStats("h", threading.RLock())
    a, b = object(), object()
    for conn in (a, b):
        stats.wait_started()
        stats.checked_out(0.5, conn, now=10.0)
    stats.wait_started()
    stats.checkout_failed()
    stats.returned(a)
    snap = stats.snapshot(idle=1, leaked=0)
    assert (snap["in_use"], snap["waiting"], snap["peak_in_use"]) == (1, 0, 2)
    assert snap["pool_timeouts"] == 1
    assert snap["acquire_wait"]["count"] == 2 and snap["acquire_wait"]["mean"] == 0.5
    assert stats.held_longer_than(5.0, now=20.0) == [b]


def test_counters_and_gauges_add_up_with_retired_hosts() -> None:
    """Totals add every host's counters and gauges plus the counters of evicted hosts."""
    lock = threading.RLock()
    one = _host("a", [0.1, 0.2], lock)
    two = _host("b", [0.3], lock)
    two.exchange_done(ok=False, reused=True, latency=None)
    retired = dict.fromkeys(COUNTERS, 0)
    retired["total_requests"] = retired["successful_requests"] = 5
    retired["connection_reuses"] = 4
    out = _merge(one, two, retired=retired)
    assert out["total_requests"] == 9
    assert out["successful_requests"] == 8 and out["failed_requests"] == 1
    assert out["reuse_rate"] == pytest.approx(5 / 9)
    assert out["idle"] == 2
    assert sorted(out["hosts"]) == ["a", "b"]


def test_one_host_total_equals_the_host() -> None:
    """With a single host the totals' histograms are exactly the host's."""
    only = _host("a", [0.001 * i for i in range(1, 300)], threading.RLock())
    out = _merge(only)
    assert out["latency"] == out["hosts"]["a"]["latency"]


def test_total_percentiles_are_merged_not_the_worst_host() -> None:
    """Two hosts with different distributions: the total percentiles are those of all values."""
    lock = threading.RLock()
    fast_values = [0.010 + 0.0001 * i for i in range(900)]  # 900 calls, 10-100 ms
    slow_values = [1.0 + 0.01 * i for i in range(100)]  # 100 calls, 1-2 s
    fast = _host("fast", fast_values, lock)
    slow = _host("slow", slow_values, lock)
    total = _merge(fast, slow)["latency"]
    p50, p95, p99 = percentiles(fast_values + slow_values, (0.50, 0.95, 0.99))
    assert total["count"] == 1000
    assert total["p50"] == pytest.approx(p50)
    assert total["p95"] == pytest.approx(p95)
    assert total["p99"] == pytest.approx(p99)
    assert total["max"] == max(slow_values)
    assert total["mean"] == pytest.approx(sum(fast_values + slow_values) / 1000)
    # The worst host's figures would have been far off: its p50 is above 1 s.
    assert total["p50"] < 0.1 < 1.0 < _merge(slow)["latency"]["p50"]


def test_no_hosts_give_zero_histograms() -> None:
    """Merging nothing gives zero counts and percentiles, not an error."""
    out = merge_snapshots({}, dict.fromkeys(COUNTERS, 0), {})
    assert out["latency"] == {
        "count": 0,
        "mean": 0.0,
        "p50": 0.0,
        "p95": 0.0,
        "p99": 0.0,
        "max": 0.0,
    }


def test_get_stats_merges_the_windows_of_every_host() -> None:
    """ConnectionPool.get_stats() totals are computed over every live host's recent values."""
    with ConnectionPool(PoolConfig()) as pool:
        fast = pool.host_pool("http://127.0.0.1:1").llm_stats
        slow = pool.host_pool("http://127.0.0.1:2").llm_stats
        for i in range(90):
            fast.latency.add(0.01 + i * 0.001)
        for i in range(10):
            slow.latency.add(5.0 + i)
        stats = pool.get_stats()
    values = [0.01 + i * 0.001 for i in range(90)] + [5.0 + i for i in range(10)]
    p50, p99 = percentiles(values, (0.50, 0.99))
    assert stats["latency"]["p50"] == pytest.approx(p50)
    assert stats["latency"]["p99"] == pytest.approx(p99)
    assert stats["hosts"]["http://127.0.0.1:2"]["latency"]["p50"] == pytest.approx(9.5)
