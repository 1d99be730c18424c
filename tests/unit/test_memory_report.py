"""The memory report's pure helpers: the growth slope (stdlib regression) and byte formatting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmpool.memory.report import format_bytes, least_squares_slope


def test_slope_of_a_straight_line_is_its_gradient() -> None:
    """Points on v = 100 t + 7 give a slope of exactly 100 per second."""
    points = [(float(t), 100.0 * t + 7) for t in range(5)]
    assert least_squares_slope(points) == pytest.approx(100.0)


def test_slope_fits_noisy_points_by_least_squares() -> None:
    """(0, 0), (1, 4), (2, 2), (3, 6): slope 1.6 by least squares (end to end it is 2)."""
    points = [(0.0, 0.0), (1.0, 4.0), (2.0, 2.0), (3.0, 6.0)]
    assert least_squares_slope(points) == pytest.approx(1.6)


def test_slope_is_zero_with_fewer_than_two_points() -> None:
    """No point or one point has no slope: 0.0, not a StatisticsError."""
    assert least_squares_slope([]) == 0.0
    assert least_squares_slope([(5.0, 100.0)]) == 0.0


def test_slope_is_zero_when_every_point_has_the_same_time() -> None:
    """Samples taken at one instant (a constant clock) give 0.0, not a StatisticsError."""
    assert least_squares_slope([(3.0, 1.0), (3.0, 50.0), (3.0, 9.0)]) == 0.0


def test_slope_on_a_monotonic_clock_far_from_zero() -> None:
    """Large monotonic times (days of uptime) do not spoil the slope."""
    base = 9_000_000.0
    points = [(base + t * 0.5, 1_000_000 + 2048 * t) for t in range(100)]
    assert least_squares_slope(points) == pytest.approx(4096.0)


@given(
    st.lists(
        st.tuples(st.floats(0, 1e6), st.floats(-1e12, 1e12)),
        min_size=2,
        max_size=50,
    )
)
def test_slope_matches_the_closed_form(points: list[tuple[float, float]]) -> None:
    """For any points the slope is cov(t, v) / var(t), or 0.0 when the times are all equal."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    den = sum((t - mean_t) ** 2 for t, _ in points)
    slope = least_squares_slope(points)
    if len({t for t, _ in points}) == 1:
        assert slope == 0.0
        return
    if den < 1e-3:  # too ill-conditioned for the naive closed form to be a reference
        return
    num = sum((t - mean_t) * (v - mean_v) for t, v in points)
    assert slope == pytest.approx(num / den, rel=1e-6, abs=1e-3)


def test_format_bytes_picks_the_unit() -> None:
    """Bytes below 1 KiB stay whole; larger sizes get one decimal in KiB, MiB or GiB."""
    assert format_bytes(None) == "-"
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(-3 * 1024 * 1024) == "-3.0 MiB"
    assert format_bytes(5 * 1024**4) == "5120.0 GiB"
