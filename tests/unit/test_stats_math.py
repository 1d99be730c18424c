"""The one percentile definition: linear interpolation between closest ranks."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmpool import demo
from llmpool.plugins.stats import HookStats
from llmpool.pool.stats import summarize
from llmpool.stats_math import percentile, percentiles


def test_empty_is_zero() -> None:
    """No values give 0.0 at every fraction."""
    assert percentile([], 0.5) == 0.0
    assert percentiles([], (0.5, 0.99)) == [0.0, 0.0]


def test_single_value_is_every_percentile() -> None:
    """One value is p0, p50 and p100 alike."""
    assert percentiles([7.0], (0.0, 0.5, 1.0)) == [7.0, 7.0, 7.0]


def test_values_between_ranks_are_interpolated() -> None:
    """Pinned: h = q*(n-1), then interpolate between x[floor(h)] and the next value."""
    ordered = [1.0, 2.0, 3.0, 4.0]
    assert percentile(ordered, 0.0) == 1.0
    assert percentile(ordered, 0.5) == 2.5  # the mean of the middle two, not 2 or 3
    assert percentile(ordered, 1.0) == 4.0
    assert percentile(ordered, 0.25) == pytest.approx(1.75)
    assert percentile(list(range(1, 101)), 0.99) == pytest.approx(99.01)


def test_nearest_rank_would_differ() -> None:
    """Ten values: p95 is 9.55 by interpolation (nearest rank says 10, the old pool code 10)."""
    assert percentile([float(i) for i in range(1, 11)], 0.95) == pytest.approx(9.55)


def test_fraction_outside_zero_one_is_clamped() -> None:
    """A fraction below 0 or above 1 gives the minimum or maximum, never an IndexError."""
    assert percentile([1.0, 5.0], -0.5) == 1.0
    assert percentile([1.0, 5.0], 1.5) == 5.0


def test_percentiles_sorts_its_input() -> None:
    """percentiles() takes unordered values (a deque, a list) and sorts them once."""
    assert percentiles([4.0, 1.0, 3.0, 2.0], (0.5,)) == [2.5]


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=200))
def test_same_as_statistics_quantiles_inclusive(values: list[float]) -> None:
    """For every percentile 1..99 the answer is the stdlib's inclusive quantile."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    ordered = sorted(values)
    for i, cut in enumerate(cuts, start=1):
        assert percentile(ordered, i / 100) == pytest.approx(cut, rel=1e-9, abs=1e-6)


def test_pool_plugins_and_demo_agree() -> None:
    """The pool's summary, the plugins' hook stats and the demo report give the same p50/p99."""
    seconds = [0.001 * i for i in (5, 1, 9, 3, 7, 2, 8, 4, 6, 10)]
    pool = summarize(seconds, len(seconds), sum(seconds), max(seconds))
    hook = HookStats()
    hook.durations.extend(seconds)
    plugin = hook.snapshot()
    report = demo._percentiles(seconds)
    assert pool["p50"] == pytest.approx(0.0055)
    assert pool["p99"] == pytest.approx(0.00991)
    assert report["p50"] == pytest.approx(pool["p50"])
    assert report["p99"] == pytest.approx(pool["p99"])
    assert plugin["p50_us"] == pytest.approx(pool["p50"] * 1e6, abs=0.001)
    assert plugin["p99_us"] == pytest.approx(pool["p99"] * 1e6, abs=0.001)
